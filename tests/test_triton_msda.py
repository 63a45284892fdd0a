"""Triton kernels of multi_scale_deform_attn against the reference backend, in the interpreter.

Without a GPU the kernels run in Triton's CPU interpreter on CPU tensors, registered
temporarily as the op's kernels for "cpu"; ``TRITON_INTERPRET=1`` must be set before Triton is
first imported, so this file runs in a process of its own (``TRITON_INTERPRET=1 pytest
tests/test_triton_msda.py``) and skips otherwise. With a GPU the kernels run compiled on CUDA.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed", allow_module_level=True)
if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("needs CUDA or TRITON_INTERPRET=1 set before the process starts", allow_module_level=True)

import deformconv  # noqa: E402
from deformconv.backends import Kernel, registered  # noqa: E402
from deformconv.ops.multi_scale_deform_attn.contract import BACKWARD, FORWARD  # noqa: E402
from helpers import TOLERANCE, assert_close_to_scale  # noqa: E402
from test_msda import Case, op_with_grads  # noqa: E402

# Imported without registering the CUDA kernels for the rest of the process.
with registered():
    from deformconv.backends.triton.multi_scale_deform_attn import health, launch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

CASES = {
    # Several query blocks (BLOCK_Q = 16), D over one channel block, points outside the maps.
    "queries-blocks": Case(((5, 7), (3, 4)), batch=2, queries=19, heads=2, channels=3, points=2),
    # D = 70 spans two channel blocks; one level, P = 1.
    "wide-channels": Case(((3, 4),), batch=1, queries=3, heads=1, channels=70, points=1),
}


@pytest.fixture
def triton_backend():
    """The Triton launchers as the op's kernels on this device (on CPU: in the interpreter)."""
    kernels = [
        Kernel(FORWARD, "triton", DEVICE, launch.forward, 100),
        Kernel(BACKWARD, "triton", DEVICE, launch.backward, 100),
    ]
    with registered(*kernels), deformconv.use_backend("triton"):
        yield


def _on_device(args):
    return tuple(t.to(DEVICE) for t in args)


def _compare(case, dtype, deterministic):
    args = _on_device(case.tensors(dtype))
    grad_output = torch.randn(case.batch, case.queries, case.heads * case.channels, dtype=dtype, device=DEVICE)
    float64_args = tuple(t.double() if t.is_floating_point() else t for t in args)
    want, want_grads = op_with_grads(float64_args, grad_output.double(), "reference")
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(deterministic)
    try:
        got, got_grads = op_with_grads(args, grad_output, "triton")
        again = op_with_grads(args, grad_output, "triton")[1] if deterministic else got_grads
    finally:
        torch.use_deterministic_algorithms(previous)
    assert got.dtype == dtype
    assert_close_to_scale(got, want, TOLERANCE[dtype], "output")
    for g, w in zip(got_grads, want_grads):
        assert g.dtype == dtype
        assert_close_to_scale(g, w, TOLERANCE[dtype], "grad")
    assert all(torch.equal(a, b) for a, b in zip(got_grads, again))


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_matches_reference(triton_backend, name, dtype):
    _compare(CASES[name], dtype, deterministic=False)


# The deterministic value gradient walks the queries one by one: small shapes in the interpreter.
DETERMINISTIC_CASES = {
    "two-levels": Case(((5, 7), (3, 4)), batch=1, queries=6, heads=2, channels=3, points=2),
    "wide-channels": Case(((3, 4),), batch=1, queries=2, heads=1, channels=40, points=1),
}


@pytest.mark.parametrize("name", list(DETERMINISTIC_CASES))
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=str)
def test_deterministic_mode_matches_reference_and_repeats(triton_backend, name, dtype):
    _compare(DETERMINISTIC_CASES[name], dtype, deterministic=True)


def test_nan_locations_and_empty_queries(triton_backend):
    value, shapes, starts, locations, weights = _on_device(Case(((4, 5), (2, 2)), queries=3).tensors())
    locations[0, 0] = float("nan")
    locations[1, 1, :, :, :, 0] = float("inf")
    out, grads = op_with_grads(
        (value, shapes, starts, locations, weights), torch.ones(2, 3, 6, dtype=value.dtype, device=DEVICE), "triton"
    )
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)
    assert (out[0, 0] == 0).all() and (out[1, 1] == 0).all()
    empty = (value, shapes, starts, locations[:, :0], weights[:, :0])
    out, grads = op_with_grads(empty, torch.zeros(2, 0, 6, dtype=value.dtype, device=DEVICE), "triton")
    assert out.shape == (2, 0, 6) and (grads[0] == 0).all()


def test_health_cases_cover_every_dtype_once_per_shape():
    cases = health.cases()
    assert {case.dtype for case in cases} == {torch.float32, torch.float16, torch.bfloat16, torch.float64}
    assert len({(case.name, case.dtype) for case in cases}) == len(cases)
