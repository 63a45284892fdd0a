"""Argument validation for ``dcnv4``: the checks of ``dcnv3`` plus DCNv4's packing and channel rules."""

from __future__ import annotations

from torch import Tensor

from deformconv.ops.dcnv3.checks import check_geometry, check_like
from deformconv.ops.dcnv3.geometry import DCNGeometry
from deformconv.ops.validation import check_tensor, require

#: The official DCNv4 kernels load ``group_channels`` in vectors of 8 values.
GROUP_CHANNELS_MULTIPLE = 8
#: The official layout pads the packed offsets and weights to a multiple of 8 values.
PACKED_MULTIPLE = 8


def check_args(input: Tensor, offset_mask: Tensor, *params) -> DCNGeometry:
    """Validates every argument of ``dcnv4`` (``params`` as in :func:`check_geometry`).

    Raises:
        TypeError: an argument has the wrong type or dtype.
        ValueError: shapes or hyper-parameters are inconsistent, ``group_channels`` is not a
            multiple of 8, or the packed dimension is not a multiple of 8 of at least ``3*G*P``.
        RuntimeError: tensors live on different devices.
    """
    geometry = check_geometry(input, *params)
    group_channels = geometry.group_channels
    if group_channels % GROUP_CHANNELS_MULTIPLE:
        raise ValueError(
            f"group_channels must be a multiple of {GROUP_CHANNELS_MULTIPLE} for DCNv4 (as in the official "
            f"kernels), got {group_channels}"
        )
    layout = "[N, H_out, W_out, L], L >= 3*group*P a multiple of 8"
    check_tensor(offset_mask, "offset_mask", 4, layout)
    needed = 3 * geometry.group * geometry.points
    width = offset_mask.shape[3]
    require(
        width >= needed and width % PACKED_MULTIPLE == 0,
        ValueError,
        f"offset_mask's last dimension must be a multiple of {PACKED_MULTIPLE} of at least 3*group*P = "
        f"3*{geometry.group}*{geometry.points} = {needed}, got {width}",
    )
    check_like(offset_mask, "offset_mask", input, (geometry.batch, *geometry.out_size, width), layout)
    return geometry
