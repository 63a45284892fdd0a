"""The kernel contract of ``deform_conv2d``: what every backend's kernels take and return.

The op validates the arguments and computes the :class:`ConvGeometry` before a kernel runs,
so kernels may assume consistent shapes, one dtype and one device. Kernels are registered with
:func:`deformconv.backends.register_kernel` under the operator names ``"deform_conv2d"``
(a :class:`ForwardKernel`) and ``"deform_conv2d_backward"`` (a :class:`BackwardKernel`).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from torch import Tensor

from deformconv.ops.deform_conv2d.geometry import ConvGeometry

FORWARD = "deform_conv2d"
BACKWARD = "deform_conv2d_backward"


class NeededGrads(NamedTuple):
    """Which gradients the backward kernel must compute."""

    input: bool
    offset_mask: bool
    weight: bool


class Grads(NamedTuple):
    """What a backward kernel returns: a gradient per input, or None where it was not needed.

    A gradient has the shape and dtype of its input (``mask`` is None for DCNv1, and so is its
    gradient). The op replaces every None by a fresh empty tensor, so no backend can make two
    outputs alias each other.
    """

    input: Tensor | None
    offset: Tensor | None
    mask: Tensor | None
    weight: Tensor | None


class ForwardKernel(Protocol):
    def __call__(
        self,
        input: Tensor,
        offset: Tensor,
        mask: Tensor | None,
        weight: Tensor,
        bias: Tensor | None,
        geometry: ConvGeometry,
    ) -> Tensor:
        """Returns Tensor[N, C_out, H_out, W_out], contiguous, in the dtype of ``input``."""
        ...


class BackwardKernel(Protocol):
    def __call__(
        self,
        grad_output: Tensor,
        input: Tensor,
        offset: Tensor,
        mask: Tensor | None,
        weight: Tensor,
        geometry: ConvGeometry,
        needed: NeededGrads,
    ) -> Grads:
        """Gradients of input, offset, mask and weight (see :class:`Grads`)."""
        ...
