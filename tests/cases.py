"""Random deform_conv2d inputs for the tests."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from deformconv.ops.deform_conv2d.geometry import output_size


@dataclass(frozen=True)
class Case:
    batch: int = 2
    in_channels: int = 4
    out_channels: int = 4
    size: tuple[int, int] = (6, 7)
    kernel: tuple[int, int] = (3, 3)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    offset_groups: int = 1
    modulated: bool = True
    bias: bool = True
    offset_scale: float = 1.5

    def vary(self, **changes) -> Case:
        return replace(self, **changes)

    @property
    def out_size(self) -> tuple[int, int]:
        return output_size(self.size, self.kernel, self.stride, self.padding, self.dilation)

    def tensors(self, dtype=torch.float64, seed: int = 0, device="cpu") -> dict[str, torch.Tensor]:
        """The tensor arguments of deform_conv2d (keys: input, offset, weight, bias, mask)."""
        g = torch.Generator().manual_seed(seed)
        points = self.kernel[0] * self.kernel[1]
        out_h, out_w = self.out_size

        def randn(*shape, scale=1.0):
            return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(device, dtype)

        result = {
            "input": randn(self.batch, self.in_channels, *self.size),
            "offset": randn(self.batch, 2 * self.offset_groups * points, out_h, out_w, scale=self.offset_scale),
            "weight": randn(self.out_channels, self.in_channels // self.groups, *self.kernel),
        }
        if self.bias:
            result["bias"] = randn(self.out_channels)
        if self.modulated:
            mask = torch.rand(self.batch, self.offset_groups * points, out_h, out_w, generator=g, dtype=torch.float64)
            result["mask"] = mask.to(device, dtype)
        return result

    def params(self) -> dict[str, tuple[int, int]]:
        return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation}


BASE = Case()

# Every value of every hyper-parameter of the grid, each varied from BASE, plus combinations.
GRID = [
    BASE,
    BASE.vary(stride=(2, 2)),
    BASE.vary(stride=(2, 1), padding=(0, 2)),
    BASE.vary(padding=(0, 0)),
    BASE.vary(padding=(2, 2)),
    BASE.vary(dilation=(2, 2), padding=(2, 2)),
    BASE.vary(dilation=(1, 2), padding=(0, 1)),
    BASE.vary(kernel=(1, 1), padding=(0, 0)),
    BASE.vary(kernel=(3, 5), padding=(1, 2)),
    BASE.vary(groups=2, out_channels=6),
    BASE.vary(offset_groups=2),
    BASE.vary(offset_groups=4),
    BASE.vary(modulated=False),
    BASE.vary(modulated=False, bias=False, offset_groups=2),
    BASE.vary(batch=1),
    BASE.vary(batch=3),
    BASE.vary(batch=0),
    BASE.vary(offset_scale=8.0),  # most samples far outside the image
    Case(
        batch=3,
        in_channels=8,
        out_channels=6,
        size=(7, 9),
        kernel=(3, 5),
        stride=(2, 1),
        padding=(2, 1),
        dilation=(1, 2),
        groups=2,
        offset_groups=4,
        modulated=True,
    ),
    Case(
        batch=1,
        in_channels=4,
        out_channels=2,
        size=(5, 9),
        kernel=(1, 1),
        stride=(2, 2),
        padding=(0, 0),
        dilation=(2, 1),
        groups=2,
        offset_groups=2,
        modulated=False,
    ),
]


def case_id(case: Case) -> str:
    return (
        f"n{case.batch}-c{case.in_channels}x{case.out_channels}-k{case.kernel[0]}x{case.kernel[1]}"
        f"-s{case.stride[0]}{case.stride[1]}-p{case.padding[0]}{case.padding[1]}"
        f"-d{case.dilation[0]}{case.dilation[1]}-g{case.groups}-og{case.offset_groups}"
        f"-{'v2' if case.modulated else 'v1'}{'-b' if case.bias else ''}-o{case.offset_scale}"
    )
