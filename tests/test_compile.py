"""torch.compile traces the op with no graph break, forward and backward."""

from __future__ import annotations

import pytest
import torch

import deformconv
from cases import BASE


def test_compile_fullgraph_forward_and_backward():
    case = BASE.vary(offset_groups=2)
    tensors = {k: v.float().requires_grad_() for k, v in case.tensors().items()}

    def layer(input, offset, weight, bias, mask):
        return torch.relu(deformconv.deform_conv2d(input, offset, weight, bias, 1, 1, 1, mask)) * 2

    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    out = compiled(**tensors)
    expected = layer(**tensors)
    torch.testing.assert_close(out, expected)
    grads = torch.autograd.grad(out.sum(), list(tensors.values()))
    expected_grads = torch.autograd.grad(expected.sum(), list(tensors.values()))
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want)


def test_compile_with_inductor():
    case = BASE.vary(modulated=False)
    tensors = {k: v.float() for k, v in case.tensors().items()}
    compiled = torch.compile(deformconv.deform_conv2d, fullgraph=True)
    torch.testing.assert_close(
        compiled(**tensors, **case.params()), deformconv.deform_conv2d(**tensors, **case.params())
    )


def test_dynamic_shapes_trace_once_and_the_fake_kernel_validates():
    def layer(input, offset, weight, mask):
        return deformconv.deform_conv2d(input, offset, weight, padding=1, mask=mask)

    compiled = torch.compile(layer, fullgraph=True, dynamic=True, backend="aot_eager")
    for batch, size in ((2, (6, 7)), (3, (9, 5))):
        tensors = BASE.vary(batch=batch, size=size, bias=False).tensors(dtype=torch.float32)
        torch.testing.assert_close(compiled(**tensors), layer(**tensors))
    bad = BASE.vary(bias=False).tensors(dtype=torch.float32)
    bad["offset"] = bad["offset"][:, :, :5]
    with pytest.raises(Exception, match=r"offset must have shape \[N, 2\*offset_groups\*kh\*kw, H_out, W_out\]"):
        compiled(**bad)
