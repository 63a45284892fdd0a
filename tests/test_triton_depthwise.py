"""The depthwise forward kernel (``groups == C_in == C_out``) against the reference, in every dtype.

Runs in Triton's CPU interpreter without a GPU (see :mod:`triton_support`).
"""

from __future__ import annotations

import pytest
import torch

from cases import Case, case_id
from deformconv.backends.triton import runtime
from triton_support import DTYPES, check_backward, check_forward, forward, forward_args, tensors


def depthwise(channels: int, offset_groups: int, **changes) -> Case:
    return Case(
        batch=2, size=(4, 5), in_channels=channels, out_channels=channels, groups=channels, offset_groups=offset_groups
    ).vary(**changes)


CASES = [
    depthwise(64, 1),  # channel tiles inside the single offset group: offsets read once per pixel
    depthwise(64, 2),  # one offset group per channel tile
    depthwise(40, 1),  # a partial channel tile
    depthwise(48, 3),  # channel tiles straddle offset groups: positions per channel
    depthwise(40, 1, modulated=False, bias=False, stride=(2, 1), dilation=(1, 2), padding=(1, 2)),
    depthwise(64, 2, offset_scale=8.0),  # most samples outside the image
]


def launched_kernels(case: Case, t: dict) -> list[str]:
    """Names of the kernels the forward launches (and runs)."""
    names = []

    def run_and_record(kernel, grid, args, options):
        names.append(kernel.fn.__name__)
        kernel[grid](*args, **options)

    with runtime.launch_hook(run_and_record, 0):
        forward.deform_conv2d_forward(*forward_args(case, t))
    return names


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_depthwise_forward_matches_reference(case):
    t = tensors(case, torch.float32)
    check_forward(case, torch.float32, t)
    assert launched_kernels(case, t) == ["_depthwise_forward_kernel"]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_depthwise_forward_in_every_dtype(dtype):
    case = CASES[1]
    check_forward(case, dtype, tensors(case, dtype))


def test_depthwise_channels_last_and_strided_arguments():
    case = CASES[3]
    t = tensors(case, torch.float32)
    strided = dict(t)
    strided["input"] = t["input"].contiguous(memory_format=torch.channels_last)
    strided["offset"] = torch.cat([t["offset"], t["offset"]], dim=3)[..., : case.out_size[1]]
    strided["bias"] = t["bias"].repeat_interleave(2)[::2]
    check_forward(case, torch.float32, strided)


def test_depthwise_backward_matches_reference():
    case = depthwise(4, 2, batch=1)
    check_backward(case, torch.float32, tensors(case, torch.float32))
