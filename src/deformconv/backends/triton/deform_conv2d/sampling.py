"""``@triton.jit`` helpers shared by the kernels: where a sample point reads, and tile products.

Bilinear sampling follows ``torchvision.ops.deform_conv2d`` (see :mod:`deformconv.backends.reference.deform_conv2d`):
a sample point ``(y, x)`` reads 0 unless ``-1 < y < H`` and ``-1 < x < W``; otherwise its
corners ``floor(y) + {0, 1}`` x ``floor(x) + {0, 1}`` weigh ``(1-|dy|)(1-|dx|)`` and corners
outside the image read 0. The test is written as "inside", which is False for NaN and Inf,
and such points are moved to (0, 0) before the floor, so no index is ever computed from a
non-finite coordinate. Corner loads are masked, so no address outside the image is read.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def output_pixels(start, total, out_h, out_w, BLOCK_P: tl.constexpr):
    """Decodes ``BLOCK_P`` flat output pixels ``p = (n*Ho + oy)*Wo + ox`` from ``start``.

    Returns:
        (n, pixel, oy, ox, valid): Tensor[BLOCK_P] each; ``pixel = oy*Wo + ox`` and ``valid``
        is ``p < total``.
    """
    p = start + tl.arange(0, BLOCK_P)
    valid = p < total
    per_image = out_h * out_w
    n = p // per_image
    pixel = p - n * per_image
    oy = pixel // out_w
    ox = pixel - oy * out_w
    return n, pixel, oy, ox, valid


@triton.jit
def strided(n, oy, ox, s_n, s_h, s_w):
    """Element offset ``n*s_n + oy*s_h + ox*s_w`` (int64) of output pixels in a strided tensor.

    Every product is 64-bit: one image of a tensor may hold more than 2^31 elements, and a
    view may have strides that large.
    """
    return n.to(tl.int64) * s_n + oy.to(tl.int64) * s_h + ox.to(tl.int64) * s_w


@triton.jit
def sample_position(
    offset_ptr,
    n,
    oy,
    ox,
    valid,
    point_channel,
    tap_y,
    tap_x,
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
    ACC: tl.constexpr,
):
    """Sample coordinates of one kernel point of one offset group for a tile of pixels.

    Args:
        offset_ptr: offset (Tensor[N, 2*G*kh*kw, Ho, Wo]) with strides ``s_off_*``.
        point_channel: ``g*kh*kw + k``: the (dy, dx) pair sits at channels ``2*point_channel``
            and ``2*point_channel + 1``.
        tap_y, tap_x: the kernel point's row ``i`` and column ``j``.

    Returns:
        (y, x): Tensor[BLOCK_P] in ``ACC``.
    """
    base = offset_ptr + strided(n, oy, ox, s_off_n, s_off_h, s_off_w) + (2 * point_channel).to(tl.int64) * s_off_c
    dy = tl.load(base, mask=valid, other=0.0).to(ACC)
    dx = tl.load(base + s_off_c, mask=valid, other=0.0).to(ACC)
    y = (oy * stride_h - pad_h + tap_y * dil_h).to(ACC) + dy
    x = (ox * stride_w - pad_w + tap_x * dil_w).to(ACC) + dx
    return y, x


@triton.jit
def load_modulation(mask_ptr, n, oy, ox, valid, point_channel, s_m_n, s_m_c, s_m_h, s_m_w, ACC: tl.constexpr):
    """The mask (Tensor[N, G*kh*kw, Ho, Wo]) at channel ``point_channel`` for a tile of pixels."""
    ptr = mask_ptr + strided(n, oy, ox, s_m_n, s_m_h, s_m_w) + point_channel.to(tl.int64) * s_m_c
    return tl.load(ptr, mask=valid, other=0.0).to(ACC)


@triton.jit
def bilinear_corners(y, x, height, width, valid):
    """The top-left corner of each sample point, its fractions and which corners are inside.

    Returns:
        (row, col, ly, lx, top, bottom, left, right): ``row``/``col`` (int32) of the top-left
        corner, the fractional parts ``ly``/``lx``, and whether the top row ``row``, the bottom
        row ``row+1``, the left column ``col`` and the right column ``col+1`` lie inside the
        image (all False for a point that reads 0).
    """
    inside = valid & (y > -1) & (y < height) & (x > -1) & (x < width)
    y = tl.where(inside, y, 0.0)
    x = tl.where(inside, x, 0.0)
    y_low = tl.floor(y)
    x_low = tl.floor(x)
    row = y_low.to(tl.int32)
    col = x_low.to(tl.int32)
    # -1 < y < H gives -1 <= row <= H-1, so only these two tests per axis can fail.
    top = inside & (row >= 0)
    bottom = inside & (row + 1 < height)
    left = inside & (col >= 0)
    right = inside & (col + 1 < width)
    return row, col, y - y_low, x - x_low, top, bottom, left, right


@triton.jit
def load_corners(
    input_ptr,
    corner_offset,
    channel_offset,
    channel_valid,
    s_in_h,
    s_in_w,
    top,
    bottom,
    left,
    right,
    ACC: tl.constexpr,
):
    """Reads the four corners of a tile of sample points for a tile of channels.

    Args:
        corner_offset: Tensor[BLOCK_P] (int64): element offset of each top-left corner
            (``n*s_n + row*s_h + col*s_w``).
        channel_offset: Tensor[BLOCK_C]: ``c*s_c`` of each channel.
        channel_valid: Tensor[BLOCK_C] (bool).

    Returns:
        (v00, v01, v10, v11): Tensor[BLOCK_P, BLOCK_C] in ``ACC``, 0 where a corner is outside.
    """
    ptr = input_ptr + corner_offset[:, None] + channel_offset[None, :]
    chan = channel_valid[None, :]
    v00 = tl.load(ptr, mask=(top & left)[:, None] & chan, other=0.0).to(ACC)
    v01 = tl.load(ptr + s_in_w, mask=(top & right)[:, None] & chan, other=0.0).to(ACC)
    v10 = tl.load(ptr + s_in_h, mask=(bottom & left)[:, None] & chan, other=0.0).to(ACC)
    v11 = tl.load(ptr + s_in_h + s_in_w, mask=(bottom & right)[:, None] & chan, other=0.0).to(ACC)
    return v00, v01, v10, v11


@triton.jit
def interpolate(v00, v01, v10, v11, ly, lx):
    """Bilinear value of corner tiles (Tensor[BLOCK_P, BLOCK_C]) with fractions (Tensor[BLOCK_P])."""
    ly = ly[:, None]
    lx = lx[:, None]
    hy = 1 - ly
    hx = 1 - lx
    return hy * (hx * v00 + lx * v01) + ly * (hx * v10 + lx * v11)


@triton.jit
def tile_product(
    a,
    b,
    acc,
    ROUND: tl.constexpr,
    OPERAND: tl.constexpr,
    USE_DOT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """``acc + a @ b`` for a Tensor[M, K] and b Tensor[K, N], accumulated in ``acc``'s dtype.

    With ``USE_DOT`` the operands are rounded to ``ROUND`` (the input dtype) and multiplied as
    ``OPERAND`` (the same dtype on a GPU: tensor cores for half types); otherwise (tiles
    narrower than 16) it broadcasts and sums in the accumulation dtype.
    """
    if USE_DOT:
        a = a.to(ROUND).to(OPERAND)
        b = b.to(ROUND).to(OPERAND)
        return tl.dot(a, b, acc, input_precision=DOT_PRECISION)
    else:
        return acc + tl.sum(a.to(acc.dtype)[:, :, None] * b.to(acc.dtype)[None, :, :], axis=1)
