"""The kernel contract of ``dcnv4``: what every backend's kernels take and return.

As for ``dcnv3`` (see :mod:`deformconv.ops.dcnv3.contract`), with the offsets and weights packed
in one tensor (see :mod:`.layout`). Kernels are registered under ``"dcnv4"`` and ``"dcnv4_backward"``.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from torch import Tensor

from deformconv.ops.dcnv3.contract import NeededGrads
from deformconv.ops.dcnv3.geometry import DCNGeometry

FORWARD = "dcnv4"
BACKWARD = "dcnv4_backward"

__all__ = ["BACKWARD", "FORWARD", "BackwardKernel", "ForwardKernel", "Grads", "NeededGrads"]


class Grads(NamedTuple):
    """A gradient per input (its shape and dtype; 0 in the padding of ``offset_mask``), or None where not needed."""

    input: Tensor | None
    offset_mask: Tensor | None


class ForwardKernel(Protocol):
    def __call__(self, input: Tensor, offset_mask: Tensor, geometry: DCNGeometry) -> Tensor:
        """Returns Tensor[N, H_out, W_out, G*D], contiguous, in the dtype of ``input``."""
        ...


class BackwardKernel(Protocol):
    def __call__(
        self, grad_output: Tensor, input: Tensor, offset_mask: Tensor, geometry: DCNGeometry, needed: NeededGrads
    ) -> Grads:
        """Gradients of input and offset_mask (see :class:`Grads`)."""
        ...
