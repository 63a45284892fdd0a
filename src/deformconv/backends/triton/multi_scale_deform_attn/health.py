"""Representative launches of the multi-scale deformable attention kernels, for a kernel-health harness.

:func:`health_cases` lists ``(name, run)`` pairs; ``run()`` builds inputs of a Deformable DETR
layer's shapes on the device, launches the forward and the backward (atomic and deterministic
value gradients) through :mod:`.launch`, synchronises and returns the outputs, so a harness can
compile every kernel variant, time it, or compare it with the reference. Listing the cases
allocates nothing; each ``run`` needs a CUDA device (or ``device="cpu"`` under
``TRITON_INTERPRET=1``).

Example:
    >>> for name, run in health_cases():
    ...     outputs = run()
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor

from deformconv.backends.triton.multi_scale_deform_attn import launch
from deformconv.ops.multi_scale_deform_attn.checks import check_args, check_levels
from deformconv.ops.multi_scale_deform_attn.contract import NeededGrads

# Deformable DETR at a quarter of its usual input area: levels at strides 8 to 64.
LEVELS = ((50, 76), (25, 38), (13, 19), (7, 10))
SHAPES = {
    # (batch, queries (0: every pixel, the encoder), heads, channels per head, points)
    "decoder": (2, 300, 8, 32, 4),
    "encoder": (1, 0, 8, 32, 4),
    "odd-channels": (1, 37, 3, 20, 3),
}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _inputs(shape: str, dtype: torch.dtype, device: str) -> tuple[Tensor, ...]:
    batch, queries, heads, channels, points = SHAPES[shape]
    g = torch.Generator().manual_seed(0)
    num_value = sum(h * w for h, w in LEVELS)
    queries = queries or num_value
    spatial_shapes = torch.tensor(LEVELS, dtype=torch.int64)
    areas = spatial_shapes[:, 0] * spatial_shapes[:, 1]
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    size = (batch, queries, heads, len(LEVELS), points)
    tensors = (
        torch.randn(batch, num_value, heads, channels, generator=g),
        spatial_shapes,
        starts,
        torch.rand(*size, 2, generator=g) * 1.2 - 0.1,
        torch.rand(*size, generator=g),
    )
    return tuple(t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype) for t in tensors)


def run_case(shape: str, dtype: torch.dtype, deterministic: bool, device: str = "cuda") -> tuple[Tensor, ...]:
    """Forward and backward launches on one shape and dtype; returns ``(output, *gradients)``."""
    value, spatial_shapes, starts, locations, weights = _inputs(shape, dtype, device)
    geometry = check_levels(spatial_shapes, starts, check_args(value, spatial_shapes, starts, locations, weights))
    output = launch.forward(value, spatial_shapes, starts, locations, weights, geometry)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(deterministic)
    try:
        grads = launch.backward(
            torch.ones_like(output), value, spatial_shapes, starts, locations, weights, geometry,
            NeededGrads(True, True, True),
        )  # fmt: skip
    finally:
        torch.use_deterministic_algorithms(previous)
    if output.is_cuda:
        torch.cuda.synchronize(output.device)
    return (output, *grads)


def health_cases() -> list[tuple[str, Callable[[], tuple[Tensor, ...]]]]:
    """``(name, run)`` for every shape x dtype x value-gradient mode (see the module docstring)."""
    cases = []
    for shape in SHAPES:
        for dtype_name, dtype in DTYPES.items():
            for deterministic in (False, True):
                mode = "deterministic" if deterministic else "atomic"
                name = f"multi_scale_deform_attn/{shape}/{dtype_name}/{mode}"
                cases.append((name, functools.partial(run_case, shape, dtype, deterministic)))
    return cases
