"""The kernel contract of ``multi_scale_deform_attn``: what every backend's kernels take and return.

The op validates the arguments (shapes, dtypes, devices and the level sizes held in
``spatial_shapes`` and ``level_start_index``) and computes the :class:`AttnGeometry` before a
kernel runs, so kernels may assume consistent shapes, one floating dtype, one device and
contiguous tensors. Kernels are registered with :func:`deformconv.backends.register_kernel`
under the operator names ``"multi_scale_deform_attn"`` (a :class:`ForwardKernel`) and
``"multi_scale_deform_attn_backward"`` (a :class:`BackwardKernel`).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from torch import Tensor

from deformconv.ops.multi_scale_deform_attn.geometry import AttnGeometry

FORWARD = "multi_scale_deform_attn"
BACKWARD = "multi_scale_deform_attn_backward"


class NeededGrads(NamedTuple):
    """Which gradients the backward kernel must compute."""

    value: bool
    sampling_locations: bool
    attention_weights: bool


class Grads(NamedTuple):
    """What a backward kernel returns: a gradient per input, or None where it was not needed.

    A gradient has the shape and dtype of its input. The op replaces every None by a fresh
    empty tensor, so no backend can make two outputs alias each other.
    """

    value: Tensor | None
    sampling_locations: Tensor | None
    attention_weights: Tensor | None


class ForwardKernel(Protocol):
    def __call__(
        self,
        value: Tensor,
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        sampling_locations: Tensor,
        attention_weights: Tensor,
        geometry: AttnGeometry,
    ) -> Tensor:
        """Returns Tensor[N, Lq, M*D], contiguous, in the dtype of ``value``."""
        ...


class BackwardKernel(Protocol):
    def __call__(
        self,
        grad_output: Tensor,
        value: Tensor,
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        sampling_locations: Tensor,
        attention_weights: Tensor,
        geometry: AttnGeometry,
        needed: NeededGrads,
    ) -> Grads:
        """Gradients of value, sampling_locations and attention_weights (see :class:`Grads`)."""
        ...
