"""Backward op on CUDA in Triton: gradients of input, offset, mask and weight.

The bias gradient is a sum over ``grad_output`` done in Python by the op's autograd formula.

Deterministic mode: the input gradient is the only result whose summation order can vary,
because :mod:`.data_grad` adds it with ``tl.atomic_add``. When
``torch.use_deterministic_algorithms(True)`` is in effect, the kernel instead writes the
column gradient of ``batch_chunk`` images (the column-buffer memory budget) and the corners'
indices and weights, and ``Tensor.scatter_add_`` (deterministic on CUDA in that mode) adds
them into the input gradient. The other gradients never use atomics: offset and mask
gradients are reduced inside one program, and the weight gradient's partial sums over pixel
slices are added in a fixed order.
"""

from __future__ import annotations

import torch
import triton
from torch import Tensor

from deformconv.backends.triton.deform_conv2d.configs import config, flat_channel_tiles
from deformconv.backends.triton.deform_conv2d.data_grad import data_grad_kernel
from deformconv.backends.triton.deform_conv2d.launch import (
    channels_last,
    kernel_weight,
    multiprocessors,
    on_device,
    precision,
)
from deformconv.backends.triton.deform_conv2d.weight_grad import weight_grad_kernel
from deformconv.backends.triton.runtime import capability, check_pixels, launch
from deformconv.ops.deform_conv2d.contract import Grads, NeededGrads
from deformconv.ops.deform_conv2d.geometry import ConvGeometry, accumulation_dtype

# Programs per multiprocessor the weight gradient aims for when it splits the pixels.
_WEIGHT_GRAD_OCCUPANCY = 4


def _mask_strides(mask: Tensor | None) -> tuple[int, ...]:
    return (0, 0, 0, 0) if mask is None else mask.stride()


def _launch_data_grad(
    grad_output: Tensor,
    source: Tensor,
    offset: Tensor,
    mask: Tensor | None,
    packed_weight: Tensor,
    shape: ConvGeometry,
    conv: tuple[int, ...],
    grad_target: Tensor | None,
    target_strides: tuple[int, ...],
    corners: tuple[Tensor, Tensor] | None,
    grad_offset: Tensor | None,
    grad_mask: Tensor | None,
) -> None:
    """Runs :func:`data_grad_kernel` on the images of ``source`` (a batch or a chunk of it)."""
    batch = source.shape[0]
    total = batch * shape.out_h * shape.out_w
    if total == 0:
        return
    prec = precision(source.dtype)
    cfg = config("data_grad", shape.channel_run, shape.out_per_group, source.dtype, capability(source.device))
    # Tensors a configuration does not use are never read; any tensor can stand in.
    spare = offset
    corner_index, corner_weight = corners if corners is not None else (spare, spare)
    args = (
        grad_output,
        source,
        offset,
        spare if mask is None else mask,
        packed_weight,
        spare if grad_target is None else grad_target,
        spare if grad_offset is None else grad_offset,
        spare if grad_mask is None else grad_mask,
        corner_index,
        corner_weight,
        total,
        shape.height,
        shape.width,
        shape.out_h,
        shape.out_w,
        shape.out_channels,
        shape.in_per_group,
        shape.out_per_group,
        shape.in_per_offset_group,
        shape.offset_groups,
        shape.kernel_w,
        shape.kernel_points,
        *conv,
        *grad_output.stride(),
        *source.stride(),
        *offset.stride(),
        *_mask_strides(mask),
        *target_strides,
    )
    options = dict(
        HAS_MASK=mask is not None,
        NEED_INPUT=grad_target is not None,
        NEED_OFFSET_MASK=grad_offset is not None,
        DETERMINISTIC=corners is not None,
        ACC=prec.acc,
        IO=prec.io,
        OPERAND=prec.operand,
        DOT_PRECISION=prec.dot_precision,
        **cfg.options(),
    )
    programs = triton.cdiv(total, cfg.block_p) * shape.offset_groups * shape.kernel_points
    launch(data_grad_kernel, programs, args, options, "pixel tiles * offset groups * kernel points")


def _data_grads(
    grad_output: Tensor,
    source: Tensor,
    offset: Tensor,
    mask: Tensor | None,
    weight: Tensor,
    shape: ConvGeometry,
    conv: tuple[int, ...],
    batch_chunk: int,
    need_input: bool,
    need_offset_mask: bool,
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Input (accumulation dtype), offset and mask gradients; None for those not needed."""
    acc = accumulation_dtype(source.dtype)
    device = source.device
    grad_offset = torch.empty(offset.shape, dtype=source.dtype, device=device) if need_offset_mask else None
    grad_mask = None
    if need_offset_mask and mask is not None:
        grad_mask = torch.empty(mask.shape, dtype=source.dtype, device=device)
    packed_weight = kernel_weight(weight)

    if not (need_input and torch.are_deterministic_algorithms_enabled()):
        grad_input = None
        target_strides: tuple[int, ...] = (0, 0, 0, 0)
        if need_input:
            grad_input = torch.zeros_like(source, dtype=acc, memory_format=torch.channels_last)
            target_strides = grad_input.stride()
        _launch_data_grad(
            grad_output,
            source,
            offset,
            mask,
            packed_weight,
            shape,
            conv,
            grad_input,
            target_strides,
            None,
            grad_offset,
            grad_mask,
        )
        return grad_input, grad_offset, grad_mask

    grad_input = torch.zeros(source.shape, dtype=acc, device=device)
    per_group = shape.in_per_offset_group
    span = shape.kernel_points * shape.out_h * shape.out_w
    for start in range(0, shape.batch, batch_chunk):
        chunk = slice(start, start + batch_chunk)
        m = min(shape.batch, start + batch_chunk) - start
        columns = torch.empty(m, shape.in_channels, span, dtype=acc, device=device)
        # Zeros, not empty: deterministic mode fills empty tensors anyway, and indices that were
        # never written (a compile-only launch, see :mod:`.health`) must still be in range.
        index = torch.zeros(m, shape.offset_groups, 4, span, dtype=torch.int64, device=device)
        corner_weight = torch.empty(m, shape.offset_groups, 4, span, dtype=acc, device=device)
        _launch_data_grad(
            grad_output[chunk],
            source[chunk],
            offset[chunk],
            None if mask is None else mask[chunk],
            packed_weight,
            shape,
            conv,
            columns,
            (*columns.stride()[:2], 0, 0),
            (index, corner_weight),
            None if grad_offset is None else grad_offset[chunk],
            None if grad_mask is None else grad_mask[chunk],
        )
        target = grad_input[chunk].view(m, shape.offset_groups, per_group, -1)
        grouped = columns.view(m, shape.offset_groups, per_group, span)
        expanded = (m, shape.offset_groups, per_group, span)
        for corner in range(4):
            contribution = grouped * corner_weight[:, :, corner, None, :]
            target.scatter_add_(3, index[:, :, corner, None, :].expand(expanded), contribution)
    return grad_input, grad_offset, grad_mask


def _weight_grad(
    grad_output: Tensor,
    source: Tensor,
    offset: Tensor,
    mask: Tensor | None,
    weight: Tensor,
    shape: ConvGeometry,
    conv: tuple[int, ...],
) -> Tensor:
    """Weight gradient (Tensor[C_out, C_in/groups, kh, kw], accumulation dtype)."""
    acc = accumulation_dtype(source.dtype)
    total = shape.batch * shape.out_h * shape.out_w
    if total == 0:
        return torch.zeros(weight.shape, dtype=acc, device=source.device)
    prec = precision(source.dtype)
    cfg = config("weight_grad", shape.channel_run, shape.out_per_group, source.dtype, capability(source.device))
    o_tiles = triton.cdiv(shape.out_per_group, cfg.block_o)
    c_tiles = triton.cdiv(shape.in_per_group, cfg.block_c)
    programs = o_tiles * c_tiles * shape.kernel_points * shape.groups
    pixel_tiles = triton.cdiv(total, cfg.block_p)
    wanted = triton.cdiv(_WEIGHT_GRAD_OCCUPANCY * multiprocessors(source.device), programs)
    splits = max(1, min(pixel_tiles, wanted))
    split_size = triton.cdiv(pixel_tiles, splits) * cfg.block_p
    splits = triton.cdiv(total, split_size)

    partial = torch.empty(splits, *weight.shape[:2], shape.kernel_points, dtype=acc, device=source.device)
    args = (
        grad_output,
        source,
        offset,
        offset if mask is None else mask,
        partial,
        total,
        split_size,
        shape.height,
        shape.width,
        shape.out_h,
        shape.out_w,
        shape.out_channels,
        shape.in_per_group,
        shape.out_per_group,
        shape.in_per_offset_group,
        shape.kernel_w,
        shape.kernel_points,
        c_tiles,
        splits,
        *conv,
        *grad_output.stride(),
        *source.stride(),
        *offset.stride(),
        *_mask_strides(mask),
    )
    options = dict(
        HAS_MASK=mask is not None,
        FLAT=flat_channel_tiles(shape, cfg.block_c),
        ACC=prec.acc,
        IO=prec.io,
        OPERAND=prec.operand,
        DOT_PRECISION=prec.dot_precision,
        **cfg.options(),
    )
    programs = o_tiles * c_tiles * shape.kernel_points * shape.groups * splits
    launch(weight_grad_kernel, programs, args, options, "channel tiles * kernel points * groups * pixel splits")
    return partial.sum(0).view(weight.shape)


def deform_conv2d_backward(
    grad_output: Tensor,
    input: Tensor,
    offset: Tensor,
    mask: Tensor | None,
    weight: Tensor,
    geometry: ConvGeometry,
    needed: NeededGrads,
) -> Grads:
    """Backward kernel (the contract of :mod:`deformconv.ops.deform_conv2d.contract`).

    ``geometry.batch_chunk`` bounds the column buffer of the deterministic input gradient.
    Gradients have the shapes (contiguous) and dtypes of input, offset, mask and weight; None
    for one not asked for.
    """
    shape = geometry
    conv = (*shape.stride, *shape.padding, *shape.dilation)
    need_input, need_offset_mask, need_weight = needed
    batch_chunk = shape.batch_chunk
    check_pixels("batch * out_h * out_w", shape.batch * shape.out_h * shape.out_w)
    check_pixels("height * width", shape.height * shape.width)
    with on_device(input.device):
        source = channels_last(input)
        grad_input = grad_offset = grad_mask = grad_weight = None
        if need_input or need_offset_mask:
            grad_input, grad_offset, grad_mask = _data_grads(
                grad_output, source, offset, mask, weight, shape, conv, batch_chunk, need_input, need_offset_mask
            )
        if need_weight:
            grad_weight = _weight_grad(grad_output, source, offset, mask, weight, shape, conv)
    return Grads(
        None if grad_input is None else grad_input.to(input.dtype).contiguous(),
        grad_offset,
        grad_mask,
        None if grad_weight is None else grad_weight.to(weight.dtype),
    )
