"""``@triton.jit`` kernels of DCNv3 and DCNv4 (one set for both layouts, see :class:`PointLayout`).

Channels-last, many channels per program, as these operators were designed for: a program
owns ``BLOCK_Q`` output pixels of one group and all ``D`` channels of that group (``BLOCK_D``
is ``D`` rounded up to a power of two). For each sample point it computes the location and the
bilinear corners once per pixel, then reads each corner as a ``[BLOCK_Q, BLOCK_D]`` tile of
contiguous channels. Both kernels run on a 1-d grid (see
:func:`deformconv.backends.triton.runtime.launch`): program ``i`` owns group ``i % G`` of pixel
tile ``i // G``, so the groups of one pixel tile are neighbours. Everything is computed in
float32 (float64 for float64 inputs).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _sample_point(
    offset_ptr, mask_ptr, taps_ptr, q, q_valid, g, p, out_h, out_w, height, width,
    stride_h, stride_w, origin_x, origin_y, scale,
    offset_start, offset_pixel_stride, offset_group_stride, mask_start, mask_pixel_stride, mask_group_stride,
    ACC: tl.constexpr,
):  # fmt: skip
    """Weight, "reads something" flag, top-left corner and fractions of point ``p`` for the pixels ``q`` [BLOCK_Q]."""
    offset_at = offset_start + q * offset_pixel_stride + g * offset_group_stride + 2 * p
    dx = tl.load(offset_ptr + offset_at, mask=q_valid, other=0.0).to(ACC)
    dy = tl.load(offset_ptr + offset_at + 1, mask=q_valid, other=0.0).to(ACC)
    mask_at = mask_start + q * mask_pixel_stride + g * mask_group_stride + p
    m = tl.load(mask_ptr + mask_at, mask=q_valid, other=0.0).to(ACC)
    tap_x = tl.load(taps_ptr + 2 * p).to(ACC)
    tap_y = tl.load(taps_ptr + 2 * p + 1).to(ACC)
    pixel = q % (out_h * out_w)
    x = ((pixel % out_w) * stride_w + origin_x).to(ACC) + scale * (tap_x + dx)
    y = ((pixel // out_w) * stride_h + origin_y).to(ACC) + scale * (tap_y + dy)
    # Written as "inside" so that NaN and Inf fall outside.
    inside = q_valid & (x > -1.0) & (x < width) & (y > -1.0) & (y < height)
    x = tl.where(inside, x, 0.0)
    y = tl.where(inside, y, 0.0)
    fx = tl.floor(x)
    fy = tl.floor(y)
    return m, inside, fx.to(tl.int32), fy.to(tl.int32), x - fx, y - fy


@triton.jit
def _corner(x0, y0, lx, ly, inside, corner: tl.constexpr, height, width):
    """Column, row, validity and the bilinear factors (and their signs of derivative) of one corner."""
    cx = x0 + (corner % 2)
    cy = y0 + (corner // 2)
    if corner % 2 == 1:
        wx = lx
        sx = 1.0
    else:
        wx = 1.0 - lx
        sx = -1.0
    if corner // 2 == 1:
        wy = ly
        sy = 1.0
    else:
        wy = 1.0 - ly
        sy = -1.0
    valid = inside & (cx >= 0) & (cx < width) & (cy >= 0) & (cy < height)
    return cx, cy, valid, wx, wy, sx, sy


@triton.jit
def _tile(channels, D: tl.constexpr, BLOCK_Q: tl.constexpr):
    """Group ``g`` and output pixels ``q`` [BLOCK_Q] of this program."""
    groups = channels // D
    g = tl.program_id(0) % groups
    q = (tl.program_id(0) // groups) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    return g, q


@triton.jit
def dcn_forward_kernel(
    input_ptr, offset_ptr, mask_ptr, taps_ptr, output_ptr,
    total, out_h, out_w, height, width, channels, stride_h, stride_w, origin_x, origin_y, scale,
    offset_start, offset_pixel_stride, offset_group_stride, mask_start, mask_pixel_stride, mask_group_stride,
    D: tl.constexpr, P: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """output[q, g*D + d] = sum over points and corners of weight * input; cdiv(N*Ho*Wo, BLOCK_Q) * G programs."""
    g, q = _tile(channels, D, BLOCK_Q)
    q_valid = q < total
    d = tl.arange(0, BLOCK_D)
    d_valid = d < D
    image_row = (q // (out_h * out_w)) * height
    acc = tl.zeros((BLOCK_Q, BLOCK_D), dtype=ACC)
    for p in range(P):
        m, inside, x0, y0, lx, ly = _sample_point(
            offset_ptr, mask_ptr, taps_ptr, q, q_valid, g, p, out_h, out_w, height, width,
            stride_h, stride_w, origin_x, origin_y, scale,
            offset_start, offset_pixel_stride, offset_group_stride, mask_start, mask_pixel_stride, mask_group_stride,
            ACC,
        )  # fmt: skip
        for corner in tl.static_range(4):
            cx, cy, valid, wx, wy, sx, sy = _corner(x0, y0, lx, ly, inside, corner, height, width)
            row = ((image_row + cy) * width + cx).to(tl.int64) * channels + g * D
            tile = tl.load(input_ptr + row[:, None] + d[None, :], mask=valid[:, None] & d_valid[None, :], other=0.0)
            acc += (m * wx * wy)[:, None] * tile.to(ACC)
    out = q.to(tl.int64)[:, None] * channels + g * D + d[None, :]
    tl.store(output_ptr + out, acc.to(output_ptr.dtype.element_ty), mask=q_valid[:, None] & d_valid[None, :])


@triton.jit
def dcn_backward_kernel(
    grad_output_ptr, input_ptr, offset_ptr, mask_ptr, taps_ptr, grad_input_ptr, grad_offset_ptr, grad_mask_ptr,
    total, out_h, out_w, height, width, channels, stride_h, stride_w, origin_x, origin_y, scale,
    offset_start, offset_pixel_stride, offset_group_stride, mask_start, mask_pixel_stride, mask_group_stride,
    D: tl.constexpr, P: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr,
    NEED_INPUT: tl.constexpr, NEED_OFFSET_MASK: tl.constexpr,
):  # fmt: skip
    """Gradients; grid as the forward's. A program writes the offset and weight gradients of its own
    pixels and group (written in the layout of offset and mask), and adds the input gradient
    (in ``ACC``) with atomics."""
    g, q = _tile(channels, D, BLOCK_Q)
    q_valid = q < total
    d = tl.arange(0, BLOCK_D)
    d_valid = d < D
    image_row = (q // (out_h * out_w)) * height
    go_at = q.to(tl.int64)[:, None] * channels + g * D + d[None, :]
    go = tl.load(grad_output_ptr + go_at, mask=q_valid[:, None] & d_valid[None, :], other=0.0).to(ACC)
    for p in range(P):
        m, inside, x0, y0, lx, ly = _sample_point(
            offset_ptr, mask_ptr, taps_ptr, q, q_valid, g, p, out_h, out_w, height, width,
            stride_h, stride_w, origin_x, origin_y, scale,
            offset_start, offset_pixel_stride, offset_group_stride, mask_start, mask_pixel_stride, mask_group_stride,
            ACC,
        )  # fmt: skip
        grad_w = tl.zeros((BLOCK_Q,), dtype=ACC)
        grad_x = tl.zeros((BLOCK_Q,), dtype=ACC)
        grad_y = tl.zeros((BLOCK_Q,), dtype=ACC)
        for corner in tl.static_range(4):
            cx, cy, valid, wx, wy, sx, sy = _corner(x0, y0, lx, ly, inside, corner, height, width)
            row = ((image_row + cy) * width + cx).to(tl.int64) * channels + g * D
            tile_mask = valid[:, None] & d_valid[None, :]
            if NEED_OFFSET_MASK:
                tile = tl.load(input_ptr + row[:, None] + d[None, :], mask=tile_mask, other=0.0).to(ACC)
                dot = tl.sum(go * tile, axis=1)
                grad_w += wx * wy * dot
                grad_x += sx * wy * dot
                grad_y += wx * sy * dot
            if NEED_INPUT:
                tl.atomic_add(grad_input_ptr + row[:, None] + d[None, :], (m * wx * wy)[:, None] * go, mask=tile_mask)
        if NEED_OFFSET_MASK:
            offset_at = offset_start + q * offset_pixel_stride + g * offset_group_stride + 2 * p
            kind = grad_offset_ptr.dtype.element_ty
            tl.store(grad_offset_ptr + offset_at, (m * scale * grad_x).to(kind), mask=q_valid)
            tl.store(grad_offset_ptr + offset_at + 1, (m * scale * grad_y).to(kind), mask=q_valid)
            mask_at = mask_start + q * mask_pixel_stride + g * mask_group_stride + p
            tl.store(grad_mask_ptr + mask_at, grad_w.to(kind), mask=q_valid)
