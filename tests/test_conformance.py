"""Conformance of every ``deform_conv2d`` backend: the same tests, parametrised by backend x device x dtype.

A new backend is tested by loading it: :func:`backend_params` lists every backend that implements
the operator. Triton runs here only in Triton's CPU interpreter (``TRITON_INTERPRET=1``, a process
of its own, see the Makefile), where its kernels are registered for CPU tensors; the other
backends then run in the main test process.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading

import pytest
import torch
import torch.nn.functional as F

import deformconv
from cases import BASE, GRID, Case, case_id
from deformconv.backends import Kernel, registered
from helpers import TOLERANCE, assert_close_to_scale, backends_for, forward_and_grads
from oracle import deform_conv2d_oracle

OP = "deform_conv2d"
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def _targets() -> list:
    if INTERPRETED:
        return [pytest.param(("triton", "cpu"), id="triton-interpreted")]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [pytest.param((name, d), id=f"{name}-{d}") for d in devices for name in backends_for(OP, d)]


@pytest.fixture(params=_targets())
def target(request):
    """``(backend, device)``, with that backend forced for the test's duration."""
    backend, device = request.param
    with _triton_on_cpu() if INTERPRETED else _nothing(), deformconv.use_backend(backend):
        yield backend, device


@functools.cache
def _interpreted_kernels():
    with registered():  # imported without registering the CUDA kernels for the rest of the process
        from deformconv.backends.triton.deform_conv2d import deform_conv2d_backward, deform_conv2d_forward

    return (
        Kernel(OP, "triton", "cpu", deform_conv2d_forward, 100),
        Kernel(f"{OP}_backward", "triton", "cpu", deform_conv2d_backward, 100),
    )


def _triton_on_cpu():
    return registered(*_interpreted_kernels())


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


# Channel counts wider than one work item of the C++ input gradient (64 channels). The Triton
# kernels' float64 channel tiles are 8 wide and the interpreter runs one program at a time, so
# there the same geometries run with 24 channels: three tiles instead of nine, at a third of the time.
WIDE = 24 if INTERPRETED else 72

# Geometries the grid does not reach: the depthwise path (one input and one output channel per
# group), a channel multiplier, convolution groups that straddle offset groups, and wide channels.
EXTRA = [
    Case(in_channels=8, out_channels=8, groups=8, offset_groups=2),
    Case(batch=3, in_channels=WIDE, out_channels=WIDE, groups=WIDE, size=(5, 6), stride=(2, 1), dilation=(1, 2)),
    Case(in_channels=4, out_channels=8, groups=4, offset_groups=4, modulated=False),
    Case(batch=1, in_channels=8, out_channels=6, size=(5, 6), groups=2, offset_groups=4),
    Case(batch=1, in_channels=12, out_channels=4, groups=2, offset_groups=3, size=(5, 5)),
    Case(batch=2, in_channels=WIDE, out_channels=8, size=(5, 6), offset_groups=1),
    Case(
        batch=2,
        in_channels=2 * WIDE,
        out_channels=8,
        size=(4, 5),
        groups=2,
        offset_groups=2,
        kernel=(1, 1),
        padding=(0, 0),
    ),
]


def _on(tensors: dict[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in tensors.items()}


@functools.cache
def _oracle(case: Case):
    """Output and gradients of the float64 loop oracle (slow: computed once per case for every backend)."""
    return forward_and_grads(deform_conv2d_oracle, case.tensors(), case.params())


def _assert_all_close(got, want, tolerance: float, label: str = "") -> None:
    assert_close_to_scale(got[0].cpu(), want[0].cpu(), tolerance, f"{label} output")
    for name in want[1]:
        assert_close_to_scale(got[1][name].cpu(), want[1][name].cpu(), tolerance, f"{label} grad {name}")


@pytest.mark.parametrize("case", GRID + EXTRA, ids=case_id)
def test_forward_and_every_gradient_match_the_oracle(target, case: Case):
    _, device = target
    got = forward_and_grads(deformconv.deform_conv2d, _on(case.tensors(), device), case.params())
    assert got[0].shape == (case.batch, case.out_channels, *case.out_size)
    _assert_all_close(got, _oracle(case), TOLERANCE[torch.float64])


def _integer_offsets(tensors: dict) -> dict:
    return dict(
        tensors,
        offset=torch.randint(-2, 3, tensors["offset"].shape, generator=torch.Generator().manual_seed(2)).double(),
    )


def _border_offsets(tensors: dict) -> dict:
    # In (-1.5, -0.5): corners on both sides of the image's first row and column.
    u = torch.rand(tensors["offset"].shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    return dict(tensors, offset=-u - 0.5)


@pytest.mark.parametrize(
    ("case", "edit"),
    [(BASE.vary(batch=1), _integer_offsets), (BASE.vary(batch=1, padding=(0, 0)), _border_offsets)],
    ids=["integer-offsets-one-sided-difference", "offsets-across-the-border"],
)
def test_edge_offsets_match_the_oracle(target, case: Case, edit):
    _, device = target
    tensors = edit(case.tensors())
    want = forward_and_grads(deform_conv2d_oracle, tensors, case.params())
    got = forward_and_grads(deformconv.deform_conv2d, _on(tensors, device), case.params())
    _assert_all_close(got, want, TOLERANCE[torch.float64])


LOW_PRECISION_CASES = [BASE.vary(offset_groups=2), EXTRA[0], EXTRA[3]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", LOW_PRECISION_CASES, ids=case_id)
def test_low_precision_against_float64_on_the_same_inputs(target, case: Case, dtype):
    _, device = target
    low = _on(case.tensors(dtype=dtype), device)
    got = forward_and_grads(deformconv.deform_conv2d, low, case.params())
    assert got[0].dtype == dtype and all(g.dtype == dtype for g in got[1].values())
    # float64 on the same rounded inputs: only the accumulation and the final rounding differ.
    with deformconv.use_backend("reference"):
        want = forward_and_grads(deformconv.deform_conv2d, {k: v.double() for k, v in low.items()}, case.params())
    _assert_all_close(got, want, TOLERANCE[dtype], str(dtype))


@pytest.mark.parametrize(
    "case",
    [BASE, BASE.vary(modulated=False, stride=(2, 1), dilation=(1, 2), groups=2, offset_groups=2, out_channels=2)],
    ids=case_id,
)
@pytest.mark.skipif(
    INTERPRETED,
    reason="gradcheck's numerical Jacobian needs about a thousand interpreted launches; in the interpreter the "
    "oracle grid checks the same float64 gradients to 1e-10 (it runs on a GPU)",
)
def test_gradcheck_every_input(target, case: Case):
    _, device = target
    case = case.vary(batch=1, size=(4, 5), in_channels=2 * case.groups, out_channels=2 * case.groups)
    tensors = {k: v.requires_grad_() for k, v in _on(case.tensors(), device).items()}
    names = list(tensors)

    def fn(*args):
        return deformconv.deform_conv2d(**dict(zip(names, args)), **case.params())

    assert torch.autograd.gradcheck(fn, tuple(tensors.values()))


def _op_args(case: Case, device: str, batch_chunk: int) -> tuple:
    t = _on(case.tensors(), device)
    return (t["input"], t["offset"], t.get("mask"), t["weight"], t.get("bias"), *case.params().values(), batch_chunk)


@pytest.mark.parametrize("modulated", [True, False])
def test_opcheck_forward_and_backward_ops(target, modulated: bool):
    _, device = target
    # opcheck tests the registration (schema, fake kernel, autograd, AOT dispatch) by running the
    # op many times; the oracle grid tests the kernels' geometry, so a 1x3 kernel keeps runs short.
    case = BASE.vary(batch=2, size=(4, 5), kernel=(1, 3), padding=(0, 1), modulated=modulated)
    args = _op_args(case, device, batch_chunk=1)
    torch.library.opcheck(torch.ops.deformconv.deform_conv2d.default, tuple(_requires_grad(args)))
    upstream = torch.randn(case.batch, case.out_channels, *case.out_size, dtype=torch.float64, device=device)
    input, offset, mask, weight, _, stride, padding, dilation, _ = args
    for need in itertools.product([True, False], repeat=3):
        backward_args = (upstream, input, offset, mask, weight, stride, padding, dilation, 2, *need)
        torch.library.opcheck(torch.ops.deformconv.deform_conv2d_backward.default, backward_args)


def _requires_grad(args):
    return [a.clone().requires_grad_() if isinstance(a, torch.Tensor) else a for a in args]


GRADIENT_NAMES = ("input", "offset", "mask", "weight", "bias")


@pytest.mark.parametrize("modulated", [True, False])
def test_every_combination_of_requested_gradients(target, modulated: bool):
    _, device = target
    # 31 backward runs of one kernel geometry (1x3: short runs; the oracle grid covers the others).
    case = BASE.vary(batch=1, size=(4, 5), kernel=(1, 3), padding=(0, 1), modulated=modulated)
    tensors = _on(case.tensors(), device)
    _, full = forward_and_grads(deformconv.deform_conv2d, tensors, case.params())
    names = [n for n in GRADIENT_NAMES if n in tensors]
    for count in range(1, len(names) + 1):
        for wanted in itertools.combinations(names, count):
            leaves = {k: v.clone().requires_grad_(k in wanted) for k, v in tensors.items()}
            out = deformconv.deform_conv2d(**leaves, **case.params())
            upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
            grads = torch.autograd.grad(out, [leaves[k] for k in wanted], upstream.to(device))
            for name, grad in zip(wanted, grads):
                torch.testing.assert_close(grad, full[name], rtol=0, atol=0, msg=f"{wanted}: {name}")


def test_bitwise_deterministic_in_deterministic_mode(target):
    _, device = target
    case = Case(batch=3, in_channels=16, out_channels=8, size=(9, 11), offset_groups=2, offset_scale=3.0)
    tensors = _on(case.tensors(dtype=torch.float32), device)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        first = forward_and_grads(deformconv.deform_conv2d, tensors, case.params())
        second = forward_and_grads(deformconv.deform_conv2d, tensors, case.params())
    finally:
        torch.use_deterministic_algorithms(previous)
    assert torch.equal(first[0], second[0])
    for name in tensors:
        assert torch.equal(first[1][name], second[1][name]), name


# Each value on both coordinates of a kernel point of its own (one run for the four).
NON_FINITE = (float("nan"), float("inf"), -float("inf"), 1e30)


def test_non_finite_and_huge_offsets_read_zero(target):
    _, device = target
    case = BASE.vary(batch=1, bias=False, offset_groups=2)
    tensors = case.tensors()
    for point, bad in enumerate(NON_FINITE):
        tensors["offset"][:, 2 * point : 2 * point + 2] = bad
    bad_channels = 2 * len(NON_FINITE)
    got = forward_and_grads(deformconv.deform_conv2d, _on(tensors, device), case.params())
    far = dict(tensors, offset=tensors["offset"].clone())
    far["offset"][:, :bad_channels] = 1e6  # certainly outside: reads zero with zero gradient
    want = forward_and_grads(deformconv.deform_conv2d, _on(far, device), case.params())
    assert_close_to_scale(got[0], want[0], 0.0, "output")
    for name in ("input", "weight", "mask"):
        assert_close_to_scale(got[1][name], want[1][name], 0.0, name)
    assert torch.isfinite(got[1]["offset"]).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=str)
def test_channels_last_and_non_contiguous_inputs(target, dtype):
    _, device = target
    case = BASE.vary(in_channels=8, out_channels=8, groups=2, offset_groups=2)
    tensors = _on(case.tensors(dtype=dtype), device)
    want = forward_and_grads(deformconv.deform_conv2d, tensors, case.params())
    channels_last = {
        k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for k, v in tensors.items()
    }
    strided = {k: v.transpose(-1, -2).contiguous().transpose(-1, -2) if v.dim() == 4 else v for k, v in tensors.items()}
    assert not strided["input"].is_contiguous()
    for variant in (channels_last, strided):
        got = forward_and_grads(deformconv.deform_conv2d, variant, case.params())
        assert got[0].is_contiguous()
        _assert_all_close(got, want, 0.0)


def test_batch_chunks_do_not_change_results(target):
    _, device = target
    case = BASE.vary(batch=5)
    tensors = _on(case.tensors(), device)
    want = forward_and_grads(deformconv.deform_conv2d, tensors, case.params())
    with deformconv.im2col_budget(1):  # one image per chunk, and 5 is divisible by nothing else
        got = forward_and_grads(deformconv.deform_conv2d, tensors, case.params())
    _assert_all_close(got, want, TOLERANCE[torch.float64])


@pytest.mark.parametrize(
    ("groups", "stride", "padding", "dilation"),
    [(1, 1, 1, 1), (2, 2, 0, 1), (4, 1, 2, 2), (1, (2, 1), (1, 0), (1, 2))],
)
def test_zero_offset_unit_mask_equals_conv2d(target, groups, stride, padding, dilation):
    _, device = target
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 8, 11, 9, dtype=torch.float64, generator=g).to(device)
    weight = torch.randn(12, 8 // groups, 3, 3, dtype=torch.float64, generator=g).to(device)
    bias = torch.randn(12, dtype=torch.float64, generator=g).to(device)
    want = F.conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups)
    offset = torch.zeros(3, 2 * 2 * 9, *want.shape[2:], dtype=torch.float64, device=device)
    mask = torch.ones(3, 2 * 9, *want.shape[2:], dtype=torch.float64, device=device)
    for m in (None, mask):
        got = deformconv.deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask=m)
        assert_close_to_scale(got, want, TOLERANCE[torch.float64])


def test_integer_offset_equals_conv_of_shifted_input(target):
    _, device = target
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 10, 10, dtype=torch.float64, generator=g).to(device)
    weight = torch.randn(5, 4, 3, 3, dtype=torch.float64, generator=g).to(device)
    offset = torch.zeros(2, 18, 8, 8, dtype=torch.float64, device=device)
    offset[:, 0::2] = 1.0  # every kernel point reads one row further down
    offset[:, 1::2] = -2.0  # and two columns further left
    shifted = torch.zeros_like(x)
    shifted[:, :, :-1, 2:] = x[:, :, 1:, :-2]
    assert_close_to_scale(deformconv.deform_conv2d(x, offset, weight), F.conv2d(shifted, weight), 1e-12)


def test_bad_arguments_are_rejected_before_the_kernel(target):
    _, device = target
    t = _on(BASE.tensors(), device)
    with pytest.raises(ValueError, match=r"offset must have shape .*\[2, 18, 6, 7\], got \[2, 18, 5, 7\]"):
        deformconv.deform_conv2d(t["input"], t["offset"][:, :, :5], t["weight"], padding=1)
    with pytest.raises(ValueError, match=r"stride must be >= 1 in both dimensions, got \(0, 1\)"):
        deformconv.deform_conv2d(t["input"], t["offset"], t["weight"], stride=(0, 1), padding=1)


def test_threads_use_their_own_backend_and_budget(target):
    backend, device = target
    case = BASE.vary(batch=3)
    tensors = _on(case.tensors(), device)
    want = deformconv.deform_conv2d(**tensors, **case.params())
    seen: dict[str, object] = {}
    barrier = threading.Barrier(2)

    def other_thread():
        # A fresh thread sees the process-wide defaults, not the override of the main thread.
        with deformconv.use_backend("reference"), deformconv.im2col_budget(1):
            barrier.wait()
            seen["backend"] = deformconv.backends()["reference"]["forced"]
            seen["budget"] = deformconv.get_im2col_budget()
            seen["out"] = deformconv.deform_conv2d(**tensors, **case.params())
            barrier.wait()

    thread = threading.Thread(target=other_thread)
    thread.start()
    barrier.wait()
    assert deformconv.backends()[backend]["forced"] is True
    assert deformconv.get_im2col_budget() != 1
    barrier.wait()
    thread.join()
    assert seen["backend"] is True and seen["budget"] == 1
    assert_close_to_scale(seen["out"], want, TOLERANCE[torch.float64])
