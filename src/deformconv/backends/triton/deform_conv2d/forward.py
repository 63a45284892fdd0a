"""Forward op on CUDA in Triton: implicit GEMM, or a column buffer plus a cuBLAS matmul.

Two strategies compute the same result:

- ``"implicit"`` (default): each program owns a tile of output pixels (of the whole batch,
  ``N*Ho*Wo`` in one dimension) by a tile of output channels of one group. It loops over the
  kernel points and channel tiles of its group (one flat loop when no channel tile straddles
  two offset groups, e.g. with one offset group), samples the input tile on the fly and feeds
  it to ``tl.dot`` with the matching weight tile. No column buffer is written, so
  ``batch_chunk`` does not apply. Depthwise layers run :mod:`.depthwise` instead.
- ``"columns"``: a Triton kernel samples ``batch_chunk`` images into a column buffer
  (Tensor[C_in*kh*kw, n*Ho*Wo], input dtype), then ``torch.matmul`` multiplies it per group.

Choose with :func:`set_forward_strategy` or the environment variable
``DEFORMCONV_TRITON_FORWARD`` (read when this module is imported).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor

from deformconv import config
from deformconv.backends.triton.deform_conv2d.configs import config as launch_config
from deformconv.backends.triton.deform_conv2d.configs import flat_channel_tiles
from deformconv.backends.triton.deform_conv2d.depthwise import depthwise_forward
from deformconv.backends.triton.deform_conv2d.launch import (
    UNSPECIALIZED,
    channels_last,
    kernel_weight,
    on_device,
    precision,
)
from deformconv.backends.triton.deform_conv2d.sampling import (
    bilinear_corners,
    interpolate,
    load_corners,
    load_modulation,
    output_pixels,
    sample_position,
    tile_product,
)
from deformconv.backends.triton.runtime import capability, check_pixels, launch
from deformconv.ops.deform_conv2d.geometry import ConvGeometry

FORWARD_STRATEGIES = ("implicit", "columns")
_strategy = "implicit"


def set_forward_strategy(name: str) -> None:
    """Selects how the forward op runs on CUDA: ``"implicit"`` or ``"columns"``.

    Raises:
        ValueError: ``name`` is not one of ``FORWARD_STRATEGIES``.
    """
    global _strategy
    if name not in FORWARD_STRATEGIES:
        raise ValueError(f"forward strategy must be one of {FORWARD_STRATEGIES}, got {name!r}")
    _strategy = name


def get_forward_strategy() -> str:
    """The forward strategy in use (see :func:`set_forward_strategy`)."""
    return _strategy


set_forward_strategy(config.environment_value("DEFORMCONV_TRITON_FORWARD") or "implicit")


@triton.jit
def _accumulate_tile(
    acc, input_ptr, offset_ptr, mask_ptr, weight_ptr, n, oy, ox, valid, image, o_global, o_valid,
    c0, c_stop, c_begin, k, og, height, width, out_channels, in_per_group, kernel_w, kernel_points,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, s_in_c, s_in_h, s_in_w,
    s_off_n, s_off_c, s_off_h, s_off_w, s_m_n, s_m_c, s_m_h, s_m_w,
    HAS_MASK: tl.constexpr, ACC: tl.constexpr, IO: tl.constexpr, OPERAND: tl.constexpr,
    USE_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """``acc`` plus the product of channels ``[c0, min(c0 + BLOCK_C, c_stop))`` (one offset group
    ``og``) sampled at kernel point ``k`` with their weight rows."""
    tap_y = k // kernel_w
    point = og * kernel_points + k
    y, x = sample_position(
        offset_ptr, n, oy, ox, valid, point, tap_y, k - tap_y * kernel_w, s_off_n, s_off_c, s_off_h, s_off_w,
        stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, ACC,
    )  # fmt: skip
    row, col, ly, lx, top, bottom, left, right = bilinear_corners(y, x, height, width, valid)
    corner = image + row.to(tl.int64) * s_in_h + col.to(tl.int64) * s_in_w
    c = c0 + tl.arange(0, BLOCK_C)
    c_valid = c < c_stop
    v00, v01, v10, v11 = load_corners(
        input_ptr, corner, c.to(tl.int64) * s_in_c, c_valid, s_in_h, s_in_w, top, bottom, left, right, ACC
    )
    sampled = interpolate(v00, v01, v10, v11, ly, lx)
    if HAS_MASK:
        modulation = load_modulation(mask_ptr, n, oy, ox, valid, point, s_m_n, s_m_c, s_m_h, s_m_w, ACC)
        sampled = sampled * modulation[:, None]
    w_rows = (k * in_per_group + c - c_begin).to(tl.int64) * out_channels
    w = tl.load(weight_ptr + w_rows[:, None] + o_global[None, :], mask=c_valid[:, None] & o_valid[None, :], other=0.0)
    return tile_product(sampled, w, acc, IO, OPERAND, USE_DOT, DOT_PRECISION)


@triton.jit(do_not_specialize=UNSPECIALIZED)
def _implicit_forward_kernel(
    input_ptr,
    offset_ptr,
    mask_ptr,
    weight_ptr,
    bias_ptr,
    out_ptr,
    total,
    height,
    width,
    out_h,
    out_w,
    out_channels,
    in_per_group,
    out_per_group,
    in_per_offset_group,
    kernel_w,
    kernel_points,
    stride_h,
    stride_w,
    pad_h,
    pad_w,
    dil_h,
    dil_w,
    s_in_n,
    s_in_c,
    s_in_h,
    s_in_w,
    s_off_n,
    s_off_c,
    s_off_h,
    s_off_w,
    s_m_n,
    s_m_c,
    s_m_h,
    s_m_w,
    HAS_MASK: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    FLAT: tl.constexpr,
    ACC: tl.constexpr,
    IO: tl.constexpr,
    OPERAND: tl.constexpr,
    USE_DOT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_O: tl.constexpr,
):
    """out[p, o] = sum over (c, k) of sampled[p, c, k] * weight[k, c, o], for one group.

    Grid: (groups * pixel tiles * output-channel tiles,), the output-channel tile fastest, so
    that programs which sample the same pixels run side by side and share the gathers in L2.
    ``weight_ptr`` is Tensor[kh*kw, C_in/groups, C_out] (see :func:`launch.kernel_weight`).
    ``FLAT``: no channel tile of a group straddles two offset groups (see :func:`.configs.flat_channel_tiles`).
    """
    o_tiles = tl.cdiv(out_per_group, BLOCK_O)
    pixel_tiles = tl.cdiv(total, BLOCK_P)
    o_tile = tl.program_id(0) % o_tiles
    tile = (tl.program_id(0) // o_tiles) % pixel_tiles
    group = tl.program_id(0) // (o_tiles * pixel_tiles)
    n, pixel, oy, ox, valid = output_pixels(tile * BLOCK_P, total, out_h, out_w, BLOCK_P)
    o = o_tile * BLOCK_O + tl.arange(0, BLOCK_O)
    o_valid = o < out_per_group
    o_global = group * out_per_group + o
    image = n.to(tl.int64) * s_in_n

    acc = tl.zeros([BLOCK_P, BLOCK_O], dtype=ACC)
    c_begin = group * in_per_group
    c_end = c_begin + in_per_group
    if FLAT:
        # No channel tile straddles offset groups: one loop over (kernel point, channel tile),
        # the longest loop Triton can pipeline, with the sample positions found per step.
        c_tiles = tl.cdiv(in_per_group, BLOCK_C)
        for step in range(kernel_points * c_tiles):
            k = step // c_tiles
            c0 = c_begin + (step - k * c_tiles) * BLOCK_C
            acc = _accumulate_tile(
                acc, input_ptr, offset_ptr, mask_ptr, weight_ptr, n, oy, ox, valid, image, o_global, o_valid,
                c0, c_end, c_begin, k, c0 // in_per_offset_group, height, width, out_channels, in_per_group,
                kernel_w, kernel_points, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, s_in_c, s_in_h, s_in_w,
                s_off_n, s_off_c, s_off_h, s_off_w, s_m_n, s_m_c, s_m_h, s_m_w,
                HAS_MASK, ACC, IO, OPERAND, USE_DOT, DOT_PRECISION, BLOCK_C,
            )  # fmt: skip
    else:
        # The group's channels split into runs that share one offset group.
        for og in range(c_begin // in_per_offset_group, (c_end - 1) // in_per_offset_group + 1):
            lo = tl.maximum(c_begin, og * in_per_offset_group)
            hi = tl.minimum(c_end, og * in_per_offset_group + in_per_offset_group)
            for k in range(kernel_points):
                for c0 in range(lo, hi, BLOCK_C):
                    acc = _accumulate_tile(
                        acc, input_ptr, offset_ptr, mask_ptr, weight_ptr, n, oy, ox, valid, image, o_global,
                        o_valid, c0, hi, c_begin, k, og, height, width, out_channels, in_per_group, kernel_w,
                        kernel_points, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, s_in_c, s_in_h, s_in_w,
                        s_off_n, s_off_c, s_off_h, s_off_w, s_m_n, s_m_c, s_m_h, s_m_w,
                        HAS_MASK, ACC, IO, OPERAND, USE_DOT, DOT_PRECISION, BLOCK_C,
                    )  # fmt: skip

    if HAS_BIAS:
        acc += tl.load(bias_ptr + o_global, mask=o_valid, other=0.0).to(ACC)[None, :]
    plane = out_h * out_w
    out = out_ptr + (n.to(tl.int64) * out_channels * plane + pixel)[:, None] + (o_global.to(tl.int64) * plane)[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=valid[:, None] & o_valid[None, :])


@triton.jit(do_not_specialize=UNSPECIALIZED)
def _columns_kernel(
    input_ptr,
    offset_ptr,
    mask_ptr,
    columns_ptr,
    total,
    height,
    width,
    out_h,
    out_w,
    in_per_offset_group,
    kernel_w,
    kernel_points,
    sample_points,
    stride_h,
    stride_w,
    pad_h,
    pad_w,
    dil_h,
    dil_w,
    s_in_n,
    s_in_c,
    s_in_h,
    s_in_w,
    s_off_n,
    s_off_c,
    s_off_h,
    s_off_w,
    s_m_n,
    s_m_c,
    s_m_h,
    s_m_w,
    HAS_MASK: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """columns[c*kh*kw + k, p] = sampled (and modulated) input channel c at kernel point k.

    Grid: (pixel tiles * offset groups * kernel points,), the sample point fastest.
    """
    point = tl.program_id(0) % sample_points
    og = point // kernel_points
    k = point - og * kernel_points
    start = (tl.program_id(0) // sample_points) * BLOCK_P
    n, pixel, oy, ox, valid = output_pixels(start, total, out_h, out_w, BLOCK_P)
    p = start + tl.arange(0, BLOCK_P)
    tap_y = k // kernel_w
    y, x = sample_position(
        offset_ptr,
        n,
        oy,
        ox,
        valid,
        point,
        tap_y,
        k - tap_y * kernel_w,
        s_off_n,
        s_off_c,
        s_off_h,
        s_off_w,
        stride_h,
        stride_w,
        pad_h,
        pad_w,
        dil_h,
        dil_w,
        ACC,
    )
    row, col, ly, lx, top, bottom, left, right = bilinear_corners(y, x, height, width, valid)
    corner = n.to(tl.int64) * s_in_n + row.to(tl.int64) * s_in_h + col.to(tl.int64) * s_in_w
    if HAS_MASK:
        modulation = load_modulation(mask_ptr, n, oy, ox, valid, point, s_m_n, s_m_c, s_m_h, s_m_w, ACC)
    lo = og * in_per_offset_group
    hi = lo + in_per_offset_group
    for c0 in range(lo, hi, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        c_valid = c < hi
        v00, v01, v10, v11 = load_corners(
            input_ptr, corner, c.to(tl.int64) * s_in_c, c_valid, s_in_h, s_in_w, top, bottom, left, right, ACC
        )
        sampled = interpolate(v00, v01, v10, v11, ly, lx)
        if HAS_MASK:
            sampled = sampled * modulation[:, None]
        rows = (c.to(tl.int64) * kernel_points + k) * total
        tl.store(
            columns_ptr + rows[None, :] + p[:, None],
            sampled.to(columns_ptr.dtype.element_ty),
            mask=valid[:, None] & c_valid[None, :],
        )


def _mask_args(mask: Tensor | None, offset: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    """The mask pointer and strides; without a mask, a placeholder the kernel never reads."""
    if mask is None:
        return offset, (0, 0, 0, 0)
    return mask, mask.stride()


def implicit_forward(
    input: Tensor,
    offset: Tensor,
    mask: Tensor | None,
    weight: Tensor,
    bias: Tensor | None,
    shape: ConvGeometry,
) -> Tensor:
    stride, padding, dilation = shape.stride, shape.padding, shape.dilation
    out = torch.empty(shape.batch, shape.out_channels, shape.out_h, shape.out_w, dtype=input.dtype, device=input.device)
    total = shape.batch * shape.out_h * shape.out_w
    if total == 0:
        return out
    check_pixels("batch * out_h * out_w", total)
    source = channels_last(input)
    prec = precision(input.dtype)
    cfg = launch_config("forward", shape.channel_run, shape.out_per_group, input.dtype, capability(input.device))
    mask_t, mask_strides = _mask_args(mask, offset)
    o_tiles = triton.cdiv(shape.out_per_group, cfg.block_o)
    programs = shape.groups * triton.cdiv(total, cfg.block_p) * o_tiles
    args = (
        source,
        offset,
        mask_t,
        kernel_weight(weight),
        bias.contiguous() if bias is not None else out,
        out,
        total,
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
        stride[0],
        stride[1],
        padding[0],
        padding[1],
        dilation[0],
        dilation[1],
        *source.stride(),
        *offset.stride(),
        *mask_strides,
    )
    options = dict(
        HAS_MASK=mask is not None,
        HAS_BIAS=bias is not None,
        FLAT=flat_channel_tiles(shape, cfg.block_c),
        ACC=prec.acc,
        IO=prec.io,
        OPERAND=prec.operand,
        DOT_PRECISION=prec.dot_precision,
        **cfg.options(),
    )
    launch(_implicit_forward_kernel, programs, args, options, "groups * pixel tiles * output-channel tiles")
    return out


def sample_columns(
    input: Tensor,
    offset: Tensor,
    mask: Tensor | None,
    kernel: tuple[int, int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> Tensor:
    """Samples (and modulates) every input channel at every kernel point: the im2col buffer.

    Args:
        input (Tensor[n, C_in, H, W]): the images of one batch chunk.
        offset (Tensor[n, 2*G*kh*kw, Ho, Wo]): their offsets.
        mask (Tensor[n, G*kh*kw, Ho, Wo], optional): their masks.
        kernel: (kh, kw).

    Returns:
        Tensor[C_in*kh*kw, n*Ho*Wo] in the input dtype; row ``c*kh*kw + k`` is channel ``c`` at
        kernel point ``k``, column ``(i*Ho + oy)*Wo + ox`` is output pixel (oy, ox) of image i.
    """
    n, in_channels, height, width = input.shape
    points = kernel[0] * kernel[1]
    offset_groups = offset.shape[1] // (2 * points)
    out_h, out_w = offset.shape[2:]
    total = n * out_h * out_w
    columns = torch.empty(in_channels * points, total, dtype=input.dtype, device=input.device)
    if total == 0:
        return columns
    check_pixels("batch * out_h * out_w", total)
    source = channels_last(input)
    per_offset_group = in_channels // offset_groups
    cfg = launch_config("columns", per_offset_group, 1, input.dtype, capability(input.device))
    mask_t, mask_strides = _mask_args(mask, offset)
    args = (
        source,
        offset,
        mask_t,
        columns,
        total,
        height,
        width,
        out_h,
        out_w,
        per_offset_group,
        kernel[1],
        points,
        offset_groups * points,
        stride[0],
        stride[1],
        padding[0],
        padding[1],
        dilation[0],
        dilation[1],
        *source.stride(),
        *offset.stride(),
        *mask_strides,
    )
    options = dict(
        HAS_MASK=mask is not None,
        ACC=precision(input.dtype).acc,
        BLOCK_P=cfg.block_p,
        BLOCK_C=cfg.block_c,
        **cfg.launch_options(),
    )
    programs = triton.cdiv(total, cfg.block_p) * offset_groups * points
    launch(_columns_kernel, programs, args, options, "pixel tiles * offset groups * kernel points")
    return columns


def _columns_forward(
    input: Tensor,
    offset: Tensor,
    mask: Tensor | None,
    weight: Tensor,
    bias: Tensor | None,
    shape: ConvGeometry,
) -> Tensor:
    batch_chunk = shape.batch_chunk
    out = torch.empty(shape.batch, shape.out_channels, shape.out_h, shape.out_w, dtype=input.dtype, device=input.device)
    group_weight = weight.reshape(shape.groups, shape.out_per_group, -1)
    for start in range(0, shape.batch, batch_chunk):
        chunk = slice(start, start + batch_chunk)
        m = min(shape.batch, start + batch_chunk) - start
        columns = sample_columns(
            input[chunk],
            offset[chunk],
            None if mask is None else mask[chunk],
            shape.kernel,
            shape.stride,
            shape.padding,
            shape.dilation,
        )
        result = torch.matmul(group_weight, columns.view(shape.groups, -1, columns.shape[1]))
        result = result.view(shape.out_channels, m, shape.out_h, shape.out_w).transpose(0, 1)
        if bias is not None:
            result = result + bias.view(1, -1, 1, 1)
        out[chunk] = result
    return out


def deform_conv2d_forward(
    input: Tensor, offset: Tensor, mask: Tensor | None, weight: Tensor, bias: Tensor | None, geometry: ConvGeometry
) -> Tensor:
    """Forward kernel (the contract of :mod:`deformconv.ops.deform_conv2d.contract`).

    Returns:
        Tensor[N, C_out, Ho, Wo], contiguous, in the input dtype; half types accumulate in
        float32.
    """
    with on_device(input.device):
        if _strategy == "columns":
            return _columns_forward(input, offset, mask, weight, bias, geometry)
        if geometry.depthwise:
            return depthwise_forward(input, offset, mask, weight, bias, geometry)
        return implicit_forward(input, offset, mask, weight, bias, geometry)
