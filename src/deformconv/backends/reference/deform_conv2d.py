"""``deform_conv2d`` in pure PyTorch: the ``"reference"`` backend's kernels.

Vectorised over the batch chunk, the offset groups, the kernel points and the output pixels;
runs on any device. It is the semantic reference for the accelerated kernels (tests compare
every backend with it) and the fallback where none is available.

Bilinear sampling follows ``torchvision.ops.deform_conv2d`` exactly: a sample point at
``(y, x)`` reads 0 unless ``-1 < y < H`` and ``-1 < x < W``; otherwise its four integer
neighbours ``floor(y) + {0, 1}`` x ``floor(x) + {0, 1}`` weigh ``(1-|dy|)(1-|dx|)`` and
neighbours outside the image read 0. The "inside" test is False for NaN and Inf, so such
offsets read 0 and never index out of bounds. Derivatives with respect to the sample
coordinates are those of this floor-based formula (a one-sided difference at integers).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from deformconv.backends.registry import register_kernel
from deformconv.ops.deform_conv2d.contract import BACKWARD, FORWARD, Grads, NeededGrads
from deformconv.ops.deform_conv2d.geometry import ConvGeometry, accumulation_dtype


@dataclass
class Sampling:
    """Where and with which weights every sample point of a batch chunk reads the input.

    For batch chunk ``n``, offset groups ``G``, the four bilinear corners and ``P = K*Ho*Wo``
    sample points per group (kernel point major):

    Attributes:
        index: Tensor[n, G, 4, P] (int64): flat index ``y*W + x`` of each corner, clamped into
            the image (its weight is 0 where the corner lies outside).
        weight: Tensor[n, G, 4, P]: bilinear weight of each corner.
        weight_dy: Tensor[n, G, 4, P]: derivative of ``weight`` with respect to the sample's y.
        weight_dx: Tensor[n, G, 4, P]: derivative of ``weight`` with respect to the sample's x.
    """

    index: Tensor
    weight: Tensor
    weight_dy: Tensor
    weight_dx: Tensor


def sampling(offset: Tensor, geometry: ConvGeometry) -> Sampling:
    """Computes the bilinear corners of every sample point.

    Args:
        offset (Tensor[n, 2*G*kh*kw, Ho, Wo]): (dy, dx) pairs per offset group and kernel point,
            in the accumulation dtype.
        geometry: sizes, stride, padding and dilation of the convolution.
    """
    n, channels, out_h, out_w = offset.shape
    (kh, kw), stride, padding, dilation = geometry.kernel, geometry.stride, geometry.padding, geometry.dilation
    points = kh * kw
    groups = channels // (2 * points)
    height, width = geometry.in_size
    device, dtype = offset.device, offset.dtype

    # Position of kernel point k = i*kw + j for output pixel (oy, ox), before the offset.
    rows = torch.arange(out_h, device=device, dtype=dtype) * stride[0] - padding[0]
    cols = torch.arange(out_w, device=device, dtype=dtype) * stride[1] - padding[1]
    tap_rows = torch.arange(kh, device=device, dtype=dtype) * dilation[0]
    tap_cols = torch.arange(kw, device=device, dtype=dtype) * dilation[1]
    base_y = (tap_rows[:, None] + rows).repeat_interleave(kw, dim=0).view(points, out_h, 1)
    base_x = (tap_cols[:, None] + cols).repeat(kh, 1).view(points, 1, out_w)

    pairs = offset.reshape(n, groups, points, 2, out_h, out_w)
    y = pairs[:, :, :, 0] + base_y
    x = pairs[:, :, :, 1] + base_x
    # Written as "inside" so that NaN and Inf coordinates fall outside.
    inside = (y > -1) & (y < height) & (x > -1) & (x < width)
    y = torch.where(inside, y, 0)
    x = torch.where(inside, x, 0)
    y0, x0 = y.floor(), x.floor()
    ly, lx = y - y0, x - x0
    hy, hx = 1 - ly, 1 - lx
    y0, x0 = y0.long(), x0.long()

    # (row step, column step, weight, d weight / dy, d weight / dx) for the four corners.
    corners = (
        (0, 0, hy * hx, -hx, -hy),
        (0, 1, hy * lx, -lx, hy),
        (1, 0, ly * hx, hx, -ly),
        (1, 1, ly * lx, lx, ly),
    )
    index, weight, weight_dy, weight_dx = [], [], [], []
    for step_y, step_x, w, w_dy, w_dx in corners:
        cy, cx = y0 + step_y, x0 + step_x
        valid = (inside & (cy >= 0) & (cy < height) & (cx >= 0) & (cx < width)).to(dtype)
        index.append(cy.clamp(0, height - 1) * width + cx.clamp(0, width - 1))
        weight.append(w * valid)
        weight_dy.append(w_dy * valid)
        weight_dx.append(w_dx * valid)

    def stack(parts: list[Tensor]) -> Tensor:
        return torch.stack(parts, dim=2).view(n, groups, 4, -1)

    return Sampling(stack(index), stack(weight), stack(weight_dy), stack(weight_dx))


def gather_corners(image: Tensor, index: Tensor) -> list[Tensor]:
    """Reads the four corners of every sample point.

    Args:
        image (Tensor[n, G, C/G, H*W]): the input, split by offset group.
        index (Tensor[n, G, 4, P]): from :class:`Sampling`.

    Returns:
        Four Tensor[n, G, C/G, P], one per corner.
    """
    n, groups, channels, _ = image.shape
    points = index.shape[-1]
    return [image.gather(3, index[:, :, c, None, :].expand(n, groups, channels, points)) for c in range(4)]


@dataclass
class SampledChunk:
    """One batch chunk sampled at its deformed points (in the accumulation dtype).

    Attributes:
        where: the bilinear corners and weights of every sample point.
        image (Tensor[n, G, C/G, H*W]): the input, split by offset group.
        corners: four Tensor[n, G, C/G, K*Ho*Wo], the input read at each corner.
        values (Tensor[n, G, C/G, K*Ho*Wo]): bilinear samples (before the mask).
        mask (Tensor[n, G, 1, K*Ho*Wo] or None): the modulation of each sample point.
    """

    where: Sampling
    image: Tensor
    corners: list[Tensor]
    values: Tensor
    mask: Tensor | None


def sample_chunk(input: Tensor, offset: Tensor, mask: Tensor | None, geometry: ConvGeometry) -> SampledChunk:
    """Samples a batch chunk (``input``, ``offset``, ``mask`` already sliced to it)."""
    n, channels, height, width = input.shape
    acc = accumulation_dtype(input.dtype)
    offset_groups = geometry.offset_groups
    where = sampling(offset.to(acc), geometry)
    image = input.to(acc).reshape(n, offset_groups, channels // offset_groups, height * width)
    corners = gather_corners(image, where.index)
    values = sum(v * where.weight[:, :, c, None, :] for c, v in enumerate(corners))
    group_mask = None if mask is None else mask.to(acc).reshape(n, offset_groups, 1, -1)
    return SampledChunk(where, image, corners, values, group_mask)


@register_kernel(FORWARD, backend="reference", priority=0)
def deform_conv2d_forward(
    input: Tensor, offset: Tensor, mask: Tensor | None, weight: Tensor, bias: Tensor | None, geometry: ConvGeometry
) -> Tensor:
    """Forward op (see :func:`deformconv.deform_conv2d` for the argument shapes)."""
    n, out_channels, groups = geometry.batch, geometry.out_channels, geometry.groups
    in_per_group = geometry.in_per_group
    (kh, kw), (out_h, out_w), batch_chunk = geometry.kernel, geometry.out_size, geometry.batch_chunk
    acc = geometry.accumulation_dtype

    group_weight = weight.to(acc).reshape(groups, out_channels // groups, in_per_group * kh * kw)
    output = input.new_empty(n, out_channels, out_h, out_w)
    for start in range(0, n, batch_chunk):
        chunk = slice(start, start + batch_chunk)
        m = min(n, start + batch_chunk) - start
        sampled = sample_chunk(input[chunk], offset[chunk], None if mask is None else mask[chunk], geometry)
        columns = sampled.values if sampled.mask is None else sampled.values * sampled.mask
        columns = columns.view(m, groups, in_per_group * kh * kw, out_h * out_w)
        result = torch.matmul(group_weight, columns).view(m, out_channels, out_h, out_w)
        if bias is not None:
            result = result + bias.to(acc).view(1, -1, 1, 1)
        output[chunk] = result
    return output


@register_kernel(BACKWARD, backend="reference", priority=0)
def deform_conv2d_backward(
    grad_output: Tensor,
    input: Tensor,
    offset: Tensor,
    mask: Tensor | None,
    weight: Tensor,
    geometry: ConvGeometry,
    needed: NeededGrads,
) -> Grads:
    """Backward op: gradients for input, offset, mask and weight.

    A gradient that is not needed (or the mask gradient when ``mask`` is None) is None.
    """
    n, out_channels, groups = geometry.batch, geometry.out_channels, geometry.groups
    in_per_group = geometry.in_per_group
    (kh, kw), (out_h, out_w), batch_chunk = geometry.kernel, geometry.out_size, geometry.batch_chunk
    offset_groups = geometry.offset_groups
    need_input, need_offset_mask, need_weight = needed
    acc = geometry.accumulation_dtype
    columns_shape = (groups, in_per_group * kh * kw, out_h * out_w)

    group_weight = weight.to(acc).reshape(groups, out_channels // groups, -1)
    grad_input = torch.zeros(input.shape, dtype=acc, device=input.device) if need_input else None
    grad_offset = input.new_empty(offset.shape) if need_offset_mask else None
    grad_mask = input.new_empty(mask.shape) if need_offset_mask and mask is not None else None
    grad_weight = torch.zeros_like(group_weight) if need_weight else None

    for start in range(0, n, batch_chunk):
        chunk = slice(start, start + batch_chunk)
        m = min(n, start + batch_chunk) - start
        chunk_sample = sample_chunk(input[chunk], offset[chunk], None if mask is None else mask[chunk], geometry)
        where, image, corners = chunk_sample.where, chunk_sample.image, chunk_sample.corners
        sampled, chunk_mask = chunk_sample.values, chunk_sample.mask
        grad_out = grad_output[chunk].to(acc).reshape(m, groups, out_channels // groups, -1)

        if grad_weight is not None:
            columns = sampled if chunk_mask is None else sampled * chunk_mask
            grad_weight += torch.matmul(grad_out, columns.view(m, *columns_shape).transpose(2, 3)).sum(0)
        if grad_input is None and grad_offset is None:
            continue

        grad_columns = torch.matmul(group_weight.transpose(1, 2), grad_out).view(sampled.shape)
        if grad_mask is not None:
            grad_mask[chunk] = (grad_columns * sampled).sum(2).view(grad_mask[chunk].shape)
        if chunk_mask is not None:
            grad_columns = grad_columns * chunk_mask
        if grad_offset is not None:
            # d(sample)/dy = sum over corners of value * d(weight)/dy, likewise for x.
            per_corner = torch.stack([(grad_columns * v).sum(2) for v in corners], dim=2)
            grad_y = (per_corner * where.weight_dy).sum(2).view(m, offset_groups, kh * kw, -1)
            grad_x = (per_corner * where.weight_dx).sum(2).view(m, offset_groups, kh * kw, -1)
            grad_offset[chunk] = torch.stack([grad_y, grad_x], dim=3).view(grad_offset[chunk].shape)
        if grad_input is not None:
            target = grad_input[chunk].view(image.shape)
            expand = (*image.shape[:3], where.index.shape[-1])
            for c in range(4):
                contribution = grad_columns * where.weight[:, :, c, None, :]
                target.scatter_add_(3, where.index[:, :, c, None, :].expand(expand), contribution)

    return Grads(
        None if grad_input is None else grad_input.to(input.dtype),
        grad_offset,
        grad_mask,
        None if grad_weight is None else grad_weight.view(weight.shape).to(weight.dtype),
    )
