"""dcnv3: oracle, official grid_sample formulation, gradients, opcheck, errors, compile, autocast, properties."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import deformconv
from dcn_helpers import CASES, DCNCase, dcnv3_grid_sample, dcnv3_oracle, make_inputs
from deformconv import dcnv3
from helpers import TOLERANCE, assert_close_to_scale, backend_params

BACKENDS = backend_params("dcnv3")


def run(input, offset, mask, case: DCNCase):
    return dcnv3(input, offset, mask, *case.args())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CASES))
def test_matches_oracle(backend, name):
    case = CASES[name]
    tensors = make_inputs(case)
    with deformconv.use_backend(backend):
        got = run(*tensors, case)
    assert_close_to_scale(got, dcnv3_oracle(*tensors, case), TOLERANCE[torch.float64], name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_low_precision_matches_oracle_of_rounded_inputs(backend, dtype):
    case = CASES["3x3"]
    tensors = make_inputs(case, dtype)
    with deformconv.use_backend(backend):
        got = run(*tensors, case)
    assert got.dtype == dtype
    assert_close_to_scale(got, dcnv3_oracle(*tensors, case), TOLERANCE[dtype], str(dtype))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["3x3", "stride2", "dilation2", "scale", "remove-center"])
def test_agrees_with_official_grid_sample_formulation(backend, name):
    """Forward and every gradient equal those of the official pure-PyTorch formulation (autograd)."""
    case = CASES[name]
    tensors = [t.requires_grad_() for t in make_inputs(case, seed=1)]
    with deformconv.use_backend(backend):
        got = run(*tensors, case)
    want = dcnv3_grid_sample(*tensors, case)
    assert_close_to_scale(got, want, 1e-10, "output")
    grad_output = torch.randn_like(want)
    got_grads = torch.autograd.grad(got, tensors, grad_output)
    want_grads = torch.autograd.grad(want, tensors, grad_output)
    for label, g, w in zip(("input", "offset", "mask"), got_grads, want_grads):
        assert_close_to_scale(g, w, 1e-10, label)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["3x3", "3x5-pad2", "stride2", "remove-center"])
def test_gradcheck(backend, name):
    case = dataclasses.replace(CASES[name], batch=1)
    tensors = [t.requires_grad_() for t in make_inputs(case, spread=1.5)]
    with deformconv.use_backend(backend):
        assert torch.autograd.gradcheck(lambda *t: run(*t, case), tensors, eps=1e-6, atol=1e-5, fast_mode=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_of_one_input_only(backend):
    case = CASES["3x3"]
    input, offset, mask = make_inputs(case)
    for wanted in range(3):
        tensors = [t.clone().requires_grad_(i == wanted) for i, t in enumerate((input, offset, mask))]
        with deformconv.use_backend(backend):
            run(*tensors, case).sum().backward()
        assert [t.grad is not None for t in tensors] == [i == wanted for i in range(3)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck(backend):
    case = CASES["stride2"]
    tensors = [t.float().requires_grad_() for t in make_inputs(case)]
    with deformconv.use_backend(backend):
        torch.library.opcheck(torch.ops.deformconv.dcnv3.default, (*tensors, *case.op_args()))
        grad_output = torch.randn(case.batch, *case.out_size, case.channels)
        detached = [t.detach() for t in tensors]
        backward_args = (grad_output, *detached, *case.op_args(), True, True)
        torch.library.opcheck(torch.ops.deformconv.dcnv3_backward.default, backward_args)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_and_non_contiguous(backend):
    case = CASES["3x3"]
    input, offset, mask = make_inputs(case)
    with deformconv.use_backend(backend):
        empty = [t[:0].requires_grad_() for t in (input, offset, mask)]
        out = run(*empty, case)
        out.sum().backward()
        assert out.shape == (0, *case.out_size, case.channels) and empty[0].grad.shape == empty[0].shape
        # Channels taken from a wider tensor, offsets and mask transposed in memory.
        wide = torch.randn(case.batch, *case.size, 2 * case.channels, dtype=torch.float64)[..., ::2]
        offset_t = offset.transpose(1, 2).contiguous().transpose(1, 2)
        got = run(wide, offset_t, mask.transpose(1, 2).contiguous().transpose(1, 2), case)
    assert not wide.is_contiguous() and not offset_t.is_contiguous()
    assert_close_to_scale(got, dcnv3_oracle(wide, offset, mask, case), 1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_and_inf_offsets_read_zero(backend):
    case = CASES["3x3"]
    input, offset, mask = make_inputs(case)
    offset[0, 0, 0, 0] = float("nan")
    offset[0, 1, 1, 2] = float("inf")
    offset[1, 2, 2, 3] = -float("inf")
    offset[1, 0, 0, 1] = 1e30
    with deformconv.use_backend(backend):
        got = run(input, offset, mask, case)
    clean = offset.clone()
    for index in ((0, 0, 0, 0), (0, 1, 1, 2), (1, 2, 2, 3), (1, 0, 0, 1)):
        clean[index] = -1e4  # far outside: reads 0
    assert_close_to_scale(got, dcnv3_oracle(input, clean, mask, case), 1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_chunks_give_the_same_result(backend):
    case = dataclasses.replace(CASES["3x3"], batch=3)
    tensors = [t.requires_grad_() for t in make_inputs(case)]
    with deformconv.use_backend(backend):
        whole = run(*tensors, case)
        grads = torch.autograd.grad(whole.sum(), tensors)
        with deformconv.im2col_budget(1):  # one image at a time
            chunked = run(*tensors, case)
            chunked_grads = torch.autograd.grad(chunked.sum(), tensors)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-12)
    for g, w in zip(chunked_grads, grads):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-12)


def test_zero_offsets_with_one_hot_mask_shift_the_input():
    """Offset 0 and all weight on kernel point (i, j) read the input shifted by that tap."""
    case = DCNCase(batch=1, size=(4, 5), group=1, group_channels=2)
    input, offset, mask = make_inputs(case)
    offset.zero_()
    mask.zero_()
    mask[..., 5] = 1  # i = 1 (centre column), j = 2 (bottom row): tap (0, +1)
    got = run(input, offset, mask, case)
    shifted = torch.zeros_like(input)
    shifted[:, :-1] = input[:, 1:]
    torch.testing.assert_close(got, shifted)


def test_compile_fullgraph_forward_and_backward():
    case = CASES["3x3"]
    tensors = [t.float().requires_grad_() for t in make_inputs(case)]

    def layer(input, offset, mask):
        return torch.relu(run(input, offset, mask, case)) * 2

    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    out = compiled(*tensors)
    expected = layer(*tensors)
    torch.testing.assert_close(out, expected)
    for got, want in zip(torch.autograd.grad(out.sum(), tensors), torch.autograd.grad(expected.sum(), tensors)):
        torch.testing.assert_close(got, want)


def test_autocast_runs_in_bfloat16():
    case = CASES["3x3"]
    tensors = [t.float().requires_grad_() for t in make_inputs(case)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = run(*tensors, case)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert all(t.grad.dtype == torch.float32 for t in tensors)
    expected = dcnv3_oracle(*(t.detach().bfloat16() for t in tensors), case)
    assert_close_to_scale(out, expected, TOLERANCE[torch.bfloat16])


GOOD = CASES["3x3"]
PARAM_NAMES = (
    "kernel_h", "kernel_w", "stride_h", "stride_w", "pad_h", "pad_w", "dilation_h", "dilation_w",
    "group", "group_channels", "offset_scale", "remove_center",
)  # fmt: skip


def bad_call(**changes):
    input, offset, mask = make_inputs(GOOD)
    tensors = {"input": input, "offset": offset, "mask": mask}
    params = dict(zip(PARAM_NAMES, GOOD.args()))
    for key, value in changes.items():
        (tensors if key in tensors else params)[key] = value
    return lambda: dcnv3(tensors["input"], tensors["offset"], tensors["mask"], **params)


@pytest.mark.parametrize(
    "changes, error, match",
    [
        ({"input": [1.0]}, TypeError, "input must be a Tensor"),
        ({"input": torch.zeros(2, 5, 6)}, ValueError, r"input must be a 4-d Tensor\[N, H, W"),
        ({"input": torch.zeros(2, 5, 6, 6, dtype=torch.int64)}, TypeError, "input must be float64"),
        (
            {"input": torch.zeros(2, 5, 6, 7, dtype=torch.float64)},
            ValueError,
            "group\\*group_channels = 2\\*3 = 6 channels",
        ),
        (
            {"offset": torch.zeros(2, 5, 6, 35, dtype=torch.float64)},
            ValueError,
            r"offset must have shape \[N, H_out, W_out, group\*P\*2\] = \[2, 5, 6, 36\]",
        ),
        ({"mask": torch.zeros(2, 5, 6, 18)}, TypeError, "mask must have the dtype of input"),
        (
            {"mask": torch.zeros(2, 5, 6, 17, dtype=torch.float64)},
            ValueError,
            r"mask must have shape .* = \[2, 5, 6, 18\]",
        ),
        ({"stride_h": 0}, ValueError, "stride must be >= 1"),
        ({"pad_w": -1}, ValueError, "padding must be >= 0"),
        ({"dilation_w": 0}, ValueError, "dilation must be >= 1"),
        ({"kernel_h": 0}, ValueError, "kernel must be >= 1"),
        ({"group": 0}, ValueError, "group must be a positive int, got 0"),
        ({"group_channels": 2.5}, ValueError, "group_channels must be a positive int"),
        ({"group": None, "group_channels": None}, ValueError, "pass group or group_channels"),
        ({"offset_scale": float("nan")}, ValueError, "offset_scale must be a finite number"),
        ({"remove_center": True, "kernel_w": 2}, ValueError, "remove_center needs an odd kernel size"),
        ({"kernel_h": 9, "pad_h": 0}, ValueError, "output size would be -3x6"),
    ],
)
def test_bad_arguments(changes, error, match):
    with pytest.raises(error, match=match):
        bad_call(**changes)()


def test_bad_grad_output():
    case = GOOD
    tensors = make_inputs(case)
    with pytest.raises(ValueError, match=r"grad_output must have shape .* = \[2, 5, 6, 6\]"):
        grad_output = torch.zeros(2, 5, 6, 5, dtype=torch.float64)
        torch.ops.deformconv.dcnv3_backward(grad_output, *tensors, *case.op_args(), True, True)


@settings(max_examples=12, deadline=None, derandomize=True)
@given(
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    padding=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    group=st.integers(1, 3),
    group_channels=st.integers(1, 3),
    offset_scale=st.sampled_from([0.5, 1.0, 2.0]),
    remove_center=st.booleans(),
)
def test_random_configurations_match_oracle(
    kernel, stride, dilation, padding, group, group_channels, offset_scale, remove_center
):
    remove_center = remove_center and kernel in ((3, 3), (1, 3), (3, 1))
    case = DCNCase(1, (5, 5), group, group_channels, kernel, stride, padding, dilation, offset_scale, remove_center)
    tensors = make_inputs(case)
    assert_close_to_scale(run(*tensors, case), dcnv3_oracle(*tensors, case), 1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_backward_is_deterministic_whatever_the_thread_count(backend, dtype):
    case = DCNCase(batch=1, size=(12, 12), group=1, group_channels=32)  # few tasks: channels get split
    tensors = [t.to(dtype).requires_grad_() for t in make_inputs(case, spread=3.0)]
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2, 1):
            torch.set_num_threads(count)
            with deformconv.use_backend(backend):
                out = run(*tensors, case)
                results.append(torch.autograd.grad(out, tensors, torch.ones_like(out)))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for got, want in zip(other, results[0]):
            assert torch.equal(got, want)


@pytest.mark.skipif("cpp" not in [p.id for p in BACKENDS], reason="C++ extension not built")
def test_cpp_operator_guards_direct_calls_with_a_bad_layout():
    from deformconv.backends.cpp.dcnv3 import geometry_args
    from deformconv.ops.dcnv3.checks import check_args
    from deformconv.ops.dcnv4.layout import separate_layout

    case = CASES["3x3"]
    input, offset, mask = make_inputs(case)
    geometry = check_args(input, offset, mask, *case.op_args()[:-1])
    layout = list(separate_layout(case.group, case.points))
    with pytest.raises(RuntimeError, match="offset or mask too small for the layout"):
        torch.ops.deformconv_cpp.dcn_forward(
            input, offset[..., :-2].contiguous(), mask, *geometry_args(geometry), layout
        )
