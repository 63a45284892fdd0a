"""``dcnv3``: its public Python face, the custom ops behind it, and their autograd.

Two operators are declared with ``torch.library.custom_op``: ``deformconv::dcnv3`` (forward)
and ``deformconv::dcnv3_backward`` (gradients for input, offset and mask). The op validates its
arguments once (the fake kernel runs the same checks while ``torch.compile`` traces), computes
the geometry and the batch chunk, runs the kernel of the backend chosen for the input's device,
and creates a fresh empty tensor for every gradient that was not asked for.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from deformconv.backends import select
from deformconv.ops.autocast import register_autocast
from deformconv.ops.dcnv3.checks import TENSOR_LAYOUTS, check_args, check_dcn_grad_output, op_args
from deformconv.ops.dcnv3.contract import BACKWARD, FORWARD, NeededGrads, complete_grads
from deformconv.ops.dcnv3.geometry import DCNGeometry
from deformconv.ops.validation import check_types


def _geometry(input, offset, mask, *params) -> DCNGeometry:
    """Validates the op's arguments; the last of ``params`` is ``batch_chunk`` (0: from the im2col budget)."""
    *conv, batch_chunk = params
    return check_args(input, offset, mask, *conv).with_budget_chunk(batch_chunk)


@torch.library.custom_op("deformconv::dcnv3", mutates_args=())
def dcnv3_op(
    input: Tensor,
    offset: Tensor,
    mask: Tensor,
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
        offset,
        mask,
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
    return select(FORWARD, input.device.type).fn(input, offset, mask, geometry)


@dcnv3_op.register_fake
def _dcnv3_fake(input, offset, mask, *params):
    geometry = _geometry(input, offset, mask, *params)
    return input.new_empty(geometry.batch, *geometry.out_size, geometry.channels)


@torch.library.custom_op("deformconv::dcnv3_backward", mutates_args=())
def dcnv3_backward_op(
    grad_output: Tensor,
    input: Tensor,
    offset: Tensor,
    mask: Tensor,
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
) -> tuple[Tensor, Tensor, Tensor]:
    """Backward op: ``(grad_input, grad_offset, grad_mask)``; one not asked for is a fresh empty tensor."""
    geometry = _geometry(
        input,
        offset,
        mask,
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
    grads = select(BACKWARD, input.device.type).fn(grad_output, input, offset, mask, geometry, needed)
    return complete_grads(BACKWARD, grads, (need_input, need_offset_mask, need_offset_mask), input)  # type: ignore[return-value]


@dcnv3_backward_op.register_fake
def _dcnv3_backward_fake(grad_output, input, offset, mask, *params):
    *conv, need_input, need_offset_mask = params
    geometry = _geometry(input, offset, mask, *conv)
    check_dcn_grad_output(grad_output, input, geometry)
    return (
        input.new_empty(input.shape) if need_input else input.new_empty(0),
        offset.new_empty(offset.shape) if need_offset_mask else input.new_empty(0),
        mask.new_empty(mask.shape) if need_offset_mask else input.new_empty(0),
    )


def _setup_context(ctx, inputs, output) -> None:
    input, offset, mask, *params = inputs
    ctx.save_for_backward(input, offset, mask)
    ctx.params = params


def _backward(ctx, grad_output: Tensor):
    input, offset, mask = ctx.saved_tensors
    need_input, need_offset, need_mask = ctx.needs_input_grad[:3]
    grad_input, grad_offset, grad_mask = torch.ops.deformconv.dcnv3_backward(
        grad_output.contiguous(), input, offset, mask, *ctx.params, need_input, need_offset or need_mask
    )
    return (
        grad_input if need_input else None,
        grad_offset if need_offset else None,
        grad_mask if need_mask else None,
        *([None] * len(ctx.params)),
    )


dcnv3_op.register_autograd(_backward, setup_context=_setup_context)
register_autocast("dcnv3")


def dcnv3(
    input: Tensor,
    offset: Tensor,
    mask: Tensor,
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
    r"""DCNv3, the deformable convolution of InternImage (`arXiv:2211.05778 <https://arxiv.org/abs/2211.05778>`_).

    Same arguments, in the same order, and same numbers as the official ``dcnv3_core_pytorch``
    and ``DCNv3Function`` (without ``im2col_step``: the batch is chunked under
    :func:`deformconv.get_im2col_budget`). No convolution weight: every channel of group ``g``
    shares the group's sample points and weights,

    .. math::
        y[n, o, g, d] = \sum_p m[n, o, g, p]\; x_{n, g, d}\big(\text{loc}(o, p) + s\,\Delta_{n, o, g, p}\big)

    where :math:`x(\cdot)` is bilinear interpolation with zeros outside the image and the sample
    points are described in :mod:`deformconv.ops.dcnv3.geometry` (x-major kernel points, the
    kernel's centre at ``dilation*(kernel-1)//2``, ``offset_scale`` :math:`s` applied to the taps
    and offsets). The op applies no softmax: the official layer does, before the call.

    Args:
        input (Tensor[N, H, W, group*group_channels]): channels-last input.
        offset (Tensor[N, H_out, W_out, group*P*2]): ``(dx, dy)`` pairs, group-major then point,
            ``P = kernel_h*kernel_w - remove_center``.
        mask (Tensor[N, H_out, W_out, group*P]): weight of every sample point (used as given).
        kernel_h, kernel_w: kernel size. Default: 3.
        stride_h, stride_w: distance between output pixels. Default: 1.
        pad_h, pad_w: implicit zero padding. Default: 1.
        dilation_h, dilation_w: spacing between kernel points. Default: 1.
        group: G; None derives it from ``group_channels``.
        group_channels: D; None derives it from ``group``.
        offset_scale: factor on the taps and offsets. Default: 1.
        remove_center: leave out the kernel's centre point (odd kernels). Default: False.

    Returns:
        Tensor[N, H_out, W_out, group*group_channels], with
        ``H_out = (H + 2*pad_h - (dilation_h*(kernel_h-1) + 1)) // stride_h + 1`` (likewise ``W_out``).

    Raises:
        TypeError, ValueError, RuntimeError: an argument has the wrong type, shape, dtype or
        device; the message names it, with what was expected and what was given.

    Example:
        >>> x = torch.randn(2, 16, 16, 4 * 8)
        >>> offset = torch.randn(2, 16, 16, 4 * 9 * 2)
        >>> mask = torch.softmax(torch.randn(2, 16, 16, 4, 9), -1).flatten(-2)
        >>> dcnv3(x, offset, mask, 3, 3, 1, 1, 1, 1, 1, 1, group=4, group_channels=8).shape
        torch.Size([2, 16, 16, 32])
    """
    check_types(TENSOR_LAYOUTS, input=input, offset=offset, mask=mask)
    params = (kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, group, group_channels)
    return torch.ops.deformconv.dcnv3(input, offset, mask, *op_args(input, *params, offset_scale, remove_center))
