"""``@triton.jit`` kernels of multi-scale deformable attention.

Every kernel reads the level sizes and starts from ``spatial_shapes`` and ``level_start_index``
on the device (no host synchronisation) and walks levels and points in loops. Values are read
in their dtype and accumulated in ``ACC`` (float32, or float64 for float64 input).

Every kernel runs on a 1-d grid (see :func:`deformconv.backends.triton.runtime.launch`) and
decodes its tile indices from the program id, the fastest-varying index first.

- :func:`forward_kernel`: a program computes ``BLOCK_Q`` queries x ``BLOCK_D`` channels of one
  (image, head).
- :func:`backward_kernel`: a program computes the location and weight gradients of ``BLOCK_Q``
  queries of one (image, head) and, unless deterministic, adds the value gradient with atomics
  into a buffer of dtype ``ACC``.
- :func:`value_grad_kernel`: the deterministic value gradient: a program owns the rows of one
  (image, head, level) and ``BLOCK_D`` channels, and walks every query and point in order.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _sample_point(loc_ptr, attn_ptr, k, mask, height, width, ACC: tl.constexpr):
    """Pixel point of location ``k`` (``(x*W - 0.5, y*H - 0.5)``), its floor and fractions, and its weight.

    ``inside`` is False outside ``-1 < x < W``, ``-1 < y < H`` (NaN and Inf included); the
    coordinates are then replaced by 0 so no index is computed from them.
    """
    w_f = width.to(ACC)
    h_f = height.to(ACC)
    x = tl.load(loc_ptr + 2 * k, mask=mask, other=0).to(ACC) * w_f - 0.5
    y = tl.load(loc_ptr + 2 * k + 1, mask=mask, other=0).to(ACC) * h_f - 0.5
    a = tl.load(attn_ptr + k, mask=mask, other=0).to(ACC)
    inside = mask & (x > -1) & (x < w_f) & (y > -1) & (y < h_f)
    x = tl.where(inside, x, 0.0)
    y = tl.where(inside, y, 0.0)
    fx = tl.floor(x)
    fy = tl.floor(y)
    return inside, fx.to(tl.int64), fy.to(tl.int64), x - fx, y - fy, a


@triton.jit
def _corner(c: tl.constexpr, inside, x0, y0, lx, ly, height, width):
    """Corner ``c`` (0: (y0, x0), 1: (y0, x0+1), 2: (y0+1, x0), 3: (y0+1, x0+1)).

    Returns its pixel index (0 where invalid), validity, bilinear weight and the weight's
    derivatives with respect to the pixel x and y.
    """
    if c // 2 == 0:
        cy = y0
        wy = 1 - ly
        sy = -1.0
    else:
        cy = y0 + 1
        wy = ly
        sy = 1.0
    if c % 2 == 0:
        cx = x0
        wx = 1 - lx
        sx = -1.0
    else:
        cx = x0 + 1
        wx = lx
        sx = 1.0
    valid = inside & (cy >= 0) & (cy < height) & (cx >= 0) & (cx < width)
    index = tl.where(valid, cy * width + cx, 0)
    zero = tl.zeros_like(wx)
    weight = tl.where(valid, wy * wx, zero)
    weight_dx = tl.where(valid, sx * wy, zero)
    weight_dy = tl.where(valid, sy * wx, zero)
    return index, valid, weight, weight_dx, weight_dy


@triton.jit
def _query_block(tile, queries, heads, BLOCK_Q: tl.constexpr):
    """Image n, head m, the queries of ``tile`` (query tiles of every (image, head) in order), their
    mask and their output rows ``(n*Lq + q)*M + m``."""
    q_tiles = tl.cdiv(queries, BLOCK_Q)
    pid_nm = tile // q_tiles
    n = (pid_nm // heads).to(tl.int64)
    m = pid_nm % heads
    q = (tile % q_tiles) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    return n, m, q < queries, (n * queries + q) * heads + m


@triton.jit
def _level(shapes_ptr, starts_ptr, level, n, m, num_value, heads):
    """H and W of ``level``, and the row of its first pixel for image n and head m (rows of D channels)."""
    height = tl.load(shapes_ptr + 2 * level)
    width = tl.load(shapes_ptr + 2 * level + 1)
    return height, width, (n * num_value + tl.load(starts_ptr + level)) * heads + m


@triton.jit
def forward_kernel(
    value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, out_ptr,
    num_value, queries, heads, channels, levels, points,
    BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    # Channel tiles of one query tile are neighbours: they share the sampling locations.
    d_tiles = tl.cdiv(channels, BLOCK_D)
    n, m, q_mask, row = _query_block(tl.program_id(0) // d_tiles, queries, heads, BLOCK_Q)
    d = (tl.program_id(0) % d_tiles) * BLOCK_D + tl.arange(0, BLOCK_D)
    d_mask = d < channels
    acc = tl.zeros([BLOCK_Q, BLOCK_D], dtype=ACC)
    for level in range(levels):
        height, width, base = _level(shapes_ptr, starts_ptr, level, n, m, num_value, heads)
        for p in range(points):
            k = (row * levels + level) * points + p
            inside, x0, y0, lx, ly, a = _sample_point(loc_ptr, attn_ptr, k, q_mask, height, width, ACC)
            for c in tl.static_range(4):
                index, valid, weight, _, _ = _corner(c, inside, x0, y0, lx, ly, height, width)
                offsets = ((base + index * heads) * channels)[:, None] + d[None, :]
                v = tl.load(value_ptr + offsets, mask=valid[:, None] & d_mask[None, :], other=0).to(ACC)
                acc += (a * weight)[:, None] * v
    out = out_ptr + (row * channels)[:, None] + d[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=q_mask[:, None] & d_mask[None, :])


@triton.jit
def backward_kernel(
    grad_out_ptr, value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr,
    grad_value_ptr, grad_loc_ptr, grad_attn_ptr,
    num_value, queries, heads, channels, levels, points,
    NEED_COORDS: tl.constexpr, ATOMIC_VALUE: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    n, m, q_mask, row = _query_block(tl.program_id(0), queries, heads, BLOCK_Q)
    for level in range(levels):
        height, width, base = _level(shapes_ptr, starts_ptr, level, n, m, num_value, heads)
        for p in range(points):
            k = (row * levels + level) * points + p
            inside, x0, y0, lx, ly, a = _sample_point(loc_ptr, attn_ptr, k, q_mask, height, width, ACC)
            grad_a = tl.zeros([BLOCK_Q], dtype=ACC)
            grad_x = tl.zeros([BLOCK_Q], dtype=ACC)
            grad_y = tl.zeros([BLOCK_Q], dtype=ACC)
            for c in tl.static_range(4):
                index, valid, weight, weight_dx, weight_dy = _corner(c, inside, x0, y0, lx, ly, height, width)
                # d output / d (this corner's bilinear weight) = <grad_out, value at the corner>.
                dot = tl.zeros([BLOCK_Q], dtype=ACC)
                for d0 in range(0, channels, BLOCK_D):
                    d = d0 + tl.arange(0, BLOCK_D)
                    mask = valid[:, None] & (d < channels)[None, :]
                    g = tl.load(grad_out_ptr + (row * channels)[:, None] + d[None, :], mask=mask, other=0).to(ACC)
                    offsets = ((base + index * heads) * channels)[:, None] + d[None, :]
                    if NEED_COORDS:
                        v = tl.load(value_ptr + offsets, mask=mask, other=0).to(ACC)
                        dot += tl.sum(g * v, axis=1)
                    if ATOMIC_VALUE:
                        tl.atomic_add(grad_value_ptr + offsets, (a * weight)[:, None] * g, mask=mask)
                grad_a += weight * dot
                grad_x += weight_dx * dot
                grad_y += weight_dy * dot
            if NEED_COORDS:
                tl.store(grad_attn_ptr + k, grad_a.to(grad_attn_ptr.dtype.element_ty), mask=q_mask)
                # d(pixel x)/d(location x) = W, likewise for y and H.
                gx = grad_x * a * width.to(ACC)
                gy = grad_y * a * height.to(ACC)
                tl.store(grad_loc_ptr + 2 * k, gx.to(grad_loc_ptr.dtype.element_ty), mask=q_mask)
                tl.store(grad_loc_ptr + 2 * k + 1, gy.to(grad_loc_ptr.dtype.element_ty), mask=q_mask)


@triton.jit
def value_grad_kernel(
    grad_out_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, grad_value_ptr,
    num_value, queries, heads, channels, levels, points,
    BLOCK_D: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    # One thread per channel lane (BLOCK_D >= 32 * num_warps, set by the launcher), so the
    # read-modify-write of a row by consecutive samples is ordered within that thread.
    d_tiles = tl.cdiv(channels, BLOCK_D)
    pid = tl.program_id(0) // d_tiles
    n = (pid // (heads * levels)).to(tl.int64)
    m = (pid // levels) % heads
    level = pid % levels
    d = (tl.program_id(0) % d_tiles) * BLOCK_D + tl.arange(0, BLOCK_D)
    d_mask = d < channels
    height, width, base = _level(shapes_ptr, starts_ptr, level, n, m, num_value, heads)
    for q in range(queries):
        row = (n * queries + q) * heads + m
        g = tl.load(grad_out_ptr + row * channels + d, mask=d_mask, other=0).to(ACC)
        for p in range(points):
            k = (row * levels + level) * points + p
            inside, x0, y0, lx, ly, a = _sample_point(loc_ptr, attn_ptr, k, k >= 0, height, width, ACC)
            for c in tl.static_range(4):
                index, valid, weight, _, _ = _corner(c, inside, x0, y0, lx, ly, height, width)
                target = grad_value_ptr + (base + index * heads) * channels + d
                # Broadcast by a select: a scalar mask "&" a block comes out as int32 data in the interpreter.
                mask = tl.where(valid, d_mask, False)
                old = tl.load(target, mask=mask, other=0)
                tl.store(target, old + a * weight * g, mask=mask)
