"""Health cases of the ``deform_conv2d`` kernels (see :mod:`deformconv.backends.triton.health`).

Representative shapes, each in every dtype: ``dot64`` (64 -> 64 channels, 3x3, modulated,
with bias: the ``tl.dot`` path of a typical DCNv2 layer), ``narrow8`` (8 -> 8 channels: the
broadcast-and-sum path of narrow channel runs), ``depthwise64`` (64 channels, 64 groups: the
depthwise forward kernel; its backward runs the kernels of ``narrow8``) and ``og2x48``
(96 channels, 2 offset groups of 48: channel tiles straddle offset groups, the forward's
nested loops). ``dot64`` and ``narrow8`` launch the forward, the column sampler, the backward
(input, offset, mask and weight gradients) and the deterministic input-gradient kernel; the
others only the forward, whose kernel is what they add.
"""

from __future__ import annotations

import functools

import torch

from deformconv.backends.triton.health import HealthCase
from deformconv.ops.deform_conv2d.contract import NeededGrads
from deformconv.ops.deform_conv2d.geometry import ConvGeometry

# name: (channels, groups, offset groups, everything or the forward only)
SHAPES = {
    "dot64": (64, 1, 1, True),
    "narrow8": (8, 1, 1, True),
    "depthwise64": (64, 64, 1, False),
    "og2x48": (96, 1, 2, False),
}
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _run(channels: int, groups: int, offset_groups: int, everything: bool, dtype: torch.dtype) -> None:
    # Imported here: the kernel modules must not be imported before the caller chose Triton's mode.
    from deformconv.backends.triton.deform_conv2d import backward, forward

    batch, size, points = 2, 16, 9
    input = torch.randn(batch, channels, size, size, dtype=dtype)
    offset = torch.randn(batch, 2 * offset_groups * points, size, size, dtype=dtype)
    mask = torch.rand(batch, offset_groups * points, size, size, dtype=dtype)
    weight = torch.randn(channels, channels // groups, 3, 3, dtype=dtype)
    bias = torch.randn(channels, dtype=dtype)
    grad_output = torch.randn(batch, channels, size, size, dtype=dtype)
    geometry = ConvGeometry.of(input, offset, weight, (1, 1), (1, 1), (1, 1), batch)

    forward.deform_conv2d_forward(input, offset, mask, weight, bias, geometry)
    if not everything:
        return
    forward.sample_columns(input, offset, mask, geometry.kernel, geometry.stride, geometry.padding, geometry.dilation)
    backward.deform_conv2d_backward(grad_output, input, offset, mask, weight, geometry, NeededGrads(True, True, True))
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        backward.deform_conv2d_backward(
            grad_output, input, offset, mask, weight, geometry, NeededGrads(True, True, False)
        )
    finally:
        torch.use_deterministic_algorithms(previous)


def cases() -> list[HealthCase]:
    """Every shape in every dtype."""
    return [
        HealthCase(f"deform_conv2d/{name}", dtype, functools.partial(_run, *shape, dtype))
        for name, shape in SHAPES.items()
        for dtype in DTYPES
    ]
