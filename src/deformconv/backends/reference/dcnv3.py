"""``dcnv3`` in pure PyTorch: the ``"reference"`` backend's kernels, and the core that ``dcnv4`` shares.

Vectorised over the batch chunk, the output pixels, the groups and the sample points; runs on
any device. Every sample point reads its four bilinear corners as rows of the channels-last
input seen as ``[N*H*W*G, D]`` (one ``index_select``), and one batched matrix product per
group sums corners times weights. Bilinear sampling reads 0 outside the image: a point reads 0
unless ``-1 < x < W`` and ``-1 < y < H`` (False for NaN and Inf, which therefore never index),
and a corner outside the image reads 0. Derivatives with respect to the sample coordinates are
those of the floor-based formula (a one-sided difference at integers), as in the official kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from deformconv.backends.registry import register_kernel
from deformconv.ops.dcnv3.contract import BACKWARD, FORWARD, Grads, NeededGrads
from deformconv.ops.dcnv3.geometry import DCNGeometry, sample_locations


@dataclass
class Corners:
    """The four bilinear corners of every sample point of a batch chunk (``n`` images).

    Attributes:
        index (Tensor[n, H_out, W_out, G, 4, P], int64): row of each corner in the input seen as
            ``[n*H*W*G, D]`` (clamped into the image; its weight is 0 where it lies outside).
        weight (Tensor[n, H_out, W_out, G, 4, P]): bilinear weight of each corner.
        weight_dx, weight_dy: derivatives of ``weight`` with respect to the sample's x and y.
    """

    index: Tensor
    weight: Tensor
    weight_dx: Tensor
    weight_dy: Tensor


def corners(offset: Tensor, geometry: DCNGeometry) -> Corners:
    """Bilinear corners of the sample points whose offsets are ``offset`` (Tensor[n, H_out, W_out, G, P, 2])."""
    n, out_h, out_w, group, points, _ = offset.shape
    height, width = geometry.in_size
    location = sample_locations(offset, geometry)
    x, y = location[..., 0], location[..., 1]
    # Written as "inside" so that NaN and Inf coordinates fall outside.
    inside = (x > -1) & (x < width) & (y > -1) & (y < height)
    x, y = torch.where(inside, x, 0), torch.where(inside, y, 0)
    x0, y0 = x.floor(), y.floor()
    lx, ly = x - x0, y - y0
    hx, hy = 1 - lx, 1 - ly
    x0, y0 = x0.long(), y0.long()
    image = torch.arange(n, device=offset.device).view(n, 1, 1, 1, 1)
    group_index = torch.arange(group, device=offset.device).view(1, 1, 1, group, 1)

    # (column step, row step, weight, d weight / dx, d weight / dy) for the four corners.
    steps = ((0, 0, hx * hy, -hy, -hx), (1, 0, lx * hy, hy, -lx), (0, 1, hx * ly, -ly, hx), (1, 1, lx * ly, ly, lx))
    index, weight, weight_dx, weight_dy = [], [], [], []
    for step_x, step_y, w, w_dx, w_dy in steps:
        cx, cy = x0 + step_x, y0 + step_y
        valid = (inside & (cx >= 0) & (cx < width) & (cy >= 0) & (cy < height)).to(offset.dtype)
        pixel = (image * height + cy.clamp(0, height - 1)) * width + cx.clamp(0, width - 1)
        index.append(pixel * group + group_index)
        weight.append(w * valid)
        weight_dx.append(w_dx * valid)
        weight_dy.append(w_dy * valid)
    return Corners(*(torch.stack(parts, dim=4) for parts in (index, weight, weight_dx, weight_dy)))


def _chunks(geometry: DCNGeometry):
    for start in range(0, geometry.batch, geometry.batch_chunk):
        yield slice(start, min(geometry.batch, start + geometry.batch_chunk))


def _rows(input: Tensor, where: Corners, geometry: DCNGeometry) -> Tensor:
    """The corners' input rows, Tensor[n, H_out, W_out, G, 4*P, D] (in the dtype of ``input``)."""
    n, out_h, out_w, group, _, points = where.index.shape
    rows = input.reshape(-1, geometry.group_channels).index_select(0, where.index.flatten())
    return rows.view(n, out_h, out_w, group, 4 * points, geometry.group_channels)


def forward_core(input: Tensor, offset: Tensor, weight: Tensor, geometry: DCNGeometry) -> Tensor:
    """DCNv3's forward from offsets and weights in any layout.

    Args:
        input (Tensor[N, H, W, G*D]): channels-last input.
        offset (Tensor[N, H_out, W_out, G, P, 2]): ``(dx, dy)`` per sample point, any strides.
        weight (Tensor[N, H_out, W_out, G, P]): weight per sample point, any strides.

    Returns:
        Tensor[N, H_out, W_out, G*D] in the dtype of ``input``.
    """
    acc = geometry.accumulation_dtype
    output = input.new_empty(geometry.batch, *geometry.out_size, geometry.channels)
    for chunk in _chunks(geometry):
        where = corners(offset[chunk].to(acc), geometry)
        corner_weight = (where.weight * weight[chunk].to(acc).unsqueeze(4)).flatten(4).unsqueeze(-2)
        rows = _rows(input[chunk].to(acc), where, geometry)
        output[chunk] = torch.matmul(corner_weight, rows).flatten(3)
    return output


def backward_core(
    grad_output: Tensor, input: Tensor, offset: Tensor, weight: Tensor, geometry: DCNGeometry, needed: NeededGrads
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Gradients of :func:`forward_core` for input, offset and weight (same shapes and dtypes; None if not needed)."""
    acc = geometry.accumulation_dtype
    group, group_channels = geometry.group, geometry.group_channels
    grad_input = torch.zeros(input.shape, dtype=acc, device=input.device) if needed.input else None
    grad_offset = input.new_empty(offset.shape) if needed.offset_mask else None
    grad_weight = input.new_empty(weight.shape) if needed.offset_mask else None
    for chunk in _chunks(geometry):
        where = corners(offset[chunk].to(acc), geometry)
        chunk_weight = weight[chunk].to(acc)
        grad_out = grad_output[chunk].to(acc).unflatten(-1, (group, group_channels))
        if grad_offset is not None:
            rows = _rows(input[chunk].to(acc), where, geometry)
            # d loss / d corner value weight, per corner: the corner's row times grad_output.
            grad_corner = torch.matmul(rows, grad_out.unsqueeze(-1)).view(where.weight.shape)
            grad_weight[chunk] = (grad_corner * where.weight).sum(4)
            scale = geometry.offset_scale * chunk_weight
            grad_x = scale * (grad_corner * where.weight_dx).sum(4)
            grad_y = scale * (grad_corner * where.weight_dy).sum(4)
            grad_offset[chunk] = torch.stack((grad_x, grad_y), dim=-1)
        if grad_input is not None:
            corner_weight = (where.weight * chunk_weight.unsqueeze(4)).flatten(4)
            contribution = corner_weight.unsqueeze(-1) * grad_out.unsqueeze(-2)
            target = grad_input[chunk].view(-1, group_channels)
            target.index_add_(0, where.index.flatten(), contribution.view(-1, group_channels))
    return (None if grad_input is None else grad_input.to(input.dtype), grad_offset, grad_weight)


def _views(offset: Tensor, mask: Tensor, geometry: DCNGeometry) -> tuple[Tensor, Tensor]:
    return offset.unflatten(-1, (geometry.group, geometry.points, 2)), mask.unflatten(-1, (geometry.group, -1))


@register_kernel(FORWARD, backend="reference", priority=0)
def dcnv3_forward(input: Tensor, offset: Tensor, mask: Tensor, geometry: DCNGeometry) -> Tensor:
    """Forward op (see :func:`deformconv.dcnv3` for the argument shapes)."""
    return forward_core(input, *_views(offset, mask, geometry), geometry)


@register_kernel(BACKWARD, backend="reference", priority=0)
def dcnv3_backward(
    grad_output: Tensor, input: Tensor, offset: Tensor, mask: Tensor, geometry: DCNGeometry, needed: NeededGrads
) -> Grads:
    """Backward op: gradients for input, offset and mask (None where not needed)."""
    grad_input, grad_offset, grad_mask = backward_core(
        grad_output, input, *_views(offset, mask, geometry), geometry, needed
    )
    return Grads(
        grad_input,
        None if grad_offset is None else grad_offset.flatten(-3),
        None if grad_mask is None else grad_mask.flatten(-2),
    )
