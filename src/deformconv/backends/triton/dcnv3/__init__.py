"""``dcnv3`` and ``dcnv4`` kernels of the ``"triton"`` backend (one set of kernels for both layouts).

- :mod:`.kernels`: the ``@triton.jit`` forward and backward kernels.
- :mod:`.configs`: their launch configurations per kernel, dtype and GPU family.
- :mod:`.launch`: their launchers.
- :mod:`.health`: their cases of the kernel health check (:mod:`deformconv.backends.triton.health`).
"""

from __future__ import annotations

from torch import Tensor

from deformconv.backends.registry import register_kernel
from deformconv.backends.triton.dcnv3.launch import dcn_backward, dcn_forward
from deformconv.ops.dcnv3 import contract as v3
from deformconv.ops.dcnv3.geometry import DCNGeometry
from deformconv.ops.dcnv4 import contract as v4
from deformconv.ops.dcnv4.layout import packed_layout, separate_layout


def dcnv3_forward(input: Tensor, offset: Tensor, mask: Tensor, geometry: DCNGeometry) -> Tensor:
    return dcn_forward(input, offset, mask, geometry, separate_layout(geometry.group, geometry.points))


def dcnv3_backward(
    grad_output: Tensor, input: Tensor, offset: Tensor, mask: Tensor, geometry: DCNGeometry, needed: v3.NeededGrads
) -> v3.Grads:
    layout = separate_layout(geometry.group, geometry.points)
    return v3.Grads(*dcn_backward(grad_output, input, offset, mask, geometry, layout, *needed))


def dcnv4_forward(input: Tensor, offset_mask: Tensor, geometry: DCNGeometry) -> Tensor:
    offset_mask = offset_mask.contiguous()
    layout = packed_layout(geometry.points, offset_mask.shape[-1])
    return dcn_forward(input, offset_mask, offset_mask, geometry, layout)


def dcnv4_backward(
    grad_output: Tensor, input: Tensor, offset_mask: Tensor, geometry: DCNGeometry, needed: v4.NeededGrads
) -> v4.Grads:
    offset_mask = offset_mask.contiguous()
    layout = packed_layout(geometry.points, offset_mask.shape[-1])
    grad_input, grad_offset_mask, _ = dcn_backward(
        grad_output, input, offset_mask, offset_mask, geometry, layout, *needed
    )
    return v4.Grads(grad_input, grad_offset_mask)


KERNELS = {
    v3.FORWARD: dcnv3_forward,
    v3.BACKWARD: dcnv3_backward,
    v4.FORWARD: dcnv4_forward,
    v4.BACKWARD: dcnv4_backward,
}
for _op, _fn in KERNELS.items():
    register_kernel(_op, backend="triton", device_types=("cuda",))(_fn)
