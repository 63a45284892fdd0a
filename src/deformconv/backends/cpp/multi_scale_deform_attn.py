"""``multi_scale_deform_attn`` kernels of the ``"cpp"`` backend (sources in ``csrc/multi_scale_deform_attn/``).

The forward splits the (image, query) rows between threads; the backward gives each thread whole
(image, level, block of heads) slabs, which own every gradient element they write, so it needs no
atomics and its results do not depend on the number of threads. Half types compute in float32;
an AVX2+FMA build of the kernels runs where the processor has it, and heads of 32 channels (the
usual width) use kernels unrolled for that width.
"""

from __future__ import annotations

import torch
from torch import Tensor

from deformconv.backends.registry import register_kernel
from deformconv.ops.multi_scale_deform_attn.contract import BACKWARD, FORWARD, Grads, NeededGrads
from deformconv.ops.multi_scale_deform_attn.geometry import AttnGeometry


@register_kernel(FORWARD, backend="cpp", device_types=("cpu",))
def forward(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    geometry: AttnGeometry,
) -> Tensor:
    return torch.ops.deformconv_cpp.multi_scale_deform_attn(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )


@register_kernel(BACKWARD, backend="cpp", device_types=("cpu",))
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
    grads = torch.ops.deformconv_cpp.multi_scale_deform_attn_backward(
        grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights, *needed
    )
    return Grads(*(grad if want else None for grad, want in zip(grads, needed)))
