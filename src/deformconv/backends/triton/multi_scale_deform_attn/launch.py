"""Launchers of the multi-scale deformable attention kernels (the ``"triton"`` backend's kernels).

Block sizes are fixed heuristics, not autotuned (``triton.autotune`` would also time every
candidate in the interpreter that runs the tests without a GPU), and not yet tuned on a GPU.

The backward's value gradient is added with atomics into a buffer of the accumulation dtype,
unless ``torch.use_deterministic_algorithms(True)`` is in effect: then a second kernel gives each
program the rows of one (image, head, level) and walks the samples in a fixed order, so the
result is bitwise reproducible (and slower: it parallelises over ``N*M*L`` programs only).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from deformconv.backends.triton.deform_conv2d.launch import on_device
from deformconv.backends.triton.multi_scale_deform_attn.kernels import (
    backward_kernel,
    forward_kernel,
    value_grad_kernel,
)
from deformconv.ops.multi_scale_deform_attn.contract import Grads, NeededGrads
from deformconv.ops.multi_scale_deform_attn.geometry import AttnGeometry

BLOCK_Q = 16
MAX_BLOCK_D = 64
# The deterministic value gradient needs one thread per channel lane: 32 lanes, one warp.
DETERMINISTIC_BLOCK_D = 32


def _acc(dtype: torch.dtype) -> tl.dtype:
    return tl.float64 if dtype == torch.float64 else tl.float32


def _block_d(channels: int) -> int:
    return max(16, min(MAX_BLOCK_D, triton.next_power_of_2(channels)))


def _sizes(g: AttnGeometry) -> tuple[int, ...]:
    return (g.num_value, g.queries, g.heads, g.channels, g.levels, g.points)


def forward(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    geometry: AttnGeometry,
) -> Tensor:
    """Forward op on CUDA (see :func:`deformconv.multi_scale_deform_attn`)."""
    output = value.new_empty(geometry.batch, geometry.queries, geometry.embed_dims)
    if output.numel() == 0:
        return output
    block_d = _block_d(geometry.channels)
    grid = (
        triton.cdiv(geometry.queries, BLOCK_Q),
        geometry.batch * geometry.heads,
        triton.cdiv(geometry.channels, block_d),
    )
    with on_device(value.device):
        forward_kernel[grid](
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights, output,
            *_sizes(geometry), BLOCK_Q=BLOCK_Q, BLOCK_D=block_d, ACC=_acc(value.dtype),
        )  # fmt: skip
    return output


def backward(
    grad_output: Tensor,
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    geometry: AttnGeometry,
    needed: NeededGrads,
) -> Grads:
    """Backward op on CUDA: value gradient accumulated in float32 (float64 for float64)."""
    acc_dtype = geometry.accumulation_dtype
    need_coords = needed.sampling_locations or needed.attention_weights
    deterministic = torch.are_deterministic_algorithms_enabled()
    grad_value = torch.zeros(value.shape, dtype=acc_dtype, device=value.device) if needed.value else None
    # Location and weight gradients are computed together; the op drops the one not asked for.
    grad_locations = torch.empty_like(sampling_locations)
    grad_weights = torch.empty_like(attention_weights)
    rows = geometry.batch * geometry.heads
    work = geometry.queries * rows > 0
    with on_device(value.device):
        atomic = grad_value is not None and not deterministic
        if work and (need_coords or atomic):
            grid = (triton.cdiv(geometry.queries, BLOCK_Q), rows)
            backward_kernel[grid](
                grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                grad_value if atomic else value, grad_locations, grad_weights, *_sizes(geometry),
                NEED_COORDS=need_coords, ATOMIC_VALUE=atomic,
                BLOCK_Q=BLOCK_Q, BLOCK_D=_block_d(geometry.channels), ACC=_acc(value.dtype),
            )  # fmt: skip
        if work and grad_value is not None and deterministic:
            grid = (rows * geometry.levels, triton.cdiv(geometry.channels, DETERMINISTIC_BLOCK_D))
            value_grad_kernel[grid](
                grad_output, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_value,
                *_sizes(geometry), BLOCK_D=DETERMINISTIC_BLOCK_D, ACC=_acc(value.dtype), num_warps=1,
            )  # fmt: skip
    return Grads(
        None if grad_value is None else grad_value.to(value.dtype),
        grad_locations if needed.sampling_locations else None,
        grad_weights if needed.attention_weights else None,
    )
