"""Launchers of the multi-scale deformable attention kernels (the ``"triton"`` backend's kernels).

Tiles and launch options are in :mod:`.configs`; every kernel launches on a 1-d grid through
:func:`deformconv.backends.triton.runtime.launch`.

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
from deformconv.backends.triton.multi_scale_deform_attn.configs import config
from deformconv.backends.triton.multi_scale_deform_attn.kernels import (
    backward_kernel,
    forward_kernel,
    value_grad_kernel,
)
from deformconv.backends.triton.runtime import launch
from deformconv.ops.multi_scale_deform_attn.contract import Grads, NeededGrads
from deformconv.ops.multi_scale_deform_attn.geometry import AttnGeometry


def _acc(dtype: torch.dtype) -> tl.dtype:
    return tl.float64 if dtype == torch.float64 else tl.float32


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
    cfg = config("forward", geometry.channels)
    programs = (
        geometry.batch
        * geometry.heads
        * triton.cdiv(geometry.queries, cfg.block_q)
        * triton.cdiv(geometry.channels, cfg.block_d)
    )
    args = (value, spatial_shapes, level_start_index, sampling_locations, attention_weights, output, *_sizes(geometry))
    options = dict(BLOCK_Q=cfg.block_q, BLOCK_D=cfg.block_d, ACC=_acc(value.dtype), **cfg.options())
    with on_device(value.device):
        launch(forward_kernel, programs, args, options, "N * heads * query tiles * channel tiles")
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
            cfg = config("backward", geometry.channels)
            args = (
                grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                grad_value if atomic else value, grad_locations, grad_weights, *_sizes(geometry),
            )  # fmt: skip
            options = dict(
                NEED_COORDS=need_coords, ATOMIC_VALUE=atomic,
                BLOCK_Q=cfg.block_q, BLOCK_D=cfg.block_d, ACC=_acc(value.dtype), **cfg.options(),
            )  # fmt: skip
            programs = rows * triton.cdiv(geometry.queries, cfg.block_q)
            launch(backward_kernel, programs, args, options, "N * heads * query tiles")
        if work and grad_value is not None and deterministic:
            cfg = config("value_grad", geometry.channels)
            args = (
                grad_output, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_value,
                *_sizes(geometry),
            )  # fmt: skip
            options = dict(BLOCK_D=cfg.block_d, ACC=_acc(value.dtype), **cfg.options())
            programs = rows * geometry.levels * triton.cdiv(geometry.channels, cfg.block_d)
            launch(value_grad_kernel, programs, args, options, "N * heads * levels * channel tiles")
    return Grads(
        None if grad_value is None else grad_value.to(value.dtype),
        grad_locations if needed.sampling_locations else None,
        grad_weights if needed.attention_weights else None,
    )
