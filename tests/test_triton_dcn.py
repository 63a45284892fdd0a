"""The DCNv3 / DCNv4 Triton kernels against the oracle and the reference: forward and every gradient.

Without a GPU the kernels run in Triton's CPU interpreter on CPU tensors, registered for "cpu"
for the duration of each test; this file must then run in a process started with
``TRITON_INTERPRET=1`` (Triton reads it when first imported).
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed", allow_module_level=True)
if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("needs CUDA or TRITON_INTERPRET=1 (run in its own process)", allow_module_level=True)

import deformconv  # noqa: E402
from dcn_helpers import CASES, DCNCase, dcnv3_oracle, make_inputs, pack  # noqa: E402
from deformconv.backends import Kernel, registered  # noqa: E402
from helpers import TOLERANCE, assert_close_to_scale  # noqa: E402

# Imported without registering the CUDA kernels for the rest of the process.
with registered():
    from deformconv.backends.triton.dcnv3 import KERNELS, health

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def triton_backend():
    """The Triton kernels for this device, forced."""
    kernels = [Kernel(op, "triton", DEVICE, fn, 100) for op, fn in KERNELS.items()] if DEVICE == "cpu" else []
    with registered(*kernels), deformconv.use_backend("triton"):
        yield


def grads_of(function, tensors, grad_output):
    out = function(*tensors)
    return out, torch.autograd.grad(out, tensors, grad_output)


@pytest.mark.parametrize("name", ["3x3", "stride2", "dilation2", "remove-center", "scale"])
def test_dcnv3_forward_and_gradients(name):
    case = CASES[name]
    tensors = [t.to(DEVICE).requires_grad_() for t in make_inputs(case)]
    assert_close_to_scale(deformconv.dcnv3(*tensors, *case.args()).cpu(), dcnv3_oracle(*tensors, case), 1e-10)
    grad_output = torch.randn(case.batch, *case.out_size, case.channels, dtype=torch.float64, device=DEVICE)
    _, got = grads_of(lambda *t: deformconv.dcnv3(*t, *case.args()), tensors, grad_output)
    with deformconv.use_backend("reference"):
        _, want = grads_of(lambda *t: deformconv.dcnv3(*t, *case.args()), tensors, grad_output)
    for label, g, w in zip(("input", "offset", "mask"), got, want):
        assert_close_to_scale(g, w, 1e-10, label)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_dcnv4_low_precision_forward_and_backward(dtype):
    case = DCNCase(batch=1, size=(5, 4), group=2, group_channels=16)
    input, offset, mask = make_inputs(case, dtype)
    tensors = [input.to(DEVICE).requires_grad_(), pack(offset, mask, case.group, fill=7.0).to(DEVICE).requires_grad_()]
    grad_output = torch.randn(case.batch, *case.out_size, case.channels, device=DEVICE).to(dtype)
    out, got = grads_of(lambda *t: deformconv.dcnv4(*t, *case.args()), tensors, grad_output)
    assert out.dtype == dtype and all(g.dtype == dtype for g in got)
    with deformconv.use_backend("reference"):
        want_out, want = grads_of(lambda *t: deformconv.dcnv4(*t, *case.args()), tensors, grad_output)
    assert_close_to_scale(out, want_out, TOLERANCE[dtype], "output")
    for label, g, w in zip(("input", "offset_mask"), got, want):
        assert_close_to_scale(g, w, TOLERANCE[dtype], label)
    assert not got[1][..., 3 * case.group * case.points :].any()  # padding


def test_empty_batch_and_nan_offsets():
    case = CASES["3x3"]
    input, offset, mask = (t.to(DEVICE) for t in make_inputs(case))
    assert deformconv.dcnv3(input[:0], offset[:0], mask[:0], *case.args()).shape[0] == 0
    offset[0, 1, 1, :4] = float("nan")
    clean = offset.clone()
    clean[0, 1, 1, :4] = -1e4
    got = deformconv.dcnv3(input, offset, mask, *case.args())
    assert_close_to_scale(got.cpu(), dcnv3_oracle(input, clean, mask, case), 1e-10)


def test_health_cases_cover_both_layouts_in_every_dtype():
    cases = health.cases()
    assert {case.name.split("/")[0] for case in cases} == {"dcnv3", "dcnv4"}
    assert {case.dtype for case in cases} == {torch.float32, torch.float16, torch.bfloat16, torch.float64}
    assert len({(case.name, case.dtype) for case in cases}) == len(cases)
