"""Launch parameters shared by the Triton launchers: dtypes, tile sizes, grid helpers.

The tile sizes are fixed heuristics, not autotuned: ``triton.autotune`` would time every
candidate configuration, also in the interpreter (``TRITON_INTERPRET=1``) that runs the test
suite without a GPU. They have not been tuned on a GPU.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

_TL_DTYPES = {
    torch.float64: tl.float64,
    torch.float32: tl.float32,
    torch.float16: tl.float16,
    torch.bfloat16: tl.bfloat16,
}

# Pixels per program. Output pixels of the whole batch form one dimension (N*Ho*Wo).
BLOCK_P = 64
# tl.dot needs every tile dimension >= 16; narrower channel counts use broadcast-and-sum.
_MIN_DOT = 16
_MAX_DOT_C = 32
_MAX_DOT_O = 64
_MAX_FMA_C = 8
_MAX_FMA_O = 16

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
        dot_precision: ``input_precision`` of ``tl.dot`` for float32 operands: ``"tf32"`` only
            when PyTorch allows TF32 matmuls (``torch.backends.cuda.matmul.allow_tf32``).
    """

    acc: tl.dtype
    io: tl.dtype
    operand: tl.dtype
    dot_precision: str


def precision(dtype: torch.dtype) -> Precision:
    """The :class:`Precision` of a kernel on ``dtype`` input."""
    acc = tl.float64 if dtype == torch.float64 else tl.float32
    io = _TL_DTYPES[dtype]
    operand = io
    if operand == tl.bfloat16 and INTERPRETED:
        # The interpreter multiplies bfloat16 tiles as raw 16-bit integers; the operands are
        # still rounded to bfloat16 by the kernel, then widened exactly to float32.
        operand = tl.float32
    tf32 = dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32
    return Precision(acc=acc, io=io, operand=operand, dot_precision="tf32" if tf32 else "ieee")


@dataclass(frozen=True)
class Tiles:
    """Tile sizes of the channel dimensions of a kernel.

    Attributes:
        block_c: input channels per tile (within one group and one offset group).
        block_o: output channels per tile (within one group).
        use_dot: ``tl.dot`` when both are >= 16, broadcast-and-sum otherwise.
    """

    block_c: int
    block_o: int
    use_dot: bool


def tiles(in_width: int, out_per_group: int, dtype: torch.dtype) -> Tiles:
    """Tile sizes for ``in_width`` contiguous input channels and ``out_per_group`` outputs.

    Args:
        in_width: input channels that share a group and an offset group (the widest run a
            channel tile can cover without mixing offsets or weights).
        out_per_group: output channels per group.
        dtype: the input dtype. float64 always broadcasts and sums: its ``tl.dot`` tiles need
            more shared memory than some GPUs have (180 KB for the forward on sm_90), and
            float64 is for accuracy, not speed.
    """
    if dtype != torch.float64 and min(in_width, out_per_group) >= _MIN_DOT:
        block_c = min(_MAX_DOT_C, triton.next_power_of_2(in_width))
        block_o = min(_MAX_DOT_O, triton.next_power_of_2(out_per_group))
        return Tiles(block_c, block_o, True)
    # Blocks of at least 2 lanes keep every tensor a true 2-d/3-d block.
    block_c = max(2, min(_MAX_FMA_C, triton.next_power_of_2(in_width)))
    block_o = max(2, min(_MAX_FMA_O, triton.next_power_of_2(out_per_group)))
    return Tiles(block_c, block_o, False)


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

    Output channels are innermost so that a weight tile loads along contiguous memory.
    """
    out_channels, in_per_group, kernel_h, kernel_w = weight.shape
    return weight.permute(2, 3, 1, 0).reshape(kernel_h * kernel_w, in_per_group, out_channels).contiguous()


def channels_last(input: torch.Tensor) -> torch.Tensor:
    """input in channels-last memory, so a corner tile reads contiguous channels of one pixel."""
    return input.contiguous(memory_format=torch.channels_last)
