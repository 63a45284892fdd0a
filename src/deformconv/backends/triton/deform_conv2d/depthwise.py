"""Depthwise forward in Triton: many contiguous channels per program.

With ``groups == C_in == C_out`` every output channel reads one input channel, and the general
forward (:mod:`.forward`) would give each program a single channel (tiles of 2 lanes, most of
them masked). Here a program owns a tile of output pixels by a tile of *channels*: it reads the
channels of each corner as one contiguous run of the channels-last input, as DCNv4
(`arXiv:2401.06197 <https://arxiv.org/abs/2401.06197>`_) does, and needs no matrix product:
``out[p, c] = sum over k of w[c, k] * mask[p, g(c), k] * sample(input[c], p, g(c), k)``.

When every channel tile lies inside one offset group (``C / G`` a multiple of the tile, e.g.
``G = 1``), the sample positions are computed once per pixel and kernel point and shared by
the tile's channels; otherwise each (pixel, channel) pair finds its own.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from deformconv.backends.triton.deform_conv2d.configs import config
from deformconv.backends.triton.deform_conv2d.launch import (
    UNSPECIALIZED,
    channels_last,
    kernel_weight,
    precision,
)
from deformconv.backends.triton.deform_conv2d.sampling import bilinear_corners, output_pixels, strided
from deformconv.backends.triton.runtime import capability, check_pixels, launch
from deformconv.ops.deform_conv2d.geometry import ConvGeometry


@triton.jit(do_not_specialize=UNSPECIALIZED)
def _depthwise_forward_kernel(
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
    channels,
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
    TILE_IN_ONE_GROUP: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Grid: (pixel tiles * channel tiles,), the channel tile fastest.

    ``weight_ptr`` is Tensor[kh*kw, 1, C] (see :func:`launch.kernel_weight`).
    """
    c_tiles = tl.cdiv(channels, BLOCK_C)
    c_tile = tl.program_id(0) % c_tiles
    n, pixel, oy, ox, valid = output_pixels((tl.program_id(0) // c_tiles) * BLOCK_P, total, out_h, out_w, BLOCK_P)
    c = c_tile * BLOCK_C + tl.arange(0, BLOCK_C)
    c_valid = c < channels
    both = valid[:, None] & c_valid[None, :]
    offset_at = strided(n, oy, ox, s_off_n, s_off_h, s_off_w)[:, None]
    mask_at = strided(n, oy, ox, s_m_n, s_m_h, s_m_w)[:, None]
    image = (n.to(tl.int64) * s_in_n)[:, None] + (c.to(tl.int64) * s_in_c)[None, :]
    base_y = (oy * stride_h - pad_h)[:, None]
    base_x = (ox * stride_w - pad_w)[:, None]

    acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=ACC)
    for k in range(kernel_points):
        tap_y = k // kernel_w
        if TILE_IN_ONE_GROUP:
            # One offset group for the whole tile: each pixel's offsets and mask are read once.
            point = ((c_tile * BLOCK_C) // in_per_offset_group) * kernel_points + k
            point_valid = valid[:, None]
        else:
            point = (c // in_per_offset_group)[None, :] * kernel_points + k
            point_valid = both
        channel = (2 * point).to(tl.int64) * s_off_c
        dy = tl.load(offset_ptr + offset_at + channel, mask=point_valid, other=0.0).to(ACC)
        dx = tl.load(offset_ptr + offset_at + channel + s_off_c, mask=point_valid, other=0.0).to(ACC)
        y = (base_y + tap_y * dil_h).to(ACC) + dy
        x = (base_x + (k - tap_y * kernel_w) * dil_w).to(ACC) + dx
        row, col, ly, lx, top, bottom, left, right = bilinear_corners(y, x, height, width, both)
        corner = input_ptr + image + row.to(tl.int64) * s_in_h + col.to(tl.int64) * s_in_w
        v00 = tl.load(corner, mask=top & left, other=0.0).to(ACC)
        v01 = tl.load(corner + s_in_w, mask=top & right, other=0.0).to(ACC)
        v10 = tl.load(corner + s_in_h, mask=bottom & left, other=0.0).to(ACC)
        v11 = tl.load(corner + s_in_h + s_in_w, mask=bottom & right, other=0.0).to(ACC)
        sampled = (1 - ly) * ((1 - lx) * v00 + lx * v01) + ly * ((1 - lx) * v10 + lx * v11)
        if HAS_MASK:
            m_at = mask_ptr + mask_at + point.to(tl.int64) * s_m_c
            sampled *= tl.load(m_at, mask=point_valid, other=0.0).to(ACC)
        w = tl.load(weight_ptr + k * channels + c, mask=c_valid, other=0.0).to(ACC)
        acc += sampled * w[None, :]

    if HAS_BIAS:
        acc += tl.load(bias_ptr + c, mask=c_valid, other=0.0).to(ACC)[None, :]
    plane = out_h * out_w
    out = out_ptr + (n.to(tl.int64) * channels * plane + pixel)[:, None] + (c.to(tl.int64) * plane)[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=both)


def depthwise_forward(
    input: Tensor,
    offset: Tensor,
    mask: Tensor | None,
    weight: Tensor,
    bias: Tensor | None,
    shape: ConvGeometry,
) -> Tensor:
    """Forward of a depthwise layer (``shape.depthwise``): Tensor[N, C, Ho, Wo], contiguous."""
    out = torch.empty(shape.batch, shape.out_channels, *shape.out_size, dtype=input.dtype, device=input.device)
    total = shape.batch * shape.out_h * shape.out_w
    if total == 0:
        return out
    check_pixels("batch * out_h * out_w", total)
    source = channels_last(input)
    cfg = config("depthwise", shape.in_channels, 1, input.dtype, capability(input.device))
    mask_t, mask_strides = (offset, (0, 0, 0, 0)) if mask is None else (mask, mask.stride())
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
        shape.in_channels,
        shape.in_per_offset_group,
        shape.kernel_w,
        shape.kernel_points,
        *shape.stride,
        *shape.padding,
        *shape.dilation,
        *source.stride(),
        *offset.stride(),
        *mask_strides,
    )
    options = dict(
        HAS_MASK=mask is not None,
        HAS_BIAS=bias is not None,
        TILE_IN_ONE_GROUP=shape.in_per_offset_group % cfg.block_c == 0,
        ACC=precision(input.dtype).acc,
        BLOCK_P=cfg.block_p,
        BLOCK_C=cfg.block_c,
        **cfg.launch_options(),
    )
    programs = triton.cdiv(total, cfg.block_p) * triton.cdiv(shape.in_channels, cfg.block_c)
    launch(_depthwise_forward_kernel, programs, args, options, "pixel tiles * channel tiles")
    return out
