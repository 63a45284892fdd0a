"""The ``"cpp"`` backend: multi-threaded C++ CPU kernels from the extension ``deformconv._C``.

The extension declares ``torch.ops.deformconv_cpu.deform_conv2d`` and
``torch.ops.deformconv_cpu.deform_conv2d_backward`` (a private namespace); the wrappers here
follow the kernel contract of :mod:`deformconv.dispatch`. The kernels sample the input
channels-last (bilinear weights computed once per sample point, reused across the channels of
its offset group), multiply with the weight via the BLAS library that PyTorch uses, and
compute the backward without atomics, so the results are bitwise reproducible.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import Tensor

from deformconv.dispatch import Backend, register_backend


def forward(
    input: Tensor,
    offset: Tensor,
    mask: Tensor | None,
    weight: Tensor,
    bias: Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    batch_chunk: int,
) -> Tensor:
    """Forward kernel; returns Tensor[N, C_out, H_out, W_out] (contiguous, dtype of input)."""
    return torch.ops.deformconv_cpu.deform_conv2d(
        input, offset, mask, weight, bias, list(stride), list(padding), list(dilation), batch_chunk
    )


def backward(
    grad_output: Tensor,
    input: Tensor,
    offset: Tensor,
    mask: Tensor | None,
    weight: Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    batch_chunk: int,
    need_input: bool,
    need_offset_mask: bool,
    need_weight: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Backward kernel; returns ``(grad_input, grad_offset, grad_mask, grad_weight)``.

    A gradient that is not needed (and ``grad_mask`` when ``mask`` is None) is an empty tensor.
    """
    return torch.ops.deformconv_cpu.deform_conv2d_backward(
        grad_output, input, offset, mask, weight, list(stride), list(padding), list(dilation),
        batch_chunk, need_input, need_offset_mask, need_weight,
    )


def register() -> None:
    """Registers the ``"cpp"`` backend for CPU tensors.

    Raises:
        ImportError: the extension was not built (``DEFORMCONV_NO_EXT=1`` at install time, or
            no C++ compiler); the reference backend then runs on CPU.
    """
    if os.environ.get("DEFORMCONV_NO_EXT", "0") == "1":
        raise ImportError("C++ extension disabled by DEFORMCONV_NO_EXT=1; using the reference")
    try:
        import deformconv._C  # noqa: F401  (loading the library registers the operators)
    except ImportError as error:
        raise ImportError(
            "C++ extension not built (DEFORMCONV_NO_EXT=1 at install time or no compiler); using the "
            f"reference. Rebuild with `pip install --no-build-isolation -e .` ({error})"
        ) from error
    register_backend(Backend("cpp", ("cpu",), forward, backward, priority=10))
