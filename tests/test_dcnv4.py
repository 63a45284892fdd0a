"""dcnv4: oracle through the packed layout, padding ignored, gradients, opcheck, errors, compile, autocast."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import deformconv
from dcn_helpers import DCNCase, dcnv3_oracle, make_inputs, pack
from deformconv import dcnv4
from helpers import TOLERANCE, assert_close_to_scale, backend_params

BACKENDS = backend_params("dcnv4")

CASES = {
    "3x3": DCNCase(group=2, group_channels=8),
    "remove-center": DCNCase(group=3, group_channels=8, remove_center=True, batch=1),
    "s2-d2": DCNCase(group=1, group_channels=8, stride=(2, 2), dilation=(2, 2), padding=(2, 2), size=(7, 6)),
    "5x3-scale": DCNCase(group=1, group_channels=16, kernel=(5, 3), padding=(2, 1), offset_scale=1.5, batch=1),
}


def inputs(case: DCNCase, dtype=torch.float64, fill: float = 0.0, spread: float = 2.0):
    """``input``, ``offset_mask`` and the DCNv3 ``offset`` and ``mask`` it packs (padding = ``fill``)."""
    input, offset, mask = make_inputs(case, dtype, spread=spread)
    return input, pack(offset, mask, case.group, fill), offset, mask


def run(input, offset_mask, case: DCNCase):
    return dcnv4(input, offset_mask, *case.args())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CASES))
def test_matches_oracle_and_ignores_padding(backend, name):
    case = CASES[name]
    input, offset_mask, offset, mask = inputs(case, fill=float("nan"))
    with deformconv.use_backend(backend):
        got = run(input, offset_mask, case)
    assert_close_to_scale(got, dcnv3_oracle(input, offset, mask, case), TOLERANCE[torch.float64], name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_low_precision(backend, dtype):
    case = CASES["3x3"]
    input, offset_mask, offset, mask = inputs(case, dtype)
    with deformconv.use_backend(backend):
        got = run(input, offset_mask, case)
    assert got.dtype == dtype
    assert_close_to_scale(got, dcnv3_oracle(input, offset, mask, case), TOLERANCE[dtype], str(dtype))


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_equal_dcnv3s_and_padding_gets_zero(backend):
    case = CASES["remove-center"]
    input, offset_mask, offset, mask = inputs(case, fill=3.0)
    v4 = [input.clone().requires_grad_(), offset_mask.requires_grad_()]
    v3 = [input.clone().requires_grad_(), offset.requires_grad_(), mask.requires_grad_()]
    with deformconv.use_backend(backend):
        out4 = run(*v4, case)
        out3 = deformconv.dcnv3(*v3, *case.args())
        grad_output = torch.randn_like(out3)
        grad_input4, grad_packed = torch.autograd.grad(out4, v4, grad_output)
        grad_input3, grad_offset, grad_mask = torch.autograd.grad(out3, v3, grad_output)
    torch.testing.assert_close(out4, out3, rtol=0, atol=1e-12)
    torch.testing.assert_close(grad_input4, grad_input3, rtol=0, atol=1e-12)
    torch.testing.assert_close(grad_packed, pack(grad_offset, grad_mask, case.group), rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["3x3", "s2-d2"])
def test_gradcheck(backend, name):
    case = dataclasses.replace(CASES[name], batch=1, size=(4, 4))
    input, offset_mask, _, _ = inputs(case, spread=1.5)
    tensors = [input.requires_grad_(), offset_mask.requires_grad_()]
    with deformconv.use_backend(backend):
        assert torch.autograd.gradcheck(lambda *t: run(*t, case), tensors, eps=1e-6, atol=1e-5, fast_mode=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck_and_empty_batch(backend):
    case = CASES["s2-d2"]
    input, offset_mask, _, _ = inputs(case, torch.float32)
    with deformconv.use_backend(backend):
        torch.library.opcheck(torch.ops.deformconv.dcnv4.default, (input, offset_mask, *case.op_args()))
        grad_output = torch.randn(case.batch, *case.out_size, case.channels)
        backward_args = (grad_output, input, offset_mask, *case.op_args(), True, True)
        torch.library.opcheck(torch.ops.deformconv.dcnv4_backward.default, backward_args)
        empty = [input[:0].requires_grad_(), offset_mask[:0].requires_grad_()]
        run(*empty, case).sum().backward()
    assert empty[1].grad.shape == empty[1].shape


def test_compile_fullgraph_and_autocast():
    case = CASES["3x3"]
    input, offset_mask, offset, mask = inputs(case, torch.float32)
    tensors = [input.requires_grad_(), offset_mask.requires_grad_()]
    compiled = torch.compile(lambda *t: run(*t, case).tanh(), fullgraph=True, backend="aot_eager")
    out = compiled(*tensors)
    expected = run(*tensors, case).tanh()
    torch.testing.assert_close(out, expected)
    for got, want in zip(torch.autograd.grad(out.sum(), tensors), torch.autograd.grad(expected.sum(), tensors)):
        torch.testing.assert_close(got, want)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = run(*tensors, case)
    assert low.dtype == torch.bfloat16
    want = dcnv3_oracle(input.bfloat16(), offset.bfloat16(), mask.bfloat16(), case)
    assert_close_to_scale(low, want, TOLERANCE[torch.bfloat16])


@pytest.mark.parametrize(
    "group_channels, width, error, match",
    [
        (12, 56, ValueError, "group_channels must be a multiple of 8 for DCNv4"),
        (
            8,
            54,
            ValueError,
            "offset_mask's last dimension must be a multiple of 8 of at least 3\\*group\\*P = 3\\*2\\*9 = 54, got 54",
        ),  # noqa: E501
        (8, 48, ValueError, "at least 3\\*group\\*P .* got 48"),
    ],
)
def test_bad_arguments(group_channels, width, error, match):
    case = dataclasses.replace(CASES["3x3"], group_channels=group_channels)
    input = torch.zeros(case.batch, *case.size, case.channels)
    with pytest.raises(error, match=match):
        dcnv4(input, torch.zeros(case.batch, *case.out_size, width), *case.args())


def test_bad_offset_mask_shape_and_type():
    case = CASES["3x3"]
    input = torch.zeros(case.batch, *case.size, case.channels)
    with pytest.raises(ValueError, match=r"offset_mask must have shape .* = \[2, 5, 6, 56\], got \[2, 5, 5, 56\]"):
        dcnv4(input, torch.zeros(case.batch, 5, 5, 56), *case.args())
    with pytest.raises(TypeError, match=r"offset_mask must be a Tensor\[N, H_out, W_out, L\], got list"):
        dcnv4(input, [0.0], *case.args())
    with pytest.raises(TypeError, match="offset_mask must have the dtype of input"):
        dcnv4(input, torch.zeros(case.batch, *case.out_size, 56, dtype=torch.float64), *case.args())


@settings(max_examples=8, deadline=None, derandomize=True)
@given(
    kernel=st.sampled_from([(3, 3), (1, 3), (2, 2)]),
    stride=st.integers(1, 2),
    padding=st.integers(0, 2),
    group=st.integers(1, 2),
    remove_center=st.booleans(),
)
def test_random_configurations_match_oracle(kernel, stride, padding, group, remove_center):
    remove_center = remove_center and kernel != (2, 2)
    case = DCNCase(1, (5, 4), group, 8, kernel, (stride, stride), (padding, padding), (1, 1), 1.0, remove_center)
    input, offset_mask, offset, mask = inputs(case)
    assert_close_to_scale(run(input, offset_mask, case), dcnv3_oracle(input, offset, mask, case), 1e-10)


def test_bench_command_prints_the_table_and_writes_json(tmp_path, capsys):
    from deformconv.cli import main

    path = tmp_path / "bench.json"
    argv = ["bench", "--op", "dcnv4", "--dcn-batch", "1", "--repeat", "1", "--warmup", "0", "--backends", "cpp"]
    assert main([*argv, "--no-memory", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "| op | impl | forward ms | x pytorch | x dw-conv |" in out
    rows = {row["impl"]: row for row in json.loads(path.read_text())["results"]}
    assert {"depthwise-conv", "pytorch"} <= set(rows) and rows["pytorch"]["forward_vs_pytorch"] == 1.0
