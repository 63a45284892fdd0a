"""``deform_conv2d``: its public Python face, the custom ops behind it, and their autograd.

Two operators are declared with ``torch.library.custom_op``:

- ``deformconv::deform_conv2d`` (forward) and
- ``deformconv::deform_conv2d_backward`` (gradients for input, offset, mask and weight).

The op owns the contract (see :mod:`.contract`): it validates its arguments once (the fake
kernel runs the same checks while ``torch.compile`` traces), computes the geometry and the batch
chunk, runs the kernel of the backend chosen for the input's device (see
:mod:`deformconv.backends`), and creates a fresh empty tensor for every gradient that was not
asked for. The forward op's autograd formula calls the backward op, so accelerated backends
speed up training too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from deformconv.backends import select
from deformconv.ops import budget
from deformconv.ops.autocast import register_autocast
from deformconv.ops.deform_conv2d.checks import LAYOUTS, IntPair, check_args, to_pair
from deformconv.ops.deform_conv2d.contract import BACKWARD, FORWARD, Grads, NeededGrads
from deformconv.ops.deform_conv2d.geometry import ConvGeometry
from deformconv.ops.validation import check_grad_output, check_types


def _geometry(input, offset, mask, weight, bias, stride, padding, dilation, batch_chunk: int) -> ConvGeometry:
    """Validates the op's arguments; ``batch_chunk`` 0 means: as many images as the budget allows."""
    geometry = check_args(input, offset, mask, weight, bias, tuple(stride), tuple(padding), tuple(dilation))
    if batch_chunk < 0:
        raise ValueError(f"batch_chunk must be >= 0 (0: from the im2col budget), got {batch_chunk}")
    if batch_chunk == 0:
        element_size = torch.finfo(geometry.accumulation_dtype).bits // 8
        batch_chunk = budget.batch_chunk(geometry.column_elements_per_image * element_size)
    return geometry.with_batch_chunk(batch_chunk)


@torch.library.custom_op("deformconv::deform_conv2d", mutates_args=())
def deform_conv2d_op(
    input: Tensor,
    offset: Tensor,
    mask: Tensor | None,
    weight: Tensor,
    bias: Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    batch_chunk: int,
) -> Tensor:
    """Forward op; ``batch_chunk`` images share one column buffer (0: from the budget).

    Returns Tensor[N, C_out, Ho, Wo].
    """
    geometry = _geometry(input, offset, mask, weight, bias, stride, padding, dilation, batch_chunk)
    return select(FORWARD, input.device.type).fn(input, offset, mask, weight, bias, geometry)


@deform_conv2d_op.register_fake
def _deform_conv2d_fake(input, offset, mask, weight, bias, stride, padding, dilation, batch_chunk):
    geometry = _geometry(input, offset, mask, weight, bias, stride, padding, dilation, batch_chunk)
    return input.new_empty(geometry.batch, geometry.out_channels, *geometry.out_size)


def _check_grad_output(grad_output: Tensor, geometry: ConvGeometry, input: Tensor) -> None:
    expected = (geometry.batch, geometry.out_channels, *geometry.out_size)
    check_grad_output(grad_output, input, expected, "[N, C_out, H_out, W_out]")


@torch.library.custom_op("deformconv::deform_conv2d_backward", mutates_args=())
def deform_conv2d_backward_op(
    grad_output: Tensor,
    input: Tensor,
    offset: Tensor,
    mask: Tensor | None,
    weight: Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    batch_chunk: int,
    need_input: bool,
    need_offset_mask: bool,
    need_weight: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Backward op: ``(grad_input, grad_offset, grad_mask, grad_weight)``.

    A gradient that is not asked for (and ``grad_mask`` when ``mask`` is None) is a fresh
    empty tensor.
    """
    geometry = _geometry(input, offset, mask, weight, None, stride, padding, dilation, batch_chunk)
    _check_grad_output(grad_output, geometry, input)
    needed = NeededGrads(need_input, need_offset_mask, need_weight)
    kernel = select(BACKWARD, input.device.type).fn
    grads = kernel(grad_output, input, offset, mask, weight, geometry, needed)
    wanted = (need_input, need_offset_mask, need_offset_mask and mask is not None, need_weight)
    result = []
    for name, grad, want in zip(Grads._fields, grads, wanted):
        if want and grad is None:
            raise RuntimeError(f"the {BACKWARD} kernel returned no gradient for {name}, which was asked for")
        result.append(grad if want else input.new_empty(0))
    return tuple(result)  # type: ignore[return-value]


@deform_conv2d_backward_op.register_fake
def _deform_conv2d_backward_fake(
    grad_output, input, offset, mask, weight, stride, padding, dilation, batch_chunk,
    need_input, need_offset_mask, need_weight,
):  # fmt: skip
    geometry = _geometry(input, offset, mask, weight, None, stride, padding, dilation, batch_chunk)
    _check_grad_output(grad_output, geometry, input)

    def like(tensor: Tensor | None, needed: bool) -> Tensor:
        if tensor is None or not needed:
            return input.new_empty(0)
        return tensor.new_empty(tensor.shape)

    return (
        like(input, need_input),
        like(offset, need_offset_mask),
        like(mask, need_offset_mask),
        like(weight, need_weight),
    )


def _setup_context(ctx, inputs, output) -> None:
    input, offset, mask, weight, bias, stride, padding, dilation, batch_chunk = inputs
    ctx.save_for_backward(input, offset, mask, weight)
    ctx.conv_args = (stride, padding, dilation, batch_chunk)
    ctx.has_mask = mask is not None


def _backward(ctx, grad_output: Tensor):
    input, offset, mask, weight = ctx.saved_tensors
    need_input, need_offset, need_mask, need_weight, need_bias = ctx.needs_input_grad[:5]
    grad_input, grad_offset, grad_mask, grad_weight = torch.ops.deformconv.deform_conv2d_backward(
        grad_output.contiguous(), input, offset, mask, weight, *ctx.conv_args,
        need_input, need_offset or need_mask, need_weight,
    )  # fmt: skip
    return (
        grad_input if need_input else None,
        grad_offset if need_offset else None,
        grad_mask if need_mask and ctx.has_mask else None,
        grad_weight if need_weight else None,
        grad_output.sum((0, 2, 3)) if need_bias else None,
        None,
        None,
        None,
        None,
    )


deform_conv2d_op.register_autograd(_backward, setup_context=_setup_context)
register_autocast("deform_conv2d")


def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    mask: Tensor | None = None,
) -> Tensor:
    r"""Deformable convolution: DCNv1 without ``mask``, modulated DCNv2 with it.

    Same signature and numbers as ``torchvision.ops.deform_conv2d``. For output pixel
    :math:`p_0` and kernel points :math:`p_n`,

    - DCNv1 (`arXiv:1703.06211 <https://arxiv.org/abs/1703.06211>`_):
      :math:`y(p_0) = \sum_n w(p_n)\, x(p_0 + p_n + \Delta p_n)`
    - DCNv2 (`arXiv:1811.11168 <https://arxiv.org/abs/1811.11168>`_):
      :math:`y(p_0) = \sum_n w(p_n)\, x(p_0 + p_n + \Delta p_n)\, m_n`

    where :math:`x(\cdot)` at fractional points is bilinear interpolation with zeros outside
    the image. ``groups`` is inferred from ``weight`` (``C_in / weight.shape[1]``) and the
    number of offset (deformable) groups ``G`` from ``offset`` (``offset.shape[1] / (2*kh*kw)``).
    Input channel ``c`` uses the offsets and mask of group ``c // (C_in / G)``.

    The batch is processed in chunks so that the sampled (im2col) buffer stays under
    :func:`deformconv.get_im2col_budget` bytes (64 MiB by default), whatever the batch size.

    Args:
        input (Tensor[N, C_in, H, W]): input feature map.
        offset (Tensor[N, 2*G*kh*kw, H_out, W_out]): for offset group ``g`` and kernel point
            ``k = i*kw + j``, channel ``2*(g*kh*kw + k)`` is the y (row) offset and the next
            channel the x (column) offset.
        weight (Tensor[C_out, C_in/groups, kh, kw]): convolution weight.
        bias (Tensor[C_out], optional): added to every output pixel.
        stride (int or Tuple[int, int]): distance between sampling windows. Default: 1.
        padding (int or Tuple[int, int]): implicit zero padding on both sides. Default: 0.
        dilation (int or Tuple[int, int]): spacing between kernel points. Default: 1.
        mask (Tensor[N, G*kh*kw, H_out, W_out], optional): modulation scalar of each kernel
            point (applied as given, no activation). None gives DCNv1.

    Returns:
        Tensor[N, C_out, H_out, W_out], with
        ``H_out = (H + 2*pad_h - dil_h*(kh-1) - 1) // stride_h + 1`` (likewise ``W_out``).

    Raises:
        TypeError, ValueError, RuntimeError: an argument has the wrong type, shape, dtype or
        device; the message names it, with what was expected and what was given.

    Example:
        >>> x = torch.randn(2, 8, 16, 16)
        >>> weight = torch.randn(4, 8, 3, 3)
        >>> offset = torch.randn(2, 2 * 3 * 3, 16, 16)
        >>> mask = torch.rand(2, 3 * 3, 16, 16)
        >>> deform_conv2d(x, offset, weight, padding=1, mask=mask).shape
        torch.Size([2, 4, 16, 16])
    """
    check_types(LAYOUTS, input=input, offset=offset, weight=weight, bias=bias, mask=mask)
    stride = to_pair(stride, "stride")
    padding = to_pair(padding, "padding")
    dilation = to_pair(dilation, "dilation")
    return torch.ops.deformconv.deform_conv2d(input, offset, mask, weight, bias, stride, padding, dilation, 0)
