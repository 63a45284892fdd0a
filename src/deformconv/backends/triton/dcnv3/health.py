"""Representative launches of the DCNv3 / DCNv4 Triton kernels, for a kernel-health check.

:func:`health_cases` lists ``(name, run)`` pairs; ``run()`` launches the kernels on small
inputs (on CUDA when available, else on CPU tensors for Triton's interpreter) covering both
layouts, float32, float16 and bfloat16, forward and backward (bfloat16 backward included),
and returns the outputs, so a harness can check that each compiles, runs and gives finite values.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from deformconv.backends.triton.dcnv3.launch import dcn_backward, dcn_forward
from deformconv.ops.dcnv3.checks import check_geometry
from deformconv.ops.dcnv4.layout import packed_layout, packed_width, separate_layout

GROUP, GROUP_CHANNELS, POINTS = 2, 16, 9
PARAMS = ((3, 3), (1, 1), (1, 1), (1, 1), GROUP, GROUP_CHANNELS, 1.0, False)


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _case(dtype: torch.dtype, packed: bool, backward: bool) -> Callable[[], tuple[Tensor | None, ...]]:
    def run() -> tuple[Tensor | None, ...]:
        generator = torch.Generator().manual_seed(0)
        input = torch.randn(2, 7, 6, GROUP * GROUP_CHANNELS, generator=generator).to(_device(), dtype)
        geometry = check_geometry(input, *PARAMS)
        if packed:
            offset = mask = torch.randn(2, 7, 6, packed_width(GROUP, POINTS), generator=generator).to(_device(), dtype)
            layout = packed_layout(POINTS, offset.shape[-1])
        else:
            offset = torch.randn(2, 7, 6, GROUP * POINTS * 2, generator=generator).to(_device(), dtype)
            mask = torch.rand(2, 7, 6, GROUP * POINTS, generator=generator).to(_device(), dtype)
            layout = separate_layout(GROUP, POINTS)
        output = dcn_forward(input, offset, mask, geometry, layout)
        if not backward:
            return (output,)
        return dcn_backward(torch.ones_like(output), input, offset, mask, geometry, layout, True, True)

    return run


def health_cases() -> list[tuple[str, Callable[[], tuple[Tensor | None, ...]]]]:
    """``[(name, run)]``: every kernel, both layouts, float32 / float16 / bfloat16, forward and backward."""
    cases = []
    for op, packed in (("dcnv3", False), ("dcnv4", True)):
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            for direction, backward in (("forward", False), ("backward", True)):
                name = f"{op}_{direction}_{str(dtype).removeprefix('torch.')}"
                cases.append((name, _case(dtype, packed, backward)))
    return cases
