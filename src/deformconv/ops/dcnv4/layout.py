"""DCNv4's packed ``offset_mask`` tensor: offsets and weights of every group in one last dimension.

For group ``g`` the ``3*P`` values ``offset_mask[..., g*3*P : (g+1)*3*P]`` hold first the ``P``
offset pairs ``(dx, dy)`` (point-major, ``2*P`` values), then the ``P`` weights. The last
dimension is padded to a multiple of 8 (the official layer's linear layer has
``ceil(3*G*P / 8) * 8`` outputs); the padding is never read and its gradient is 0.
"""

from __future__ import annotations

import math

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
