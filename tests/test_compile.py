"""torch.compile traces the op with no graph break, forward and backward."""

from __future__ import annotations

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
