"""What the launchers share: dtypes and precision, argument layouts, the device to launch on.

Tile sizes and launch options are in :mod:`.configs`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import triton.language as tl

_TL_DTYPES = {
    torch.float64: tl.float64,
    torch.float32: tl.float32,
    torch.float16: tl.float16,
    torch.bfloat16: tl.bfloat16,
}

# Triton decides when a kernel is decorated whether it runs in its CPU interpreter
# (TRITON_INTERPRET=1, how the test suite runs without a GPU); this module is imported just
# before the kernels are defined, so it sees the same setting.
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"


@dataclass(frozen=True)
class Precision:
    """How a kernel computes for one input dtype.

    Attributes:
        acc: accumulation dtype (float64 for float64 input, float32 otherwise).
        io: the input dtype; ``tl.dot`` operands are rounded to it.
        operand: dtype of the ``tl.dot`` operands (the input dtype: tensor cores for halves).
        dot_precision: ``input_precision`` of ``tl.dot`` for float32 operands: ``"ieee"`` (exact
            float32 products, torchvision's numbers) unless the user allows TF32 matmuls (see
            :func:`tf32_enabled`).
    """

    acc: tl.dtype
    io: tl.dtype
    operand: tl.dtype
    dot_precision: str


def tf32_enabled() -> bool:
    """Whether the user allows TF32 for float32 matmuls, through the API this PyTorch offers.

    From PyTorch 2.9 on the setting is ``torch.backends.cuda.matmul.fp32_precision`` (``"tf32"``
    or ``"ieee"``; it also reflects ``torch.backends.fp32_precision`` and the legacy
    ``allow_tf32``). Once a user sets it, *reading* the legacy ``allow_tf32`` raises, so the
    legacy flag is read only on a PyTorch without the new attribute. Both default to exact IEEE
    float32, and so do the kernels.
    """
    matmul = torch.backends.cuda.matmul
    new_api = getattr(matmul, "fp32_precision", None)
    if new_api is not None:
        return new_api == "tf32"
    return bool(matmul.allow_tf32)


def precision(dtype: torch.dtype) -> Precision:
    """The :class:`Precision` of a kernel on ``dtype`` input."""
    acc = tl.float64 if dtype == torch.float64 else tl.float32
    io = _TL_DTYPES[dtype]
    operand = io
    if operand == tl.bfloat16 and INTERPRETED:
        # The interpreter multiplies bfloat16 tiles as raw 16-bit integers; the operands are
        # still rounded to bfloat16 by the kernel, then widened exactly to float32.
        operand = tl.float32
    tf32 = dtype == torch.float32 and tf32_enabled()
    return Precision(acc=acc, io=io, operand=operand, dot_precision="tf32" if tf32 else "ieee")


# Integer arguments that only bound loops and masks, or scale the batch index: Triton would
# otherwise compile a variant per value class (== 1, divisible by 16) of each, for every image
# size a model meets. Channel counts and the strides of the input and of the input gradient
# stay specialised: their divisibility (by 16, from the channel count) is what lets the compiler
# prove the alignment of the vector loads, asynchronous copies and atomics along channels.
UNSPECIALIZED = ("total", "split_size", "height", "width", "s_off_n", "s_m_n", "s_go_n")


def multiprocessors(device: torch.device) -> int:
    """Streaming multiprocessors of ``device`` (a small fixed number off CUDA)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 2


@contextlib.contextmanager
def on_device(device: torch.device) -> Iterator[None]:
    """Makes ``device`` current while kernels launch (Triton launches on the current GPU)."""
    if device.type == "cuda":
        with torch.cuda.device(device):
            yield
    else:
        yield


def kernel_weight(weight: torch.Tensor) -> torch.Tensor:
    """weight (Tensor[C_out, C_in/groups, kh, kw]) as Tensor[kh*kw, C_in/groups, C_out], contiguous.

    Output channels are innermost so that a weight tile loads along contiguous memory. Packed at
    every call: a cache keyed on the tensor's version counter would miss updates made through
    ``weight.data`` (which bypass the counter, as EMA updates and ``gradcheck`` do), and the copy
    is small next to the convolution.
    """
    out_channels, in_per_group, kernel_h, kernel_w = weight.shape
    return weight.permute(2, 3, 1, 0).reshape(kernel_h * kernel_w, in_per_group, out_channels).contiguous()


def channels_last(input: torch.Tensor) -> torch.Tensor:
    """input with the channels of a pixel contiguous, so that a corner tile reads contiguous memory.

    The kernels read the input through its strides: a tensor whose channel stride is already 1
    (channels-last, or any view with channels innermost) is passed through without a copy.
    """
    if input.stride(1) == 1 or input.shape[1] == 1:
        return input
    return input.contiguous(memory_format=torch.channels_last)
