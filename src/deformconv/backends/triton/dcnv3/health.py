"""Health cases of the DCNv3 / DCNv4 kernels (see :mod:`deformconv.backends.triton.health`).

InternImage's layers (DCNv3, https://arxiv.org/abs/2211.05778; DCNv4,
https://arxiv.org/abs/2401.06197): 3x3 kernel, G=4 groups of 32 (``g4c32``) or 64 (``g4c64``)
channels, N=2, 16x16, each in every dtype. ``dcnv3`` passes offset and mask as two tensors,
``dcnv4`` as one packed tensor; the kernels are the same, only their strides differ. A case
launches the forward and the backward of every gradient.

Example:
    >>> sorted({case.name for case in cases()})[:2]
    ['dcnv3/g4c32', 'dcnv3/g4c64']
"""

from __future__ import annotations

import functools

import torch

from deformconv.backends.triton.health import HealthCase
from deformconv.ops.dcnv3.checks import check_geometry
from deformconv.ops.dcnv4.layout import packed_layout, packed_width, separate_layout

GROUP, POINTS = 4, 9
# name: channels per group
SHAPES = {"g4c32": 32, "g4c64": 64}
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _run(group_channels: int, packed: bool, dtype: torch.dtype) -> None:
    # Imported here: the kernel modules must not be imported before the caller chose Triton's mode.
    from deformconv.backends.triton.dcnv3.launch import dcn_backward, dcn_forward

    batch, size = 2, 16
    input = torch.randn(batch, size, size, GROUP * group_channels, dtype=dtype)
    geometry = check_geometry(input, (3, 3), (1, 1), (1, 1), (1, 1), GROUP, group_channels, 1.0, False)
    if packed:
        offset = mask = torch.randn(batch, size, size, packed_width(GROUP, POINTS), dtype=dtype)
        layout = packed_layout(POINTS, offset.shape[-1])
    else:
        offset = torch.randn(batch, size, size, GROUP * POINTS * 2, dtype=dtype)
        mask = torch.rand(batch, size, size, GROUP * POINTS, dtype=dtype)
        layout = separate_layout(GROUP, POINTS)
    output = dcn_forward(input, offset, mask, geometry, layout)
    dcn_backward(torch.ones_like(output), input, offset, mask, geometry, layout, True, True)


def cases() -> list[HealthCase]:
    """Both layouts, every shape, every dtype."""
    return [
        HealthCase(f"{op}/{name}", dtype, functools.partial(_run, group_channels, packed, dtype))
        for op, packed in (("dcnv3", False), ("dcnv4", True))
        for name, group_channels in SHAPES.items()
        for dtype in DTYPES
    ]
