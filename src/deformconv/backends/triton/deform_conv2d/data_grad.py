"""Gradients of input, offset and mask in Triton.

One program owns a tile of output pixels (of the whole batch) for one offset group ``g`` and
one kernel point ``k``. For every channel tile of the offset group it forms the gradient of the
sampled columns with ``tl.dot``, ``grad_col[p, c] = sum over o of grad_out[p, o] * W[o, c, k]``
(over the output channels of the channel's group), and then

- accumulates, over the channels, the mask gradient ``grad_col * sample`` and the offset
  gradients ``grad_col * mask * d(sample)/dy`` (and ``dx``): a program sees every channel of
  its offset group, so these are plain stores, with no atomics;
- spreads ``grad_col * mask * corner weight`` onto the four corners of each sample point in
  the input gradient. By default with ``tl.atomic_add`` (fast, order not fixed); in
  deterministic mode it stores ``grad_col * mask`` and the corners' indices and weights
  instead, and :mod:`.backward` adds them with ``Tensor.scatter_add_`` in a fixed order.
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
def _scatter_corner(grad_input_ptr, corner_offset, channel_offset, valid, value, weight):
    """Atomically adds ``value * weight`` to one corner of every sample point of a tile."""
    tl.atomic_add(
        grad_input_ptr + corner_offset[:, None] + channel_offset[None, :],
        value * weight[:, None],
        mask=valid,
        sem="relaxed",  # only the sum matters, not the order relative to other memory accesses
    )


@triton.jit
def _store_corner(index_ptr, weight_ptr, at, flat, inside, weight, valid):
    """Stores the flat index ``y*W + x`` of one corner and its weight (0 and 0 if outside)."""
    tl.store(index_ptr + at, tl.where(inside, flat, 0).to(tl.int64), mask=valid)
    tl.store(weight_ptr + at, tl.where(inside, weight, 0.0), mask=valid)


@triton.jit(do_not_specialize=UNSPECIALIZED)
def data_grad_kernel(
    grad_out_ptr,
    input_ptr,
    offset_ptr,
    mask_ptr,
    weight_ptr,
    grad_input_ptr,
    grad_offset_ptr,
    grad_mask_ptr,
    corner_index_ptr,
    corner_weight_ptr,
    total,
    height,
    width,
    out_h,
    out_w,
    out_channels,
    in_per_group,
    out_per_group,
    in_per_offset_group,
    offset_groups,
    kernel_w,
    kernel_points,
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
    s_gi_n,
    s_gi_c,
    s_gi_h,
    s_gi_w,
    HAS_MASK: tl.constexpr,
    NEED_INPUT: tl.constexpr,
    NEED_OFFSET_MASK: tl.constexpr,
    DETERMINISTIC: tl.constexpr,
    ACC: tl.constexpr,
    IO: tl.constexpr,
    OPERAND: tl.constexpr,
    USE_DOT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_O: tl.constexpr,
):
    """Grid: (pixel tiles * offset groups * kernel points,), the sample point fastest.

    ``weight_ptr`` is Tensor[kh*kw, C_in/groups, C_out] (see :func:`launch.kernel_weight`).
    Outputs, ``grad_offset`` (Tensor[N, 2*G*kh*kw, Ho, Wo]) and ``grad_mask``
    (Tensor[N, G*kh*kw, Ho, Wo]) contiguous, and for the input gradient:

    - without ``DETERMINISTIC``, ``grad_input_ptr`` is the input gradient (Tensor[N, C_in, H, W],
      accumulation dtype, strides ``s_gi_*``), zero-filled, added to atomically;
    - with ``DETERMINISTIC``, ``grad_input_ptr`` receives the column gradient ``grad_col * mask``
      (Tensor[N, C_in, kh*kw, Ho*Wo] with ``s_gi_n = C_in*kh*kw*Ho*Wo`` and
      ``s_gi_c = kh*kw*Ho*Wo``), and ``corner_index_ptr`` / ``corner_weight_ptr`` the flat
      index ``y*W + x`` (int64) and bilinear weight of each corner
      (Tensor[N, G, 4, kh*kw, Ho*Wo]; weight 0 for a corner outside the image).
    """
    sample_points = offset_groups * kernel_points
    point = tl.program_id(0) % sample_points
    og = point // kernel_points
    k = point - og * kernel_points
    tap_y = k // kernel_w
    start = (tl.program_id(0) // sample_points) * BLOCK_P
    n, pixel, oy, ox, valid = output_pixels(start, total, out_h, out_w, BLOCK_P)
    image = n.to(tl.int64)
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
    hy = 1 - ly
    hx = 1 - lx
    corner = image * s_in_n + row.to(tl.int64) * s_in_h + col.to(tl.int64) * s_in_w
    grad_corner = image * s_gi_n + row.to(tl.int64) * s_gi_h + col.to(tl.int64) * s_gi_w
    if HAS_MASK:
        modulation = load_modulation(mask_ptr, n, oy, ox, valid, point, s_m_n, s_m_c, s_m_h, s_m_w, ACC)
    grad_y = tl.zeros([BLOCK_P], dtype=ACC)
    grad_x = tl.zeros([BLOCK_P], dtype=ACC)
    grad_m = tl.zeros([BLOCK_P], dtype=ACC)
    plane = out_h * out_w
    grad_out_at = strided(n, oy, ox, s_go_n, s_go_h, s_go_w)

    c_lo = og * in_per_offset_group
    c_hi = c_lo + in_per_offset_group
    # The offset group's channels split into runs that share one group (one weight slice).
    for group in range(c_lo // in_per_group, (c_hi - 1) // in_per_group + 1):
        lo = tl.maximum(c_lo, group * in_per_group)
        hi = tl.minimum(c_hi, group * in_per_group + in_per_group)
        for c0 in range(lo, hi, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            c_valid = c < hi
            w_cols = (k * in_per_group + c - group * in_per_group).to(tl.int64) * out_channels
            grad_col = tl.zeros([BLOCK_P, BLOCK_C], dtype=ACC)
            for o0 in range(0, out_per_group, BLOCK_O):
                o = group * out_per_group + o0 + tl.arange(0, BLOCK_O)
                o_valid = o < group * out_per_group + out_per_group
                grad_out = tl.load(
                    grad_out_ptr + grad_out_at[:, None] + (o.to(tl.int64) * s_go_c)[None, :],
                    mask=valid[:, None] & o_valid[None, :],
                    other=0.0,
                )
                w = tl.load(
                    weight_ptr + w_cols[None, :] + o[:, None],
                    mask=o_valid[:, None] & c_valid[None, :],
                    other=0.0,
                )
                grad_col = tile_product(grad_out, w, grad_col, IO, OPERAND, USE_DOT, DOT_PRECISION)

            if NEED_OFFSET_MASK:
                v00, v01, v10, v11 = load_corners(
                    input_ptr,
                    corner,
                    c.to(tl.int64) * s_in_c,
                    c_valid,
                    s_in_h,
                    s_in_w,
                    top,
                    bottom,
                    left,
                    right,
                    ACC,
                )
                if HAS_MASK:
                    grad_m += tl.sum(grad_col * interpolate(v00, v01, v10, v11, ly, lx), axis=1)
            if HAS_MASK:
                grad_col = grad_col * modulation[:, None]
            if NEED_OFFSET_MASK:
                # d(sample)/dy and d(sample)/dx of the floor-based bilinear formula.
                d_y = (v10 - v00) * hx[:, None] + (v11 - v01) * lx[:, None]
                d_x = (v01 - v00) * hy[:, None] + (v11 - v10) * ly[:, None]
                grad_y += tl.sum(grad_col * d_y, axis=1)
                grad_x += tl.sum(grad_col * d_x, axis=1)
            if NEED_INPUT:
                if DETERMINISTIC:
                    at = image * s_gi_n + k.to(tl.int64) * plane + pixel
                    tl.store(
                        grad_input_ptr + at[:, None] + (c.to(tl.int64) * s_gi_c)[None, :],
                        grad_col,
                        mask=valid[:, None] & c_valid[None, :],
                    )
                else:
                    channel = c.to(tl.int64) * s_gi_c
                    chan = c_valid[None, :]
                    _scatter_corner(
                        grad_input_ptr, grad_corner, channel, (top & left)[:, None] & chan, grad_col, hy * hx
                    )
                    _scatter_corner(
                        grad_input_ptr, grad_corner + s_gi_w, channel, (top & right)[:, None] & chan, grad_col, hy * lx
                    )
                    _scatter_corner(
                        grad_input_ptr,
                        grad_corner + s_gi_h,
                        channel,
                        (bottom & left)[:, None] & chan,
                        grad_col,
                        ly * hx,
                    )
                    _scatter_corner(
                        grad_input_ptr,
                        grad_corner + s_gi_h + s_gi_w,
                        channel,
                        (bottom & right)[:, None] & chan,
                        grad_col,
                        ly * lx,
                    )

    if NEED_INPUT and DETERMINISTIC:
        step = kernel_points * plane
        at = (image * offset_groups + og) * 4 * step + k.to(tl.int64) * plane + pixel
        flat = row.to(tl.int64) * width + col
        _store_corner(corner_index_ptr, corner_weight_ptr, at, flat, top & left, hy * hx, valid)
        _store_corner(corner_index_ptr, corner_weight_ptr, at + step, flat + 1, top & right, hy * lx, valid)
        _store_corner(corner_index_ptr, corner_weight_ptr, at + 2 * step, flat + width, bottom & left, ly * hx, valid)
        _store_corner(
            corner_index_ptr, corner_weight_ptr, at + 3 * step, flat + width + 1, bottom & right, ly * lx, valid
        )
    if NEED_OFFSET_MASK:
        points = offset_groups * kernel_points
        at = (image * 2 * points + 2 * point) * plane + pixel
        tl.store(grad_offset_ptr + at, grad_y.to(grad_offset_ptr.dtype.element_ty), mask=valid)
        tl.store(grad_offset_ptr + at + plane, grad_x.to(grad_offset_ptr.dtype.element_ty), mask=valid)
        if HAS_MASK:
            at = (image * points + point) * plane + pixel
            tl.store(grad_mask_ptr + at, grad_m.to(grad_mask_ptr.dtype.element_ty), mask=valid)
