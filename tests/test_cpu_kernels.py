"""The C++ CPU kernels ("cpp" backend) against the reference kernels and the naive oracle.

Forward and every gradient over a grid of geometries and all four dtypes; the depthwise path
and channel blocks wider than one work item; bitwise determinism; 1 vs 2 threads; the
fallback when the extension is disabled, and the errors of the C++ operators themselves.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import deformconv
from cases import BASE, GRID, Case, case_id
from oracle import deform_conv2d_oracle

requires_cpp = pytest.mark.skipif(
    not deformconv.backends()["cpp"]["available"],
    reason=f"cpp backend unavailable: {deformconv.backends()['cpp'].get('reason')}",
)

# Geometries that the shared grid does not reach: the depthwise path (one input and one output
# channel per group), a channel multiplier, convolution groups that straddle offset groups,
# and more channels than one work item of the input gradient (64).
EXTRA = [
    Case(in_channels=8, out_channels=8, groups=8, offset_groups=2),
    Case(batch=3, in_channels=72, out_channels=72, groups=72, size=(5, 6), stride=(2, 1), dilation=(1, 2)),
    Case(in_channels=4, out_channels=8, groups=4, offset_groups=4, modulated=False),
    Case(batch=1, in_channels=8, out_channels=6, size=(5, 6), groups=2, offset_groups=4),
    Case(batch=1, in_channels=12, out_channels=4, groups=2, offset_groups=3, size=(5, 5)),
    Case(batch=2, in_channels=72, out_channels=8, size=(5, 6), offset_groups=1),
    Case(
        batch=2, in_channels=144, out_channels=8, size=(4, 5), groups=2, offset_groups=2, kernel=(1, 1), padding=(0, 0)
    ),
]

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]

# Largest difference allowed, relative to the largest magnitude of the reference result. Both
# backends accumulate float16/bfloat16 in float32; what differs is the order of the sums and
# the final rounding.
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


def _forward_and_grads(backend: str, tensors: dict, params: dict):
    """Output and the gradients of every tensor argument, on the given backend."""
    leaves = {k: v.detach().clone().requires_grad_() for k, v in tensors.items()}
    with deformconv.use_backend(backend):
        out = deformconv.deform_conv2d(**leaves, **params)
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        grads = torch.autograd.grad(out, list(leaves.values()), grad.to(out.dtype))
    return [out.detach(), *grads]


def _assert_matches(actual: list[torch.Tensor], expected: list[torch.Tensor], tolerance: float, names):
    for got, want, name in zip(actual, expected, names):
        assert got.shape == want.shape and got.dtype == want.dtype, name
        if want.numel() == 0:
            continue
        scale = want.double().abs().max().clamp_min(1.0)
        error = float((got.double() - want.double()).abs().max() / scale)
        assert error <= tolerance, f"{name}: relative error {error:.2e} > {tolerance:.0e}"


@requires_cpp
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", GRID + EXTRA, ids=case_id)
def test_matches_reference(case: Case, dtype: torch.dtype):
    tensors, params = case.tensors(dtype=dtype), case.params()
    names = ["output", *(f"grad_{k}" for k in tensors)]
    _assert_matches(
        _forward_and_grads("cpp", tensors, params),
        _forward_and_grads("reference", tensors, params),
        TOLERANCE[dtype],
        names,
    )


@requires_cpp
@pytest.mark.parametrize("case", EXTRA[:4], ids=case_id)
def test_matches_oracle(case: Case):
    case = case.vary(batch=min(case.batch, 2), size=(4, 5))
    tensors, params = case.tensors(), case.params()
    names = ["output", *(f"grad_{k}" for k in tensors)]
    leaves = {k: v.clone().requires_grad_() for k, v in tensors.items()}
    out = deform_conv2d_oracle(**leaves, **params)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = [out.detach(), *torch.autograd.grad(out, list(leaves.values()), grad)]
    _assert_matches(_forward_and_grads("cpp", tensors, params), expected, 1e-10, names)


# The columns are sampled and multiplied in tiles of about 8 MiB of rows (1820 rows here, in
# float64): tiles that end inside an image and tiles that span two images.
TILED_CASES = [
    Case(batch=2, in_channels=64, out_channels=8, size=(33, 33), groups=2, offset_groups=2),
    Case(batch=1, in_channels=64, out_channels=4, size=(48, 48), modulated=False, offset_scale=4.0),
]


@requires_cpp
@pytest.mark.parametrize("case", TILED_CASES, ids=case_id)
def test_row_tiles_match_reference(case: Case):
    tensors, params = case.tensors(), case.params()
    names = ["output", *(f"grad_{k}" for k in tensors)]
    _assert_matches(
        _forward_and_grads("cpp", tensors, params), _forward_and_grads("reference", tensors, params), 1e-12, names
    )


# Large enough for several work items per kernel (rows, channel blocks, images).
DETERMINISM_CASES = [
    Case(batch=3, in_channels=80, out_channels=16, size=(9, 11), offset_groups=2, offset_scale=3.0),
    Case(batch=3, in_channels=80, out_channels=80, size=(9, 11), groups=80, offset_groups=4, offset_scale=3.0),
]


@requires_cpp
@pytest.mark.parametrize("case", DETERMINISM_CASES, ids=case_id)
def test_bitwise_deterministic(case: Case):
    tensors, params = case.tensors(dtype=torch.float32), case.params()
    first = _forward_and_grads("cpp", tensors, params)
    second = _forward_and_grads("cpp", tensors, params)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@requires_cpp
@pytest.mark.parametrize("case", DETERMINISM_CASES, ids=case_id)
def test_one_and_two_threads_agree(case: Case):
    tensors, params = case.tensors(dtype=torch.float32), case.params()
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = _forward_and_grads("cpp", tensors, params)
        torch.set_num_threads(2)
        double = _forward_and_grads("cpp", tensors, params)
    finally:
        torch.set_num_threads(previous)
    _assert_matches(double, single, 1e-5, range(len(single)))


@requires_cpp
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_channels_last_and_non_contiguous_inputs(dtype):
    case = BASE.vary(in_channels=8, out_channels=8, offset_groups=2)
    tensors, params = case.tensors(dtype=dtype), case.params()
    expected = _forward_and_grads("cpp", tensors, params)
    channels_last = {
        k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for k, v in tensors.items()
    }
    strided = {k: v.transpose(-1, -2).contiguous().transpose(-1, -2) if v.dim() == 4 else v for k, v in tensors.items()}
    for variant in (channels_last, strided):
        got = _forward_and_grads("cpp", variant, params)
        assert got[0].is_contiguous()
        _assert_matches(got, expected, 0.0, range(len(got)))


@requires_cpp
@pytest.mark.parametrize("groups", [1, 4])
def test_non_finite_offsets_read_zero(groups):
    case = BASE.vary(in_channels=4, out_channels=4, groups=groups, bias=False)
    tensors, params = case.tensors(), case.params()
    tensors["offset"][0, 0, 1, 1] = float("nan")
    tensors["offset"][1, 3, 2, 2] = float("inf")
    tensors["offset"][1, 4, 0, 0] = -float("inf")
    names = ["output", *(f"grad_{k}" for k in tensors)]
    got = _forward_and_grads("cpp", tensors, params)
    assert all(torch.isfinite(t).all() for t in got[:2])
    _assert_matches(got, _forward_and_grads("reference", tensors, params), 1e-12, names)


@requires_cpp
def test_only_requested_gradients_are_returned():
    case = BASE
    t = case.tensors()
    args = (t["input"], t["offset"], t["mask"], t["weight"], [1, 1], [1, 1], [1, 1], 1)
    grad = torch.ones(case.batch, case.out_channels, *case.out_size, dtype=torch.float64)
    full = torch.ops.deformconv_cpp.deform_conv2d_backward(grad, *args, True, True, True)
    for need in ((True, False, False), (False, True, False), (False, False, True)):
        partial = torch.ops.deformconv_cpp.deform_conv2d_backward(grad, *args, *need)
        wanted = [need[0], need[1], need[1], need[2]]
        for got, want, needed in zip(partial, full, wanted):
            if needed:
                torch.testing.assert_close(got, want, rtol=0, atol=0)
            else:
                assert got.numel() == 0


@requires_cpp
def test_operator_rejects_inconsistent_shapes():
    t = BASE.tensors()
    with pytest.raises(RuntimeError, match=r"offset\.shape\[1\] must be a positive multiple of 2\*kh\*kw = 18"):
        torch.ops.deformconv_cpp.deform_conv2d(
            t["input"], t["offset"][:, :5], None, t["weight"], None, [1, 1], [1, 1], [1, 1], 1
        )
    with pytest.raises(RuntimeError, match=r"batch_chunk must be >= 1, got 0"):
        torch.ops.deformconv_cpp.deform_conv2d(
            t["input"], t["offset"], None, t["weight"], None, [1, 1], [1, 1], [1, 1], 0
        )


def _run_without_extension(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DEFORMCONV_NO_EXT="1")
    env.pop("DEFORMCONV_BACKEND", None)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_without_extension_the_reference_runs_and_says_why():
    code = (
        "import torch, deformconv\n"
        "state = deformconv.backends()['cpp']\n"
        "print(state['available'])\n"
        "print(state['reason'])\n"
        "print(deformconv.backends()['reference']['default_for'])\n"
        "x = torch.randn(1, 2, 5, 5); w = torch.randn(3, 2, 3, 3); off = torch.zeros(1, 18, 5, 5)\n"
        "y = deformconv.deform_conv2d(x, off, w, padding=1)\n"
        "print(torch.allclose(y, torch.nn.functional.conv2d(x, w, padding=1), atol=1e-5))\n"
    )
    result = _run_without_extension(code)
    assert result.returncode == 0, result.stderr
    available, reason, default_for, matches = result.stdout.strip().splitlines()
    assert available == "False" and "DEFORMCONV_NO_EXT" in reason
    assert "cpu" in default_for
    assert matches == "True"


def test_without_extension_forcing_cpp_raises_a_clear_error():
    code = (
        "import deformconv\ntry:\n    deformconv.set_backend('cpp')\nexcept RuntimeError as error:\n    print(error)\n"
    )
    result = _run_without_extension(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("backend 'cpp' is not available: ")
    assert "DEFORMCONV_NO_EXT" in result.stdout
