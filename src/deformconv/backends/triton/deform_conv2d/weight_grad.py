"""Gradient of the weight in Triton: an implicit GEMM over output pixels.

``grad_W[o, c, k] = sum over p of grad_out[p, o] * sampled[p, c, k] * mask[p, g(c), k]``, with
the output pixels ``p`` of the whole batch as the reduction dimension. One program owns an
output-channel tile by an input-channel tile of one group at one kernel point, and one slice of
the pixels: the slices ("splits") keep the GPU busy when there are few channel tiles, and each
writes its own partial sum, which the launcher adds up (a fixed order: deterministic).
"""

from __future__ import annotations

import triton
import triton.language as tl

from deformconv.backends.triton.deform_conv2d.launch import UNSPECIALIZED
from deformconv.backends.triton.deform_conv2d.sampling import (
    bilinear_corners,
    interpolate,
    load_corners,
    load_modulation,
    output_pixels,
    sample_position,
    strided,
    tile_product,
)


@triton.jit
def _sample_tile(
    input_ptr, offset_ptr, mask_ptr, n, oy, ox, valid, c, c_valid, channel, k, tap_y, tap_x, og,
    height, width, in_per_offset_group, kernel_points, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    s_in_n, s_in_h, s_in_w, s_off_n, s_off_c, s_off_h, s_off_w, s_m_n, s_m_c, s_m_h, s_m_w,
    HAS_MASK: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """The channels ``c`` of offset group ``og`` sampled (and modulated) at kernel point ``k``:
    Tensor[BLOCK_P, BLOCK_C], 0 for the channels of other offset groups."""
    point = og * kernel_points + k
    y, x = sample_position(
        offset_ptr, n, oy, ox, valid, point, tap_y, tap_x, s_off_n, s_off_c, s_off_h, s_off_w,
        stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, ACC,
    )  # fmt: skip
    row, col, ly, lx, top, bottom, left, right = bilinear_corners(y, x, height, width, valid)
    corner = n.to(tl.int64) * s_in_n + row.to(tl.int64) * s_in_h + col.to(tl.int64) * s_in_w
    in_group = c_valid & (c >= og * in_per_offset_group) & (c < og * in_per_offset_group + in_per_offset_group)
    v00, v01, v10, v11 = load_corners(
        input_ptr, corner, channel, in_group, s_in_h, s_in_w, top, bottom, left, right, ACC
    )
    sampled = interpolate(v00, v01, v10, v11, ly, lx)
    if HAS_MASK:
        sampled *= load_modulation(mask_ptr, n, oy, ox, valid, point, s_m_n, s_m_c, s_m_h, s_m_w, ACC)[:, None]
    return sampled


@triton.jit(do_not_specialize=UNSPECIALIZED)
def weight_grad_kernel(
    grad_out_ptr,
    input_ptr,
    offset_ptr,
    mask_ptr,
    partial_ptr,
    total,
    split_size,
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
    c_tiles,
    splits,
    stride_h,
    stride_w,
    pad_h,
    pad_w,
    dil_h,
    dil_w,
    s_go_n,
    s_go_c,
    s_go_h,
    s_go_w,
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
    """Grid: (groups * splits * kernel points * output-channel tiles * input-channel tiles,).

    ``partial_ptr`` is Tensor[splits, C_out, C_in/groups, kh*kw] (accumulation dtype,
    contiguous); split ``s`` sums the pixels ``[s*split_size, (s+1)*split_size)``. ``FLAT``: no
    channel tile straddles two offset groups.
    """
    channel_tiles = tl.cdiv(out_per_group, BLOCK_O) * c_tiles
    pid = tl.program_id(0)
    o_tile = (pid % channel_tiles) // c_tiles
    c_tile = pid % c_tiles
    k = (pid // channel_tiles) % kernel_points
    split = (pid // (channel_tiles * kernel_points)) % splits
    group = pid // (channel_tiles * kernel_points * splits)
    tap_y = k // kernel_w
    tap_x = k - tap_y * kernel_w

    o = o_tile * BLOCK_O + tl.arange(0, BLOCK_O)
    o_valid = o < out_per_group
    o_global = group * out_per_group + o
    c_local = c_tile * BLOCK_C + tl.arange(0, BLOCK_C)
    c = group * in_per_group + c_local
    c_valid = c_local < in_per_group
    channel = c.to(tl.int64) * s_in_c
    c_first = group * in_per_group + c_tile * BLOCK_C
    c_last = tl.minimum(c_first + BLOCK_C, group * in_per_group + in_per_group) - 1

    acc = tl.zeros([BLOCK_O, BLOCK_C], dtype=ACC)
    p_begin = split * split_size
    p_end = tl.minimum(total, p_begin + split_size)
    for p0 in range(p_begin, p_end, BLOCK_P):
        n, pixel, oy, ox, valid = output_pixels(p0, p_end, out_h, out_w, BLOCK_P)
        grad_out_at = strided(n, oy, ox, s_go_n, s_go_h, s_go_w)
        grad_out = tl.load(
            grad_out_ptr + grad_out_at[None, :] + (o_global.to(tl.int64) * s_go_c)[:, None],
            mask=o_valid[:, None] & valid[None, :],
            other=0.0,
        )
        if FLAT:
            # The tile lies in one offset group: one sample per pixel, and the pixel loop is
            # the innermost loop (the one Triton pipelines).
            columns = _sample_tile(
                input_ptr, offset_ptr, mask_ptr, n, oy, ox, valid, c, c_valid, channel, k, tap_y, tap_x,
                c_first // in_per_offset_group, height, width, in_per_offset_group, kernel_points,
                stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, s_in_n, s_in_h, s_in_w,
                s_off_n, s_off_c, s_off_h, s_off_w, s_m_n, s_m_c, s_m_h, s_m_w, HAS_MASK, ACC,
            )  # fmt: skip
        else:
            # The tile straddles offset groups: it samples once per offset group it touches.
            columns = tl.zeros([BLOCK_P, BLOCK_C], dtype=ACC)
            for og in range(c_first // in_per_offset_group, c_last // in_per_offset_group + 1):
                columns += _sample_tile(
                    input_ptr, offset_ptr, mask_ptr, n, oy, ox, valid, c, c_valid, channel, k, tap_y, tap_x,
                    og, height, width, in_per_offset_group, kernel_points,
                    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, s_in_n, s_in_h, s_in_w,
                    s_off_n, s_off_c, s_off_h, s_off_w, s_m_n, s_m_c, s_m_h, s_m_w, HAS_MASK, ACC,
                )  # fmt: skip
        acc = tile_product(grad_out, columns, acc, IO, OPERAND, USE_DOT, DOT_PRECISION)

    rows = (split * out_channels + o_global).to(tl.int64) * in_per_group
    out = partial_ptr + ((rows[:, None] + c_local[None, :]) * kernel_points + k)
    tl.store(out, acc, mask=o_valid[:, None] & c_valid[None, :])
