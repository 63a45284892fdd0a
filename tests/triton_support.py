"""Shared set-up of the Triton kernel tests (``tests/test_triton_*.py``).

Without a GPU the kernels run in Triton's CPU interpreter on CPU tensors. Triton decides when a
kernel is decorated whether it is interpreted, so the process must start with
``TRITON_INTERPRET=1`` (``make test`` runs these files in a second pytest process); in any other
process without CUDA every module that imports this one is skipped. The kernel modules are
imported inside :func:`deformconv.backends.registered`, so importing them here registers nothing
for the rest of the process.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

import deformconv
from cases import Case
from deformconv.backends import Kernel, registered
from deformconv.backends.reference import deform_conv2d as reference
from deformconv.ops.deform_conv2d.contract import BACKWARD, FORWARD, NeededGrads
from deformconv.ops.deform_conv2d.geometry import ConvGeometry

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("Triton kernels without CUDA need TRITON_INTERPRET=1 from the process start", allow_module_level=True)
pytest.importorskip("triton")

with registered():
    from deformconv.backends.triton.deform_conv2d import backward, configs, forward, launch  # noqa: F401 (configs: for the tests)

assert DEVICE == "cuda" or launch.INTERPRETED, "the kernel modules were imported before TRITON_INTERPRET=1 was set"

# Largest error allowed, relative to the largest magnitude of the float64 reference result.
TOLERANCE = {torch.float64: 1e-12, torch.float32: 2e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
ALL_GRADS = NeededGrads(True, True, True)


def tensors(case: Case, dtype: torch.dtype, seed: int = 0) -> dict[str, torch.Tensor]:
    """The case's tensors plus ``grad_output``, all in ``dtype`` on ``DEVICE``."""
    result = case.tensors(torch.float64, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    result["grad_output"] = torch.randn(case.batch, case.out_channels, *case.out_size, generator=g, dtype=torch.float64)
    return {name: value.to(DEVICE, dtype) for name, value in result.items()}


def geometry(case: Case, t: dict[str, torch.Tensor], batch_chunk: int = 2) -> ConvGeometry:
    return ConvGeometry.of(t["input"], t["offset"], t["weight"], case.stride, case.padding, case.dilation, batch_chunk)


def forward_args(case: Case, t: dict[str, torch.Tensor], batch_chunk: int = 2) -> tuple:
    return (t["input"], t["offset"], t.get("mask"), t["weight"], t.get("bias"), geometry(case, t, batch_chunk))


def backward_args(case: Case, t: dict[str, torch.Tensor], batch_chunk: int = 2, need=ALL_GRADS) -> tuple:
    return (
        t["grad_output"],
        t["input"],
        t["offset"],
        t.get("mask"),
        t["weight"],
        geometry(case, t, batch_chunk),
        NeededGrads(*need),
    )


def as_float64(args: tuple) -> tuple:
    """The arguments for the reference: tensors and the geometry's dtype in float64, on the CPU."""

    def convert(a):
        if isinstance(a, torch.Tensor):
            return a.double().cpu()
        if isinstance(a, ConvGeometry):
            return dataclasses.replace(a, dtype=torch.float64)
        return a

    return tuple(convert(a) for a in args)


def assert_matches(got: torch.Tensor | None, want: torch.Tensor | None, dtype: torch.dtype, name: str) -> None:
    """got (in ``dtype``) equals the float64 ``want`` up to ``TOLERANCE[dtype]`` of its scale."""
    assert (got is None) == (want is None), f"{name}: got {got is None=}, want {want is None=}"
    if got is None:
        return
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert got.dtype == dtype, f"{name}: dtype {got.dtype} != {dtype}"
    if want.numel() == 0:
        return
    scale = max(1.0, want.abs().max().item())
    error = (got.double().cpu() - want).abs().max().item()
    assert error <= TOLERANCE[dtype] * scale, f"{name}: max error {error:.3g} at scale {scale:.3g}"


def check_forward(case: Case, dtype: torch.dtype, t: dict[str, torch.Tensor], batch_chunk: int = 2) -> torch.Tensor:
    got = forward.deform_conv2d_forward(*forward_args(case, t, batch_chunk))
    assert got.is_contiguous()
    assert_matches(got, reference.deform_conv2d_forward(*as_float64(forward_args(case, t))), dtype, "output")
    return got


def check_backward(
    case: Case, dtype: torch.dtype, t: dict[str, torch.Tensor], batch_chunk: int = 2, need=ALL_GRADS
) -> tuple:
    got = backward.deform_conv2d_backward(*backward_args(case, t, batch_chunk, need))
    want = reference.deform_conv2d_backward(*as_float64(backward_args(case, t, batch_chunk, need)))
    for name, g, w in zip(("grad_input", "grad_offset", "grad_mask", "grad_weight"), got, want):
        assert g is None or g.is_contiguous(), name
        assert_matches(g, w, dtype, name)
    return got


@contextmanager
def triton_backend() -> Iterator[None]:
    """Makes the Triton kernels the backend of ``DEVICE`` for the public op inside the block."""
    with (
        registered(
            Kernel(FORWARD, "triton", DEVICE, forward.deform_conv2d_forward, 100),
            Kernel(BACKWARD, "triton", DEVICE, backward.deform_conv2d_backward, 100),
        ),
        deformconv.use_backend("triton"),
    ):
        yield


@contextmanager
def deterministic(mode: bool) -> Iterator[None]:
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(mode)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)
