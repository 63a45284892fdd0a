"""``dcnv4``: its public Python face, the custom ops behind it, and their autograd.

``deformconv::dcnv4`` (forward) and ``deformconv::dcnv4_backward`` (gradients for input and
the packed offsets and weights), declared and dispatched exactly like ``dcnv3`` (see
:mod:`deformconv.ops.dcnv3.op`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from deformconv.backends import select
from deformconv.ops.autocast import register_autocast
from deformconv.ops.dcnv3.checks import TENSOR_LAYOUTS, check_dcn_grad_output, op_args
from deformconv.ops.dcnv3.contract import complete_grads
from deformconv.ops.dcnv3.geometry import DCNGeometry
from deformconv.ops.dcnv4.checks import check_args
from deformconv.ops.dcnv4.contract import BACKWARD, FORWARD, NeededGrads
from deformconv.ops.validation import check_types


def _geometry(input, offset_mask, *params) -> DCNGeometry:
    """Validates the op's arguments; the last of ``params`` is ``batch_chunk`` (0: from the im2col budget)."""
    *conv, batch_chunk = params
    return check_args(input, offset_mask, *conv).with_budget_chunk(batch_chunk)


@torch.library.custom_op("deformconv::dcnv4", mutates_args=())
def dcnv4_op(
    input: Tensor,
    offset_mask: Tensor,
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    group: int,
    group_channels: int,
    offset_scale: float,
    remove_center: bool,
    batch_chunk: int,
) -> Tensor:
    """Forward op; returns Tensor[N, H_out, W_out, group*group_channels]."""
    geometry = _geometry(
        input,
        offset_mask,
        kernel,
        stride,
        padding,
        dilation,
        group,
        group_channels,
        offset_scale,
        remove_center,
        batch_chunk,
    )
    return select(FORWARD, input.device.type).fn(input, offset_mask, geometry)


@dcnv4_op.register_fake
def _dcnv4_fake(input, offset_mask, *params):
    geometry = _geometry(input, offset_mask, *params)
    return input.new_empty(geometry.batch, *geometry.out_size, geometry.channels)


@torch.library.custom_op("deformconv::dcnv4_backward", mutates_args=())
def dcnv4_backward_op(
    grad_output: Tensor,
    input: Tensor,
    offset_mask: Tensor,
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    group: int,
    group_channels: int,
    offset_scale: float,
    remove_center: bool,
    batch_chunk: int,
    need_input: bool,
    need_offset_mask: bool,
) -> tuple[Tensor, Tensor]:
    """Backward op: ``(grad_input, grad_offset_mask)``; one not asked for is a fresh empty tensor."""
    geometry = _geometry(
        input,
        offset_mask,
        kernel,
        stride,
        padding,
        dilation,
        group,
        group_channels,
        offset_scale,
        remove_center,
        batch_chunk,
    )
    check_dcn_grad_output(grad_output, input, geometry)
    needed = NeededGrads(need_input, need_offset_mask)
    grads = select(BACKWARD, input.device.type).fn(grad_output, input, offset_mask, geometry, needed)
    return complete_grads(BACKWARD, grads, needed, input)  # type: ignore[return-value]


@dcnv4_backward_op.register_fake
def _dcnv4_backward_fake(grad_output, input, offset_mask, *params):
    *conv, need_input, need_offset_mask = params
    geometry = _geometry(input, offset_mask, *conv)
    check_dcn_grad_output(grad_output, input, geometry)
    return (
        input.new_empty(input.shape) if need_input else input.new_empty(0),
        offset_mask.new_empty(offset_mask.shape) if need_offset_mask else input.new_empty(0),
    )


def _setup_context(ctx, inputs, output) -> None:
    input, offset_mask, *params = inputs
    ctx.save_for_backward(input, offset_mask)
    ctx.params = params


def _backward(ctx, grad_output: Tensor):
    input, offset_mask = ctx.saved_tensors
    need_input, need_offset_mask = ctx.needs_input_grad[:2]
    grad_input, grad_offset_mask = torch.ops.deformconv.dcnv4_backward(
        grad_output.contiguous(), input, offset_mask, *ctx.params, need_input, need_offset_mask
    )
    return (
        grad_input if need_input else None,
        grad_offset_mask if need_offset_mask else None,
        *([None] * len(ctx.params)),
    )


dcnv4_op.register_autograd(_backward, setup_context=_setup_context)
register_autocast("dcnv4")


def dcnv4(
    input: Tensor,
    offset_mask: Tensor,
    kernel_h: int = 3,
    kernel_w: int = 3,
    stride_h: int = 1,
    stride_w: int = 1,
    pad_h: int = 1,
    pad_w: int = 1,
    dilation_h: int = 1,
    dilation_w: int = 1,
    group: int | None = None,
    group_channels: int | None = None,
    offset_scale: float = 1.0,
    remove_center: bool = False,
) -> Tensor:
    r"""DCNv4, the deformable convolution of FlashInternImage (`arXiv:2401.06197 <https://arxiv.org/abs/2401.06197>`_).

    Same arguments, in the same order, and same numbers as the official ``DCNv4Function``
    (without ``im2col_step``). DCNv4 is DCNv3 (see :func:`deformconv.dcnv3`; same sample points)
    with the offsets and weights of each group packed in one tensor and unbounded weights (no
    softmax anywhere). The packing (see :mod:`deformconv.ops.dcnv4.layout`): for group ``g``,
    ``offset_mask[..., 3*P*g : 3*P*(g+1)]`` is ``P`` pairs ``(dx, dy)`` then ``P`` weights; the last
    dimension is padded to a multiple of 8, and the padding is ignored. Unlike the official
    kernels, any kernel size works (they take 3x3 only).

    Args:
        input (Tensor[N, H, W, group*group_channels]): channels-last input; ``group_channels``
            must be a multiple of 8, as in the official kernels.
        offset_mask (Tensor[N, H_out, W_out, L]): packed offsets and weights, ``L`` a multiple of
            8 and at least ``3*group*P`` (``P = kernel_h*kernel_w - remove_center``).
        kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, group,
            group_channels, offset_scale, remove_center: as in :func:`deformconv.dcnv3`.

    Returns:
        Tensor[N, H_out, W_out, group*group_channels].

    Raises:
        TypeError, ValueError, RuntimeError: an argument has the wrong type, shape, dtype or
        device; the message names it, with what was expected and what was given.

    Example:
        >>> x = torch.randn(2, 16, 16, 4 * 16)
        >>> offset_mask = torch.randn(2, 16, 16, 112)  # 3*4*9 = 108, padded to 112
        >>> dcnv4(x, offset_mask, group=4, group_channels=16).shape
        torch.Size([2, 16, 16, 64])
    """
    check_types(TENSOR_LAYOUTS, input=input, offset_mask=offset_mask)
    params = (kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, group, group_channels)
    return torch.ops.deformconv.dcnv4(input, offset_mask, *op_args(input, *params, offset_scale, remove_center))
