"""Naive float64 loop oracle of multi-scale deformable attention, written from the formula."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _read(level: Tensor, row: int, col: int) -> Tensor:
    """Pixel (row, col) of ``level`` (Tensor[H, W, D]), zero outside."""
    height, width = level.shape[:2]
    if 0 <= row < height and 0 <= col < width:
        return level[row, col]
    return level.new_zeros(level.shape[2])


def bilinear(level: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """``level`` (Tensor[H, W, D]) at pixel point (x, y): zero unless -1 < x < W and -1 < y < H."""
    height, width = level.shape[:2]
    fx, fy = x.item(), y.item()
    if not (-1 < fx < width and -1 < fy < height):
        return level.new_zeros(level.shape[2])
    x0, y0 = math.floor(fx), math.floor(fy)
    lx, ly = x - x0, y - y0
    return (
        (1 - ly) * (1 - lx) * _read(level, y0, x0)
        + (1 - ly) * lx * _read(level, y0, x0 + 1)
        + ly * (1 - lx) * _read(level, y0 + 1, x0)
        + ly * lx * _read(level, y0 + 1, x0 + 1)
    )


def msda_oracle(value: Tensor, shapes: list[tuple[int, int]], locations: Tensor, weights: Tensor) -> Tensor:
    """y[n, q, m*D:(m+1)*D] = sum over levels l and points p of weight * level_l(x*W - 0.5, y*H - 0.5).

    Differentiable (autograd through the loops gives the floor-based gradients).
    """
    batch, _, heads, channels = value.shape
    queries, levels, points = locations.shape[1], locations.shape[3], locations.shape[4]
    maps, start = [], 0
    for height, width in shapes:
        maps.append(value[:, start : start + height * width].reshape(batch, height, width, heads, channels))
        start += height * width
    rows = []
    for n in range(batch):
        for q in range(queries):
            heads_out = []
            for m in range(heads):
                total = value.new_zeros(channels)
                for level in range(levels):
                    height, width = shapes[level]
                    for p in range(points):
                        x = locations[n, q, m, level, p, 0] * width - 0.5
                        y = locations[n, q, m, level, p, 1] * height - 0.5
                        sample = bilinear(maps[level][n, :, :, m], x, y)
                        total = total + weights[n, q, m, level, p] * sample
                heads_out.append(total)
            rows.append(torch.cat(heads_out))
    if not rows:
        return value.new_zeros(batch, queries, heads * channels)
    return torch.stack(rows).view(batch, queries, heads * channels)
