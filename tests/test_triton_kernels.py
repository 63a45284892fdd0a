"""The Triton kernels of ``deform_conv2d`` against the reference kernels: forward and every gradient.

Without a GPU the kernels run in Triton's CPU interpreter on CPU tensors (see
:mod:`triton_support`); with a GPU they run compiled on CUDA tensors. The interpreter is slow, so
the shapes are tiny, but chosen so that every loop of the kernels runs more than once somewhere:
several pixel tiles, channel and output-channel tiles, channel runs that straddle groups and
offset groups, pixel splits of the weight gradient, both tile-product paths (``tl.dot`` and
broadcast-and-sum).
"""

from __future__ import annotations

import pytest
import torch

import deformconv
from cases import BASE, Case, case_id
from triton_support import (
    DEVICE,
    backward,
    backward_args,
    check_backward,
    check_forward,
    deterministic,
    forward,
    tensors,
)

CASES = [
    BASE,
    BASE.vary(stride=(2, 1), padding=(0, 2)),
    BASE.vary(kernel=(3, 5), dilation=(2, 1), padding=(2, 2)),
    BASE.vary(kernel=(1, 1), stride=(2, 2), padding=(0, 0)),
    # groups and offset groups nested both ways, and straddling (6 channels per group, 4 per offset group)
    Case(batch=1, size=(5, 6), in_channels=8, out_channels=6, groups=2, offset_groups=4),
    Case(in_channels=8, out_channels=4, groups=4, offset_groups=2, batch=1),
    Case(in_channels=12, out_channels=4, groups=2, offset_groups=3, batch=1, size=(5, 5)),
    BASE.vary(modulated=False, bias=False, offset_groups=2),
    # 3 images of 8x9: four pixel tiles, and the weight gradient splits its pixels
    Case(batch=3, size=(8, 9), in_channels=3, out_channels=5, modulated=False),
    BASE.vary(offset_scale=8.0),
    BASE.vary(batch=0),
    # several channel tiles (12 > 8) and output-channel tiles (20 > 16) of the broadcast-and-sum path
    Case(batch=1, size=(5, 5), in_channels=12, out_channels=20),
    # tl.dot path: two output-channel tiles (80 > 64), two channel runs (offset groups of 16)
    Case(batch=1, size=(4, 5), in_channels=32, out_channels=80, offset_groups=2),
    Case(batch=2, size=(4, 5), in_channels=32, out_channels=32, groups=2, offset_groups=4),
]


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_forward_and_gradients_match_reference(case):
    t = tensors(case, torch.float32)
    check_forward(case, torch.float32, t)
    check_backward(case, torch.float32, t)


DOT_CASE = Case(batch=1, size=(4, 5), in_channels=32, out_channels=32, groups=2, offset_groups=2)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", [BASE.vary(batch=1), DOT_CASE], ids=["fma", "dot"])
def test_other_dtypes_match_reference(case, dtype):
    t = tensors(case, dtype)
    check_forward(case, dtype, t)
    check_backward(case, dtype, t)


@pytest.mark.parametrize("case", [CASES[4], DOT_CASE], ids=case_id)
def test_column_buffer_forward_matches_reference(case):
    t = tensors(case, torch.float32)
    forward.set_forward_strategy("columns")
    try:
        for batch_chunk in (1, 2):
            check_forward(case, torch.float32, t, batch_chunk)
    finally:
        forward.set_forward_strategy("implicit")


def test_unknown_forward_strategy_raises():
    with pytest.raises(ValueError, match=r"forward strategy must be one of .*got 'winograd'"):
        forward.set_forward_strategy("winograd")


def test_deterministic_input_gradient_is_bitwise_repeatable():
    case = Case(batch=3, size=(4, 5), kernel=(1, 3), padding=(0, 1), offset_groups=2)
    t = tensors(case, torch.float32)
    with deterministic(True):
        first = check_backward(case, torch.float32, t, batch_chunk=2)
        second = backward.deform_conv2d_backward(*backward_args(case, t, batch_chunk=1))
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    atomic = backward.deform_conv2d_backward(*backward_args(case, t))
    torch.testing.assert_close(first[0], atomic[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("need", [(True, False, False), (False, True, False), (False, False, True)])
def test_only_requested_gradients_are_computed(need):
    got = check_backward(BASE, torch.float32, tensors(BASE, torch.float32), need=need)
    wanted = (need[0], need[1], need[1], need[2])
    for name, g, needed in zip(("input", "offset", "mask", "weight"), got, wanted):
        assert (g is not None) == needed, name


def test_non_finite_offsets_read_zero():
    case = BASE.vary(batch=1)
    t = tensors(case, torch.float32)
    offset = t["offset"]
    offset[0, 0, 0, :4] = torch.tensor([float("nan"), float("inf"), float("-inf"), 1e30])
    offset[0, 5, 2, :3] = torch.tensor([float("nan"), float("-inf"), -1e30])
    out = check_forward(case, torch.float32, t)
    assert torch.isfinite(out).all()
    grads = check_backward(case, torch.float32, t)
    assert all(torch.isfinite(g).all() for g in grads)


def test_strided_and_channels_last_inputs():
    case = BASE.vary(batch=3)
    t = tensors(case, torch.float32)
    dense = check_backward(case, torch.float32, t)
    wide = tensors(case.vary(batch=6), torch.float32)
    strided = {
        "input": t["input"].contiguous(memory_format=torch.channels_last),
        "offset": torch.cat([t["offset"], t["offset"]], dim=3)[..., : case.out_size[1]],
        "mask": t["mask"].transpose(2, 3).contiguous().transpose(2, 3),
        "weight": t["weight"],
        "bias": t["bias"].repeat_interleave(2)[::2],
        "grad_output": wide["grad_output"][::2].copy_(t["grad_output"]),
    }
    assert not any(strided[k].is_contiguous() for k in ("offset", "mask", "bias", "grad_output"))
    check_forward(case, torch.float32, strided)
    for a, b in zip(dense, check_backward(case, torch.float32, strided)):
        torch.testing.assert_close(a, b)


@pytest.mark.skipif(DEVICE == "cuda", reason="a CUDA device is present")
def test_load_without_cuda_says_why():
    from deformconv.backends import triton as triton_backend_package

    with pytest.raises(RuntimeError, match=r"no CUDA device"):
        triton_backend_package.load()
    state = deformconv.backends()["triton"]
    assert state["available"] is False and "CUDA" in state["reason"]
