"""The Triton kernels against the reference kernels: forward and every gradient.

Without a GPU the kernels run in Triton's CPU interpreter on CPU tensors: ``TRITON_INTERPRET=1``
is set while Triton and the kernel modules are first imported (``import deformconv`` does not
import Triton when there is no GPU) and while each test runs; with a GPU they run compiled on
CUDA tensors. The interpreter is slow, so the shapes are tiny, but chosen so that every loop
of the kernels runs more than once somewhere: several pixel tiles, channel and output-channel
tiles, channel runs that straddle groups and offset groups, pixel splits of the weight
gradient, both tile-product paths (``tl.dot`` and broadcast-and-sum).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from contextlib import contextmanager

import pytest
import torch

import deformconv
from cases import BASE, Case, case_id
from deformconv import dispatch
from deformconv.ops import reference

if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed", allow_module_level=True)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    if "triton" in sys.modules and not os.environ.get("TRITON_INTERPRET") == "1":
        # Triton defines its own library functions (tl.zeros, ...) for the interpreter or for
        # the compiler when it is first imported; this process chose the compiler.
        pytest.skip(
            "triton was imported before TRITON_INTERPRET=1 was set; run this file in its own process",
            allow_module_level=True,
        )
    _previous = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        from deformconv.triton_kernels import backward, forward, launch
    finally:
        if _previous is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = _previous
    assert launch.INTERPRETED, "the kernel modules were imported before TRITON_INTERPRET=1 was set"
else:
    from deformconv.triton_kernels import backward, forward, launch


@pytest.fixture(autouse=True)
def interpreter(monkeypatch):
    """Keeps TRITON_INTERPRET=1 while a test runs: Triton reads it again in modules it imports lazily."""
    if DEVICE == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "1")


# Largest error allowed, relative to the largest magnitude of the float64 reference result.
TOLERANCE = {torch.float64: 1e-12, torch.float32: 2e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}

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


def tensors(case: Case, dtype: torch.dtype, seed: int = 0) -> dict[str, torch.Tensor]:
    """The case's tensors plus ``grad_output``, all in ``dtype`` on ``DEVICE``."""
    result = case.tensors(torch.float64, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    result["grad_output"] = torch.randn(case.batch, case.out_channels, *case.out_size, generator=g, dtype=torch.float64)
    return {name: value.to(DEVICE, dtype) for name, value in result.items()}


def forward_args(case: Case, t: dict[str, torch.Tensor], batch_chunk: int = 2) -> tuple:
    return (
        t["input"],
        t["offset"],
        t.get("mask"),
        t["weight"],
        t.get("bias"),
        case.stride,
        case.padding,
        case.dilation,
        batch_chunk,
    )


def backward_args(case: Case, t: dict[str, torch.Tensor], batch_chunk: int = 2, need=(True, True, True)) -> tuple:
    return (
        t["grad_output"],
        t["input"],
        t["offset"],
        t.get("mask"),
        t["weight"],
        case.stride,
        case.padding,
        case.dilation,
        batch_chunk,
        *need,
    )


def as_float64(args: tuple) -> tuple:
    """The arguments for the reference: float64 on the CPU (no cuBLAS in deterministic mode)."""
    return tuple(a.double().cpu() if isinstance(a, torch.Tensor) else a for a in args)


def assert_matches(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype, name: str) -> None:
    """got (in ``dtype``) equals the float64 ``want`` up to ``TOLERANCE[dtype]`` of its scale."""
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert got.dtype == dtype, f"{name}: dtype {got.dtype} != {dtype}"
    if want.numel() == 0:
        return
    scale = max(1.0, want.abs().max().item())
    error = (got.double().cpu() - want).abs().max().item()
    assert error <= TOLERANCE[dtype] * scale, f"{name}: max error {error:.3g} at scale {scale:.3g}"


def check_forward(case: Case, dtype: torch.dtype, t: dict[str, torch.Tensor]) -> None:
    got = forward.deform_conv2d_forward(*forward_args(case, t))
    assert got.is_contiguous()
    assert_matches(got, reference.deform_conv2d_forward(*as_float64(forward_args(case, t))), dtype, "output")


def check_backward(case: Case, dtype: torch.dtype, t: dict[str, torch.Tensor], batch_chunk: int = 2) -> tuple:
    got = backward.deform_conv2d_backward(*backward_args(case, t, batch_chunk))
    want = reference.deform_conv2d_backward(*as_float64(backward_args(case, t, batch_chunk)))
    for name, g, w in zip(("grad_input", "grad_offset", "grad_mask", "grad_weight"), got, want):
        assert g.is_contiguous(), name
        assert_matches(g, w, dtype, name)
    return got


@contextmanager
def deterministic(mode: bool):
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(mode)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


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
            got = forward.deform_conv2d_forward(*forward_args(case, t, batch_chunk))
            want = reference.deform_conv2d_forward(*as_float64(forward_args(case, t)))
            assert_matches(got, want, torch.float32, f"output (batch_chunk={batch_chunk})")
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
    case = BASE
    t = tensors(case, torch.float32)
    got = backward.deform_conv2d_backward(*backward_args(case, t, need=need))
    want = reference.deform_conv2d_backward(*as_float64(backward_args(case, t, need=need)))
    wanted = (need[0], need[1], need[1], need[2])
    for name, g, w, needed in zip(("input", "offset", "mask", "weight"), got, want, wanted):
        assert (g.numel() > 0) == needed, name
        assert_matches(g, w, torch.float32, name)


def test_non_finite_offsets_read_zero():
    case = BASE.vary(batch=1)
    t = tensors(case, torch.float32)
    offset = t["offset"]
    offset[0, 0, 0, :4] = torch.tensor([float("nan"), float("inf"), float("-inf"), 1e30])
    offset[0, 5, 2, :3] = torch.tensor([float("nan"), float("-inf"), -1e30])
    out = forward.deform_conv2d_forward(*forward_args(case, t))
    want = reference.deform_conv2d_forward(*as_float64(forward_args(case, t)))
    assert torch.isfinite(out).all()
    assert_matches(out, want, torch.float32, "output")
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


@contextmanager
def triton_backend_on(device_type: str):
    """Registers the Triton kernels as the backend of ``device_type`` for the duration."""
    saved = dict(dispatch._available), dict(dispatch._unavailable)
    dispatch.register_backend(
        dispatch.Backend(
            "triton", (device_type,), forward.deform_conv2d_forward, backward.deform_conv2d_backward, priority=10
        )
    )
    try:
        yield
    finally:
        dispatch._available.clear(), dispatch._available.update(saved[0])
        dispatch._unavailable.clear(), dispatch._unavailable.update(saved[1])


def test_through_the_op_and_autograd():
    case = Case(in_channels=8, out_channels=6, groups=2, offset_groups=2)
    t = tensors(case, torch.float32)
    leaves = {k: v.clone().requires_grad_(True) for k, v in t.items() if k != "grad_output"}
    results = {}
    for name in ("reference", "triton"):
        with triton_backend_on(DEVICE), deformconv.use_backend(name):
            out = deformconv.deform_conv2d(**leaves, **case.params())
            grads = torch.autograd.grad(out, list(leaves.values()), t["grad_output"])
        results[name] = (out, *grads)
    for got, want in zip(results["triton"], results["reference"]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(DEVICE == "cuda", reason="a CUDA device is present")
def test_register_without_cuda_says_why():
    from deformconv.triton_kernels import register

    with pytest.raises(RuntimeError, match=r"no CUDA device"):
        register()
    state = deformconv.backends()["triton"]
    assert state["available"] is False and "CUDA" in state["reason"]
