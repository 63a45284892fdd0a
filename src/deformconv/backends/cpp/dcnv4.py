"""``dcnv4`` kernels of the ``"cpp"`` backend: DCNv3's C++ operators with the packed layout."""

from __future__ import annotations

import torch
from torch import Tensor

from deformconv.backends.cpp.dcnv3 import geometry_args
from deformconv.backends.registry import register_kernel
from deformconv.ops.dcnv3.geometry import DCNGeometry
from deformconv.ops.dcnv4.contract import BACKWARD, FORWARD, Grads, NeededGrads
from deformconv.ops.dcnv4.layout import packed_layout


@register_kernel(FORWARD, backend="cpp", device_types=("cpu",))
def forward(input: Tensor, offset_mask: Tensor, geometry: DCNGeometry) -> Tensor:
    offset_mask = offset_mask.contiguous()
    layout = list(packed_layout(geometry.points, offset_mask.shape[-1]))
    return torch.ops.deformconv_cpp.dcn_forward(
        input.contiguous(), offset_mask, offset_mask, *geometry_args(geometry), layout
    )


@register_kernel(BACKWARD, backend="cpp", device_types=("cpu",))
def backward(
    grad_output: Tensor, input: Tensor, offset_mask: Tensor, geometry: DCNGeometry, needed: NeededGrads
) -> Grads:
    offset_mask = offset_mask.contiguous()
    grad_input, grad_offset_mask, _ = torch.ops.deformconv_cpp.dcn_backward(
        grad_output.contiguous(), input.contiguous(), offset_mask, offset_mask, *geometry_args(geometry),
        list(packed_layout(geometry.points, offset_mask.shape[-1])), True, *needed,
    )  # fmt: skip
    return Grads(grad_input.to(input.dtype) if needed.input else None, grad_offset_mask if needed.offset_mask else None)
