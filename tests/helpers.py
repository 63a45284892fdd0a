"""Helpers shared by every test file: tolerances, backend parameters, comparisons."""

from __future__ import annotations

import pytest
import torch

import deformconv
from deformconv.backends.registry import default_kernel

# Largest error allowed relative to the scale of the expected values, per dtype of the
# computation (half types round their inputs and output; the products accumulate in float32).
TOLERANCE = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
    torch.float16: 4e-3,
    torch.bfloat16: 3e-2,
}


def assert_close_to_scale(
    got: torch.Tensor, want: torch.Tensor, tolerance: float, name: str = "", min_scale: float = 1.0
) -> None:
    """``max |got - want| <= tolerance * max(min_scale, max |want|)``: relative to the scale of the values.

    A relative test element by element fails on values that cancel to nearly zero; an absolute
    one ignores the magnitude. Comparing to the largest expected value does neither.
    """
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    got64, want64 = got.detach().to(torch.float64), want.detach().to(torch.float64)
    assert torch.isfinite(got64).all() == torch.isfinite(want64).all(), f"{name}: non-finite values differ"
    if want64.numel() == 0:
        return
    scale = max(min_scale, want64.abs().max().item())
    error = (got64 - want64).abs().max().item()
    assert error <= tolerance * scale, f"{name}: max error {error:.3g} > {tolerance:.1g} x scale {scale:.3g}"


def backends_for(op: str, device_type: str = "cpu") -> list[str]:
    """Names of the loaded backends that implement ``op`` on ``device_type``."""
    return [
        name
        for name, state in deformconv.backends().items()
        if state["available"] and op in state["ops"] and ("any" in state["devices"] or device_type in state["devices"])
    ]


def backend_params(op: str, device_type: str = "cpu") -> list:
    """``pytest.param`` per backend of ``op`` on ``device_type``, with the backend's name as id."""
    return [pytest.param(name, id=name) for name in backends_for(op, device_type)]


def default_backend(op: str, device_type: str = "cpu") -> str:
    """The backend that runs ``op`` on ``device_type`` when none is forced."""
    return default_kernel(op, device_type).backend


def forward_and_grads(fn, tensors: dict[str, torch.Tensor], params: dict, grad_seed: int = 1):
    """``fn(**tensors, **params)`` and the gradient of every tensor argument for a random upstream gradient.

    Returns:
        ``(output, {name: gradient})``, detached; an unused input's gradient is zeros.
    """
    leaves = {k: v.detach().clone().requires_grad_() for k, v in tensors.items()}
    out = fn(**leaves, **params)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=torch.float64)
    grads = torch.autograd.grad(out, list(leaves.values()), upstream.to(out.dtype), allow_unused=True)
    return out.detach(), {k: torch.zeros_like(v) if g is None else g for (k, v), g in zip(leaves.items(), grads)}
