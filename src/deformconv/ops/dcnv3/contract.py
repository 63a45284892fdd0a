"""The kernel contract of ``dcnv3``: what every backend's kernels take and return.

The op validates the arguments and computes the :class:`DCNGeometry` before a kernel runs, so
kernels may assume consistent shapes, one dtype and one device (the tensors may be
non-contiguous). Kernels are registered with :func:`deformconv.backends.register_kernel` under
the operator names ``"dcnv3"`` (a :class:`ForwardKernel`) and ``"dcnv3_backward"`` (a
:class:`BackwardKernel`).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from torch import Tensor

from deformconv.ops.dcnv3.geometry import DCNGeometry

FORWARD = "dcnv3"
BACKWARD = "dcnv3_backward"


class NeededGrads(NamedTuple):
    """Which gradients the backward kernel must compute (offset and mask come together)."""

    input: bool
    offset_mask: bool


class Grads(NamedTuple):
    """What a backward kernel returns: a gradient per input (its shape and dtype), or None where not needed."""

    input: Tensor | None
    offset: Tensor | None
    mask: Tensor | None


def complete_grads(kernel_name: str, grads: tuple, wanted: tuple[bool, ...], like: Tensor) -> tuple[Tensor, ...]:
    """The backward op's outputs: each gradient asked for (it must be there), else a fresh empty tensor.

    Fresh tensors keep the outputs from aliasing each other, whatever a backend returns.

    Raises:
        RuntimeError: the kernel returned None for a gradient that was asked for.
    """
    result = []
    for name, grad, want in zip(grads._fields, grads, wanted):
        if want and grad is None:
            raise RuntimeError(f"the {kernel_name} kernel returned no gradient for {name}, which was asked for")
        result.append(grad if want else like.new_empty(0))
    return tuple(result)


class ForwardKernel(Protocol):
    def __call__(self, input: Tensor, offset: Tensor, mask: Tensor, geometry: DCNGeometry) -> Tensor:
        """Returns Tensor[N, H_out, W_out, G*D], contiguous, in the dtype of ``input``."""
        ...


class BackwardKernel(Protocol):
    def __call__(
        self,
        grad_output: Tensor,
        input: Tensor,
        offset: Tensor,
        mask: Tensor,
        geometry: DCNGeometry,
        needed: NeededGrads,
    ) -> Grads:
        """Gradients of input, offset and mask (see :class:`Grads`)."""
        ...
