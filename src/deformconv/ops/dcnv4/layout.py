"""DCNv4's packed ``offset_mask`` tensor: offsets and weights of every group in one last dimension.

For group ``g`` the ``3*P`` values ``offset_mask[..., g*3*P : (g+1)*3*P]`` hold first the ``P``
offset pairs ``(dx, dy)`` (point-major, ``2*P`` values), then the ``P`` weights. The last
dimension is padded to a multiple of 8 (the official layer's linear layer has
``ceil(3*G*P / 8) * 8`` outputs); the padding is never read and its gradient is 0.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from torch import Tensor


def packed_width(group: int, points: int) -> int:
    """The official width of the last dimension: ``3*group*points`` rounded up to a multiple of 8."""
    return math.ceil(3 * group * points / 8) * 8


def unpack(offset_mask: Tensor, group: int, points: int) -> tuple[Tensor, Tensor]:
    """Views of the offsets and weights inside ``offset_mask`` (no copy).

    Args:
        offset_mask (Tensor[..., L]): packed values, ``L >= 3*group*points``.

    Returns:
        ``offset`` (Tensor[..., group, points, 2]) and ``weight`` (Tensor[..., group, points]).
    """
    packed = offset_mask[..., : 3 * group * points].unflatten(-1, (group, 3 * points))
    offset = packed[..., : 2 * points].unflatten(-1, (points, 2))
    return offset, packed[..., 2 * points :]


class PointLayout(NamedTuple):
    """Where the kernels find sample point ``p`` of output pixel ``q`` and group ``g`` (flat, contiguous tensors).

    Its offset pair ``(dx, dy)`` is at ``offset_start + q*offset_pixel_stride + g*offset_group_stride + 2*p``
    of the offset tensor, its weight at ``mask_start + q*mask_pixel_stride + g*mask_group_stride + p`` of the
    weight tensor. DCNv3 keeps two tensors, DCNv4 one packed tensor (both are ``offset_mask``).
    """

    offset_start: int
    offset_pixel_stride: int
    offset_group_stride: int
    mask_start: int
    mask_pixel_stride: int
    mask_group_stride: int


def separate_layout(group: int, points: int) -> PointLayout:
    """DCNv3: ``offset`` [..., group*points*2] and ``mask`` [..., group*points]."""
    return PointLayout(0, group * points * 2, points * 2, 0, group * points, points)


def packed_layout(points: int, width: int) -> PointLayout:
    """DCNv4: one ``offset_mask`` [..., width], ``3*points`` values per group."""
    return PointLayout(0, width, 3 * points, 2 * points, width, 3 * points)
