"""``deform_conv2d`` kernels of the ``"cpp"`` backend (sources in ``csrc/deform_conv2d/``).

The kernels sample the input channels-last (bilinear weights computed once per sample point,
reused across the channels of its offset group); the forward multiplies panels of sampled pixels
with the weight by its own AVX-512 / AVX2 micro-kernel (PyTorch's BLAS for float64, on other
processors and in the backward), and the backward needs no atomics, so the results are bitwise
reproducible.
"""

from __future__ import annotations

import torch
from torch import Tensor

from deformconv.backends.registry import register_kernel
from deformconv.ops.deform_conv2d.contract import BACKWARD, FORWARD, Grads, NeededGrads
from deformconv.ops.deform_conv2d.geometry import ConvGeometry


@register_kernel(FORWARD, backend="cpp", device_types=("cpu",))
def forward(
    input: Tensor, offset: Tensor, mask: Tensor | None, weight: Tensor, bias: Tensor | None, geometry: ConvGeometry
) -> Tensor:
    return torch.ops.deformconv_cpp.deform_conv2d(
        input, offset, mask, weight, bias, *geometry.conv_args, geometry.batch_chunk
    )


@register_kernel(BACKWARD, backend="cpp", device_types=("cpu",))
def backward(
    grad_output: Tensor,
    input: Tensor,
    offset: Tensor,
    mask: Tensor | None,
    weight: Tensor,
    geometry: ConvGeometry,
    needed: NeededGrads,
) -> Grads:
    grads = torch.ops.deformconv_cpp.deform_conv2d_backward(
        grad_output, input, offset, mask, weight, *geometry.conv_args, geometry.batch_chunk, *needed
    )
    return Grads(*grads)
