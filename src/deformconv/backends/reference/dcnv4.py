"""``dcnv4`` in pure PyTorch: DCNv3's reference core on views of the packed ``offset_mask``."""

from __future__ import annotations

from torch import Tensor

from deformconv.backends.reference.dcnv3 import backward_core, forward_core
from deformconv.backends.registry import register_kernel
from deformconv.ops.dcnv3.geometry import DCNGeometry
from deformconv.ops.dcnv4.contract import BACKWARD, FORWARD, Grads, NeededGrads
from deformconv.ops.dcnv4.layout import unpack


@register_kernel(FORWARD, backend="reference", priority=0)
def dcnv4_forward(input: Tensor, offset_mask: Tensor, geometry: DCNGeometry) -> Tensor:
    """Forward op (see :func:`deformconv.dcnv4` for the argument shapes)."""
    return forward_core(input, *unpack(offset_mask, geometry.group, geometry.points), geometry)


@register_kernel(BACKWARD, backend="reference", priority=0)
def dcnv4_backward(
    grad_output: Tensor, input: Tensor, offset_mask: Tensor, geometry: DCNGeometry, needed: NeededGrads
) -> Grads:
    """Backward op: gradients for input and offset_mask (0 in its padding; None where not needed)."""
    views = unpack(offset_mask, geometry.group, geometry.points)
    grad_input, grad_offset, grad_weight = backward_core(grad_output, input, *views, geometry, needed)
    grad_offset_mask = None
    if needed.offset_mask:
        grad_offset_mask = offset_mask.new_zeros(offset_mask.shape)
        offset_part, weight_part = unpack(grad_offset_mask, geometry.group, geometry.points)
        offset_part.copy_(grad_offset)
        weight_part.copy_(grad_weight)
    return Grads(grad_input, grad_offset_mask)
