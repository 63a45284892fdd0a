"""Health cases of the multi-scale deformable attention kernels (see :mod:`deformconv.backends.triton.health`).

Deformable DETR's layers (https://arxiv.org/abs/2010.04159): M=8 heads of D=32 channels,
L=4 levels (at a quarter of the usual input area: strides 8 to 64), P=4 points; ``encoder``
(every pixel of every level is a query, N=1) and ``decoder`` (300 queries, N=2), each in every
dtype. A case launches the forward and the backward twice: with atomic and with deterministic
value gradients (``backward_kernel[NEED_COORDS,ATOMIC_VALUE]``, then
``backward_kernel[NEED_COORDS]`` and ``value_grad_kernel``).

Example:
    >>> [case.name for case in cases()][:2]
    ['multi_scale_deform_attn/encoder', 'multi_scale_deform_attn/encoder']
"""

from __future__ import annotations

import functools

import torch

from deformconv.backends.triton.health import HealthCase
from deformconv.ops.multi_scale_deform_attn.checks import check_args, check_levels
from deformconv.ops.multi_scale_deform_attn.contract import NeededGrads

LEVELS = ((50, 76), (25, 38), (13, 19), (7, 10))
HEADS, CHANNELS, POINTS = 8, 32, 4
# name: (batch, queries; 0: every pixel of every level)
SHAPES = {"encoder": (1, 0), "decoder": (2, 300)}
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _run(batch: int, queries: int, dtype: torch.dtype) -> None:
    # Imported here: the kernel modules must not be imported before the caller chose Triton's mode.
    from deformconv.backends.triton.multi_scale_deform_attn import launch

    spatial_shapes = torch.tensor(LEVELS, dtype=torch.int64)
    areas = spatial_shapes[:, 0] * spatial_shapes[:, 1]
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    num_value = int(areas.sum())
    queries = queries or num_value
    value = torch.randn(batch, num_value, HEADS, CHANNELS, dtype=dtype)
    locations = torch.rand(batch, queries, HEADS, len(LEVELS), POINTS, 2, dtype=dtype)
    weights = torch.rand(batch, queries, HEADS, len(LEVELS), POINTS, dtype=dtype)
    geometry = check_levels(spatial_shapes, starts, check_args(value, spatial_shapes, starts, locations, weights))
    output = launch.forward(value, spatial_shapes, starts, locations, weights, geometry)
    previous = torch.are_deterministic_algorithms_enabled()
    try:
        for deterministic in (False, True):
            torch.use_deterministic_algorithms(deterministic)
            launch.backward(
                torch.ones_like(output), value, spatial_shapes, starts, locations, weights, geometry,
                NeededGrads(True, True, True),
            )  # fmt: skip
    finally:
        torch.use_deterministic_algorithms(previous)


def cases() -> list[HealthCase]:
    """Every shape in every dtype."""
    return [
        HealthCase(f"multi_scale_deform_attn/{name}", dtype, functools.partial(_run, *shape, dtype))
        for name, shape in SHAPES.items()
        for dtype in DTYPES
    ]
