"""A naive float64 oracle for deform_conv2d, written straight from the formula with loops.

Independent of the package's reference kernel: it walks every output pixel and kernel point,
interpolates the input bilinearly one sample at a time, and lets autograd differentiate the
scalar formula for the gradients (``floor`` has zero derivative, which gives the one-sided
difference at integer coordinates that torchvision's kernels use).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _bilinear(image: Tensor, y: Tensor, x: Tensor) -> Tensor:
    """image (Tensor[C, H, W]) at the fractional point (y, x); zeros outside the image."""
    height, width = image.shape[1:]
    yf, xf = float(y.detach()), float(x.detach())
    if not (-1 < yf < height and -1 < xf < width):  # also False for NaN
        return image.new_zeros(image.shape[0])
    y0, x0 = math.floor(yf), math.floor(xf)
    # Weights written from the floor: at an integer y the derivative is the forward difference.
    ly, lx = y - y0, x - x0
    value = image.new_zeros(image.shape[0])
    for cy, wy in ((y0, 1 - ly), (y0 + 1, ly)):
        for cx, wx in ((x0, 1 - lx), (x0 + 1, lx)):
            if 0 <= cy < height and 0 <= cx < width:
                value = value + wy * wx * image[:, cy, cx]
    return value


def deform_conv2d_oracle(input, offset, weight, bias=None, stride=1, padding=0, dilation=1, mask=None):
    """Same arguments as ``deformconv.deform_conv2d``; differentiable through autograd."""
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(padding), pair(dilation)
    n, in_channels, _, _ = input.shape
    out_channels, in_per_group, kh, kw = weight.shape
    groups = in_channels // in_per_group
    out_per_group = out_channels // groups
    offset_groups = offset.shape[1] // (2 * kh * kw)
    per_offset_group = in_channels // offset_groups
    out_h, out_w = offset.shape[2:]
    rows = []
    for b in range(n):
        pixels = []
        for oy in range(out_h):
            for ox in range(out_w):
                # sampled[c, k]: input channel c at kernel point k (mask applied)
                sampled = []
                for g in range(offset_groups):
                    channels = input[b, g * per_offset_group : (g + 1) * per_offset_group]
                    per_point = []
                    for i in range(kh):
                        for j in range(kw):
                            k = i * kw + j
                            y = oy * sh - ph + i * dh + offset[b, 2 * (g * kh * kw + k), oy, ox]
                            x = ox * sw - pw + j * dw + offset[b, 2 * (g * kh * kw + k) + 1, oy, ox]
                            value = _bilinear(channels, y, x)
                            if mask is not None:
                                value = value * mask[b, g * kh * kw + k, oy, ox]
                            per_point.append(value)
                    sampled.append(torch.stack(per_point, dim=1))
                columns = torch.cat(sampled, dim=0)  # [C_in, K]
                outputs = []
                for gi in range(groups):
                    part = columns[gi * in_per_group : (gi + 1) * in_per_group].reshape(-1)
                    w = weight[gi * out_per_group : (gi + 1) * out_per_group].reshape(out_per_group, -1)
                    outputs.append(w @ part)
                pixels.append(torch.cat(outputs))
        rows.append(torch.stack(pixels, dim=1).reshape(out_channels, out_h, out_w))
    out = torch.stack(rows) if rows else input.new_zeros(0, out_channels, out_h, out_w)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out
