"""``multi_scale_deform_attn`` in pure PyTorch: the ``"reference"`` backend's kernels.

Vectorised over a chunk of images and queries, the heads, the points and the four bilinear
corners; runs on any device. Levels are processed one after the other: each is laid out head
major once per batch chunk (``[n, M, H*W, D]``), its corners gathered for a chunk of queries,
and the result accumulated in the accumulation dtype. The chunks (from the im2col budget, see
:class:`~deformconv.ops.multi_scale_deform_attn.geometry.AttnGeometry`) bound the gathered
buffer whatever the batch size and the number of queries.

A location ``(x, y)`` in ``[0, 1]`` of a level of size ``H x W`` is the pixel point
``(x*W - 0.5, y*H - 0.5)`` (``grid_sample`` with ``align_corners=False``). It reads 0 unless
``-1 < x' < W`` and ``-1 < y' < H``; otherwise its four integer neighbours weigh
``(1-|dx|)(1-|dy|)`` and neighbours outside the map read 0. The "inside" test is False for NaN
and Inf, so such locations read 0 and never index out of bounds. Derivatives with respect to the
location are those of this floor-based formula (a one-sided difference at integers).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from deformconv.backends.registry import register_kernel
from deformconv.ops.multi_scale_deform_attn.contract import BACKWARD, FORWARD, Grads, NeededGrads
from deformconv.ops.multi_scale_deform_attn.geometry import AttnGeometry


@dataclass
class LevelSampling:
    """Where and with which weights the sample points of one level read it.

    For ``n`` images, ``M`` heads, ``q`` queries and ``P`` points:

    Attributes:
        index: Tensor[n, M, q*P*4] (int64): flat index ``y*W + x`` of each corner, clamped into
            the map (its weight is 0 where the corner lies outside).
        weight: Tensor[n, M, q, P, 4]: bilinear weight of each corner.
        weight_dx: Tensor[n, M, q, P, 4]: derivative of ``weight`` with respect to the pixel x.
        weight_dy: Tensor[n, M, q, P, 4]: derivative of ``weight`` with respect to the pixel y.
    """

    index: Tensor
    weight: Tensor
    weight_dx: Tensor
    weight_dy: Tensor


def level_sampling(locations: Tensor, height: int, width: int) -> LevelSampling:
    """The bilinear corners of ``locations`` (Tensor[n, M, q, P, 2], ``(x, y)`` in [0, 1]) on an H x W map."""
    x = locations[..., 0] * width - 0.5
    y = locations[..., 1] * height - 0.5
    # Written as "inside" so that NaN and Inf locations fall outside.
    inside = (x > -1) & (x < width) & (y > -1) & (y < height)
    x = torch.where(inside, x, 0)
    y = torch.where(inside, y, 0)
    x0, y0 = x.floor(), y.floor()
    lx, ly = x - x0, y - y0
    hx, hy = 1 - lx, 1 - ly
    x0, y0 = x0.long(), y0.long()

    # (row step, column step, weight, d weight / dx, d weight / dy) for the four corners.
    corners = (
        (0, 0, hy * hx, -hy, -hx),
        (0, 1, hy * lx, hy, -lx),
        (1, 0, ly * hx, -ly, hx),
        (1, 1, ly * lx, ly, lx),
    )
    index, weight, weight_dx, weight_dy = [], [], [], []
    for step_y, step_x, w, w_dx, w_dy in corners:
        cy, cx = y0 + step_y, x0 + step_x
        valid = (inside & (cy >= 0) & (cy < height) & (cx >= 0) & (cx < width)).to(locations.dtype)
        index.append(cy.clamp(0, height - 1) * width + cx.clamp(0, width - 1))
        weight.append(w * valid)
        weight_dx.append(w_dx * valid)
        weight_dy.append(w_dy * valid)
    n, heads = locations.shape[:2]
    return LevelSampling(
        torch.stack(index, dim=-1).view(n, heads, -1),
        torch.stack(weight, dim=-1),
        torch.stack(weight_dx, dim=-1),
        torch.stack(weight_dy, dim=-1),
    )


def gather_corners(image: Tensor, where: LevelSampling) -> Tensor:
    """Reads the corners: ``image`` Tensor[n, M, H*W, D] -> Tensor[n, M, q, P, 4, D]."""
    n, heads, _, channels = image.shape
    index = where.index[..., None].expand(n, heads, where.index.shape[-1], channels)
    return image.gather(2, index).view(*where.weight.shape, channels)


def _chunks(total: int, size: int) -> Iterator[slice]:
    for start in range(0, total, size):
        yield slice(start, min(total, start + size))


def _levels(geometry: AttnGeometry) -> Iterator[tuple[int, int, int, slice]]:
    """``(level, H, W, rows of value)`` for every level."""
    for level, ((height, width), start) in enumerate(zip(geometry.level_shapes, geometry.level_starts)):
        yield level, height, width, slice(start, start + height * width)


def _head_major(tensor: Tensor, dtype: torch.dtype) -> Tensor:
    """``[n, q, M, ...]`` -> ``[n, M, q, ...]`` in ``dtype``."""
    return tensor.to(dtype).transpose(1, 2)


@register_kernel(FORWARD, backend="reference", priority=0)
def multi_scale_deform_attn_forward(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    geometry: AttnGeometry,
) -> Tensor:
    """Forward op (see :func:`deformconv.multi_scale_deform_attn` for the argument shapes)."""
    acc = geometry.accumulation_dtype
    output = torch.zeros(
        geometry.batch, geometry.queries, geometry.heads, geometry.channels, dtype=acc, device=value.device
    )
    for images in _chunks(geometry.batch, geometry.batch_chunk):
        for level, height, width, rows in _levels(geometry):
            image = value[images, rows].to(acc).transpose(1, 2).contiguous()
            for queries in _chunks(geometry.queries, geometry.query_chunk):
                where = level_sampling(_head_major(sampling_locations[images, queries, :, level], acc), height, width)
                weights = where.weight * _head_major(attention_weights[images, queries, :, level], acc)[..., None]
                corners = gather_corners(image, where)
                output[images, queries] += torch.einsum("nmqpc,nmqpcd->nqmd", weights, corners)
    return output.view(geometry.batch, geometry.queries, geometry.embed_dims).to(value.dtype)


@register_kernel(BACKWARD, backend="reference", priority=0)
def multi_scale_deform_attn_backward(
    grad_output: Tensor,
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    geometry: AttnGeometry,
    needed: NeededGrads,
) -> Grads:
    """Backward op: gradients for value, sampling_locations and attention_weights (None where not needed)."""
    acc = geometry.accumulation_dtype
    grad_value = torch.zeros(value.shape, dtype=acc, device=value.device) if needed.value else None
    grad_locations = torch.zeros_like(sampling_locations) if needed.sampling_locations else None
    grad_weights = torch.zeros_like(attention_weights) if needed.attention_weights else None
    grad_heads = grad_output.view(geometry.batch, geometry.queries, geometry.heads, geometry.channels)

    for images in _chunks(geometry.batch, geometry.batch_chunk):
        for level, height, width, rows in _levels(geometry):
            image = value[images, rows].to(acc).transpose(1, 2).contiguous()
            grad_image = torch.zeros_like(image) if grad_value is not None else None
            for queries in _chunks(geometry.queries, geometry.query_chunk):
                where = level_sampling(_head_major(sampling_locations[images, queries, :, level], acc), height, width)
                weights = _head_major(attention_weights[images, queries, :, level], acc)
                grad_out = _head_major(grad_heads[images, queries], acc)
                if grad_image is not None:
                    contribution = torch.einsum("nmqd,nmqpc->nmqpcd", grad_out, where.weight * weights[..., None])
                    index = where.index[..., None].expand(*where.index.shape, geometry.channels)
                    grad_image.scatter_add_(2, index, contribution.flatten(2, 4))
                if grad_locations is None and grad_weights is None:
                    continue
                # Gradient of the output with respect to each corner's bilinear weight.
                per_corner = torch.einsum("nmqd,nmqpcd->nmqpc", grad_out, gather_corners(image, where))
                if grad_weights is not None:
                    grad = (per_corner * where.weight).sum(-1)
                    grad_weights[images, queries, :, level] = grad.transpose(1, 2).to(grad_weights.dtype)
                if grad_locations is not None:
                    # d(pixel x)/d(location x) = W, likewise for y and H.
                    grad_x = (per_corner * where.weight_dx).sum(-1) * weights * width
                    grad_y = (per_corner * where.weight_dy).sum(-1) * weights * height
                    grad = torch.stack([grad_x, grad_y], dim=-1).transpose(1, 2)
                    grad_locations[images, queries, :, level] = grad.to(grad_locations.dtype)
            if grad_image is not None:
                grad_value[images, rows] = grad_image.transpose(1, 2)
    return Grads(None if grad_value is None else grad_value.to(value.dtype), grad_locations, grad_weights)
