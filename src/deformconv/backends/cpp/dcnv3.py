"""``dcnv3`` kernels of the ``"cpp"`` backend (sources in ``csrc/dcnv3/``, shared with ``dcnv4``).

The C++ operators take the sample points' taps and origin from :class:`DCNGeometry` and a
layout saying where each point's offsets and weight live, so one kernel serves DCNv3's two
tensors and DCNv4's packed one. The backward is deterministic (no atomics) and accumulates the
input gradient in float32 for half types.
"""

from __future__ import annotations

import torch
from torch import Tensor

from deformconv.backends.registry import register_kernel
from deformconv.ops.dcnv3.contract import BACKWARD, FORWARD, Grads, NeededGrads
from deformconv.ops.dcnv3.geometry import DCNGeometry
from deformconv.ops.dcnv4.layout import separate_layout


def geometry_args(geometry: DCNGeometry) -> tuple[list[int], list[float], float]:
    """``(sizes, taps, offset_scale)`` of the C++ operators (see ``csrc/dcnv3/library.cpp``)."""
    sizes = [geometry.group, geometry.group_channels, *geometry.out_size, *geometry.stride, *geometry.origin]
    taps = [float(value) for tap in geometry.taps for value in tap]
    return sizes, taps, geometry.offset_scale


@register_kernel(FORWARD, backend="cpp", device_types=("cpu",))
def forward(input: Tensor, offset: Tensor, mask: Tensor, geometry: DCNGeometry) -> Tensor:
    tensors = (input.contiguous(), offset.contiguous(), mask.contiguous())
    return torch.ops.deformconv_cpp.dcn_forward(
        *tensors, *geometry_args(geometry), list(separate_layout(geometry.group, geometry.points))
    )


@register_kernel(BACKWARD, backend="cpp", device_types=("cpu",))
def backward(
    grad_output: Tensor, input: Tensor, offset: Tensor, mask: Tensor, geometry: DCNGeometry, needed: NeededGrads
) -> Grads:
    tensors = (grad_output.contiguous(), input.contiguous(), offset.contiguous(), mask.contiguous())
    grad_input, grad_offset, grad_mask = torch.ops.deformconv_cpp.dcn_backward(
        *tensors, *geometry_args(geometry), list(separate_layout(geometry.group, geometry.points)), False, *needed
    )
    return Grads(grad_input.to(input.dtype) if needed.input else None, grad_offset, grad_mask)
