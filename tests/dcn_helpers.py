"""DCNv3 / DCNv4 test helpers: a naive float64 loop oracle, a grid_sample formulation, cases, inputs.

The oracle is written from the operators' formula (the one the official CUDA kernels compute),
independently of the package's geometry code: for output pixel ``(oy, ox)``, group ``g`` and
kernel point ``(i, j)`` (``i`` over columns, outer; ``j`` over rows, inner; the centre skipped
with ``remove_center``),

    x = ox*stride_w - pad_w + cx - cx*offset_scale + (i*dilation_w + dx)*offset_scale,
    cx = dilation_w*(kernel_w - 1) // 2 (likewise y),

and the output adds ``mask * bilinear(x, y)`` with zeros outside the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from deformconv.bench_dcn import pytorch_formulation


@dataclass(frozen=True)
class DCNCase:
    """One configuration of a DCNv3 / DCNv4 call."""

    batch: int = 2
    size: tuple[int, int] = (5, 6)
    group: int = 2
    group_channels: int = 3
    kernel: tuple[int, int] = (3, 3)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    offset_scale: float = 1.0
    remove_center: bool = False

    @property
    def points(self) -> int:
        return self.kernel[0] * self.kernel[1] - int(self.remove_center)

    @property
    def channels(self) -> int:
        return self.group * self.group_channels

    @property
    def out_size(self) -> tuple[int, int]:
        return tuple(
            (s + 2 * p - (d * (k - 1) + 1)) // st + 1
            for s, k, st, p, d in zip(self.size, self.kernel, self.stride, self.padding, self.dilation)
        )

    def args(self) -> tuple:
        """Positional arguments after the tensors, in the official order."""
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel, self.stride, self.padding, self.dilation
        return (kh, kw, sh, sw, ph, pw, dh, dw, self.group, self.group_channels, self.offset_scale, self.remove_center)

    def op_args(self) -> tuple:
        """Arguments of the custom ops after the tensors (batch_chunk 0)."""
        return (
            list(self.kernel), list(self.stride), list(self.padding), list(self.dilation),
            self.group, self.group_channels, self.offset_scale, self.remove_center, 0,
        )  # fmt: skip


CASES = {
    "3x3": DCNCase(),
    "1-group": DCNCase(group=1, group_channels=2),
    "3x5-pad2": DCNCase(kernel=(3, 5), padding=(1, 2), size=(6, 5)),
    "stride2": DCNCase(stride=(2, 2), size=(7, 6)),
    "dilation2": DCNCase(dilation=(2, 1), padding=(2, 1), size=(6, 5)),
    "2x2-pad0": DCNCase(kernel=(2, 2), padding=(0, 0), size=(4, 5)),
    "scale": DCNCase(offset_scale=0.5),
    "remove-center": DCNCase(remove_center=True, group=3, group_channels=1, batch=1),
    "1x1": DCNCase(kernel=(1, 1), padding=(0, 0), size=(3, 4)),
}


def make_inputs(
    case: DCNCase, dtype=torch.float64, spread: float = 2.0, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """``input``, ``offset`` (uniform in [-spread, spread]), ``mask`` (uniform in [-1, 1]) for DCNv3."""
    generator = torch.Generator().manual_seed(seed)
    out_h, out_w = case.out_size
    input = torch.randn(case.batch, *case.size, case.channels, generator=generator, dtype=torch.float64)
    offset = (torch.rand(case.batch, out_h, out_w, case.group * case.points * 2, generator=generator) * 2 - 1) * spread
    mask = torch.rand(case.batch, out_h, out_w, case.group * case.points, generator=generator) * 2 - 1
    return input.to(dtype), offset.to(dtype), mask.to(dtype)


def pack(offset: Tensor, mask: Tensor, group: int, fill: float = 0.0) -> Tensor:
    """DCNv4's packed ``offset_mask`` from DCNv3's offset and mask; padding (to a multiple of 8) = ``fill``."""
    *lead, _ = mask.shape
    points = mask.shape[-1] // group
    packed = torch.cat((offset.reshape(*lead, group, 2 * points), mask.reshape(*lead, group, points)), -1).flatten(-2)
    width = math.ceil(packed.shape[-1] / 8) * 8
    return F.pad(packed, (0, width - packed.shape[-1]), value=fill)


def _bilinear(image: Tensor, x: float, y: float) -> Tensor:
    """``image`` (Tensor[H, W, D]) at pixel coordinates ``(x, y)``, zeros outside."""
    height, width = image.shape[:2]
    value = torch.zeros(image.shape[2], dtype=torch.float64)
    if not (-1 < x < width and -1 < y < height):
        return value
    x0, y0 = math.floor(x), math.floor(y)
    lx, ly = x - x0, y - y0
    corners = ((x0, y0, (1 - lx) * (1 - ly)), (x0 + 1, y0, lx * (1 - ly)), (x0, y0 + 1, (1 - lx) * ly))
    for cx, cy, w in (*corners, (x0 + 1, y0 + 1, lx * ly)):
        if 0 <= cx < width and 0 <= cy < height:
            value = value + w * image[cy, cx]
    return value


def dcnv3_oracle(input: Tensor, offset: Tensor, mask: Tensor, case: DCNCase) -> Tensor:
    """Naive float64 loops over the formula in the module docstring."""
    input, offset, mask = (t.detach().to(torch.float64) for t in (input, offset, mask))
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = case.kernel, case.stride, case.padding, case.dilation
    group, channels, points, scale = case.group, case.group_channels, case.points, case.offset_scale
    out_h, out_w = case.out_size
    cy, cx = dh * (kh - 1) // 2, dw * (kw - 1) // 2
    output = torch.zeros(case.batch, out_h, out_w, case.channels, dtype=torch.float64)
    for n in range(case.batch):
        for oy in range(out_h):
            for ox in range(out_w):
                for g in range(group):
                    image = input[n, :, :, g * channels : (g + 1) * channels]
                    p = 0
                    for i in range(kw):
                        for j in range(kh):
                            if case.remove_center and i == kw // 2 and j == kh // 2:
                                continue
                            dx, dy = (
                                offset[n, oy, ox, 2 * (g * points + p)],
                                offset[n, oy, ox, 2 * (g * points + p) + 1],
                            )
                            x = ox * sw - pw + cx - cx * scale + (i * dw + dx.item()) * scale
                            y = oy * sh - ph + cy - cy * scale + (j * dh + dy.item()) * scale
                            weight = mask[n, oy, ox, g * points + p].item()
                            output[n, oy, ox, g * channels : (g + 1) * channels] += weight * _bilinear(image, x, y)
                            p += 1
    return output


def dcnv3_grid_sample(input: Tensor, offset: Tensor, mask: Tensor, case: DCNCase) -> Tensor:
    """The official pure-PyTorch formulation (``grid_sample`` on the padded input) of one case.

    The official code pads W by ``pad_h`` and H by ``pad_w``, so tests compare with equal pads.
    """
    return pytorch_formulation(input, offset, mask, *case.op_args()[:-1])
