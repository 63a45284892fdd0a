"""deform_conv2d (on the default CPU backend) against the naive oracle and F.conv2d."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import deformconv
from cases import BASE, GRID, Case, case_id
from oracle import deform_conv2d_oracle


def _forward_and_grads(fn, tensors: dict, params: dict, grad_seed: int = 1):
    leaves = {k: v.detach().clone().requires_grad_() for k, v in tensors.items()}
    out = fn(**leaves, **params)
    generator = torch.Generator().manual_seed(grad_seed)
    grad = torch.randn(out.shape, generator=generator, dtype=torch.float64).to(out.dtype)
    grads = torch.autograd.grad(out, list(leaves.values()), grad, allow_unused=True)
    return out.detach(), {k: (torch.zeros_like(v) if g is None else g) for (k, v), g in zip(leaves.items(), grads)}


CPU_BACKENDS = [
    name
    for name, state in deformconv.backends().items()
    if state["available"] and ("cpu" in state["devices"] or "any" in state["devices"])
]


@pytest.mark.parametrize("case", GRID, ids=case_id)
def test_forward_and_gradients_match_oracle(case: Case):
    tensors, params = case.tensors(), case.params()
    expected_out, expected_grads = _forward_and_grads(deform_conv2d_oracle, tensors, params)
    for backend in CPU_BACKENDS:  # the oracle is slow: compute it once for every backend
        with deformconv.use_backend(backend):
            out, grads = _forward_and_grads(deformconv.deform_conv2d, tensors, params)
        assert out.shape == (case.batch, case.out_channels, *case.out_size)
        torch.testing.assert_close(out, expected_out, rtol=1e-10, atol=1e-10, msg=lambda m, b=backend: f"{b}: {m}")
        for name in tensors:
            torch.testing.assert_close(
                grads[name],
                expected_grads[name],
                rtol=1e-9,
                atol=1e-9,
                msg=lambda m, b=backend, n=name: f"{b}, {n}: {m}",
            )


@pytest.mark.parametrize(
    "case",
    [BASE, BASE.vary(modulated=False, stride=(2, 1), dilation=(1, 2), groups=2, offset_groups=2, out_channels=2)],
    ids=case_id,
)
def test_gradcheck_every_input(case: Case):
    case = case.vary(batch=1, size=(4, 5), in_channels=2 * case.groups, out_channels=2 * case.groups)
    tensors = {k: v.requires_grad_() for k, v in case.tensors().items()}
    names = list(tensors)

    def fn(*args):
        return deformconv.deform_conv2d(**dict(zip(names, args)), **case.params())

    assert torch.autograd.gradcheck(fn, tuple(tensors.values()))


def test_integer_offsets_give_the_one_sided_difference():
    case = BASE.vary(batch=1)
    tensors = case.tensors()
    tensors["offset"] = torch.randint(-2, 3, tensors["offset"].shape).double()
    out, grads = _forward_and_grads(deformconv.deform_conv2d, tensors, case.params())
    expected_out, expected_grads = _forward_and_grads(deform_conv2d_oracle, tensors, case.params())
    torch.testing.assert_close(out, expected_out)
    torch.testing.assert_close(grads["offset"], expected_grads["offset"])


def test_offsets_in_minus_one_zero_near_the_border():
    case = BASE.vary(batch=1, padding=(0, 0))
    tensors = case.tensors()
    tensors["offset"] = -torch.rand(tensors["offset"].shape, dtype=torch.float64) - 0.5  # in (-1.5, -0.5)
    out, grads = _forward_and_grads(deformconv.deform_conv2d, tensors, case.params())
    expected_out, expected_grads = _forward_and_grads(deform_conv2d_oracle, tensors, case.params())
    torch.testing.assert_close(out, expected_out)
    for name in tensors:
        torch.testing.assert_close(grads[name], expected_grads[name], msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize(
    ("groups", "stride", "padding", "dilation"),
    [(1, 1, 1, 1), (2, 2, 0, 1), (4, 1, 2, 2), (1, (2, 1), (1, 0), (1, 2))],
)
def test_zero_offset_unit_mask_equals_conv2d(groups, stride, padding, dilation):
    x = torch.randn(3, 8, 11, 9, dtype=torch.float64)
    weight = torch.randn(12, 8 // groups, 3, 3, dtype=torch.float64)
    bias = torch.randn(12, dtype=torch.float64)
    expected = F.conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups)
    offset = torch.zeros(3, 2 * 2 * 9, *expected.shape[2:], dtype=torch.float64)
    mask = torch.ones(3, 2 * 9, *expected.shape[2:], dtype=torch.float64)
    for m in (None, mask):
        out = deformconv.deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask=m)
        torch.testing.assert_close(out, expected)


def test_integer_offset_equals_conv_of_shifted_input():
    x = torch.randn(2, 4, 10, 10, dtype=torch.float64)
    weight = torch.randn(5, 4, 3, 3, dtype=torch.float64)
    offset = torch.zeros(2, 18, 8, 8, dtype=torch.float64)
    offset[:, 0::2] = 1.0  # every kernel point reads one row further down
    offset[:, 1::2] = -2.0  # and two columns further left
    shifted = torch.zeros_like(x)
    shifted[:, :, :-1, 2:] = x[:, :, 1:, :-2]
    out = deformconv.deform_conv2d(x, offset, weight)
    torch.testing.assert_close(out, F.conv2d(shifted, weight))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), 1e30])
def test_non_finite_and_huge_offsets_read_zero(bad):
    case = BASE.vary(batch=1, bias=False)
    tensors = case.tensors()
    tensors["offset"][:, :4] = bad
    out, grads = _forward_and_grads(deformconv.deform_conv2d, tensors, case.params())
    clean = dict(tensors, offset=tensors["offset"].clone())
    clean["offset"][:, :4] = 1e6  # certainly outside: reads zero with zero gradient
    expected_out, expected_grads = _forward_and_grads(deformconv.deform_conv2d, clean, case.params())
    torch.testing.assert_close(out, expected_out)
    for name in ("input", "weight", "mask"):
        torch.testing.assert_close(grads[name], expected_grads[name])
    assert torch.isfinite(grads["offset"][:, 4:]).all()


def test_batch_chunking_does_not_change_results():
    case = BASE.vary(batch=5)
    tensors, params = case.tensors(), case.params()
    out, grads = _forward_and_grads(deformconv.deform_conv2d, tensors, params)
    with deformconv.im2col_budget(1):  # one image per chunk, and 5 is not divisible by anything else
        chunked_out, chunked_grads = _forward_and_grads(deformconv.deform_conv2d, tensors, params)
    torch.testing.assert_close(chunked_out, out)
    for name in tensors:
        torch.testing.assert_close(chunked_grads[name], grads[name])


def test_non_contiguous_and_channels_last_inputs():
    case = BASE.vary(batch=2, in_channels=4, groups=2, offset_groups=2)
    tensors, params = case.tensors(), case.params()
    expected_out, expected_grads = _forward_and_grads(deformconv.deform_conv2d, tensors, params)
    channels_last = {
        k: (v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v) for k, v in tensors.items()
    }
    # A non-contiguous view of the same values: transpose a copy back.
    transposed = {
        k: v.transpose(-1, -2).contiguous().transpose(-1, -2) if v.dim() == 4 else v[::1] for k, v in tensors.items()
    }
    assert not transposed["input"].is_contiguous()
    for variant in (channels_last, transposed):
        out, grads = _forward_and_grads(deformconv.deform_conv2d, variant, params)
        assert out.is_contiguous()
        torch.testing.assert_close(out, expected_out)
        for name in tensors:
            torch.testing.assert_close(grads[name], expected_grads[name])


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-5), (torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
def test_low_precision_dtypes_against_float64(dtype, tolerance):
    case = BASE.vary(offset_groups=2)
    tensors = case.tensors()
    low = {k: v.to(dtype) for k, v in tensors.items()}
    # Compare with float64 on the same (rounded) inputs: only accumulation error remains.
    out, grads = _forward_and_grads(deformconv.deform_conv2d, low, case.params())
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads.values())
    expected_out, expected_grads = _forward_and_grads(
        deformconv.deform_conv2d, {k: v.double() for k, v in low.items()}, case.params()
    )

    def check(got, want):
        scale = want.abs().max().clamp_min(1.0)
        assert float((got.double() - want).abs().max() / scale) <= tolerance

    check(out, expected_out)
    for name in tensors:
        check(grads[name], expected_grads[name])


def test_dcnv1_takes_no_mask_gradient_and_bias_optional():
    case = BASE.vary(modulated=False, bias=False)
    tensors = {k: v.requires_grad_() for k, v in case.tensors().items()}
    out = deformconv.deform_conv2d(**tensors, **case.params())
    out.sum().backward()
    assert set(tensors) == {"input", "offset", "weight"}
    assert all(t.grad is not None for t in tensors.values())


def test_only_requested_gradients_are_computed():
    case = BASE
    tensors = case.tensors()
    tensors["weight"].requires_grad_()
    out = deformconv.deform_conv2d(**tensors, **case.params())
    (grad_weight,) = torch.autograd.grad(out.sum(), [tensors["weight"]])
    expected = torch.autograd.grad(
        deform_conv2d_oracle(
            **{k: v.detach() if k != "weight" else v for k, v in tensors.items()}, **case.params()
        ).sum(),
        [tensors["weight"]],
    )[0]
    torch.testing.assert_close(grad_weight, expected)


@pytest.mark.parametrize("modulated", [True, False])
def test_opcheck(modulated):
    case = BASE.vary(batch=2, modulated=modulated)
    t = {k: v.requires_grad_() for k, v in case.tensors().items()}
    args = (t["input"], t["offset"], t.get("mask"), t["weight"], t.get("bias"), [1, 1], [1, 1], [1, 1], 1)
    torch.library.opcheck(torch.ops.deformconv.deform_conv2d.default, args)
    grad = torch.randn(case.batch, case.out_channels, *case.out_size, dtype=torch.float64)
    backward_args = (
        grad,
        t["input"].detach(),
        t["offset"].detach(),
        None if t.get("mask") is None else t["mask"].detach(),
        t["weight"].detach(),
        [1, 1],
        [1, 1],
        [1, 1],
        2,
        True,
        True,
        True,
    )
    torch.library.opcheck(torch.ops.deformconv.deform_conv2d_backward.default, backward_args)
