"""Launch parameters shared by the Triton launchers: dtypes, tile sizes, grid helpers.

The tile sizes are fixed heuristics, not autotuned: ``triton.autotune`` would time every
candidate configuration, also in the interpreter (``TRITON_INTERPRET=1``) that runs the test
suite without a GPU. They have not been tuned on a GPU.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from contextvars import ContextVar
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


# Integer arguments that only bound loops and masks, or scale the batch index: Triton would
# otherwise compile a variant per value class (== 1, divisible by 16) of each, for every image
# size a model meets. Channel counts and the other strides stay specialised: their divisibility
# is what lets the compiler prove the alignment of 16-byte vector loads and stores.
UNSPECIALIZED = ("total", "split_size", "height", "width", "s_in_n", "s_off_n", "s_m_n", "s_go_n", "s_gi_n")

# CUDA's limit on grid dimension x. Every kernel runs on a 1-d grid and decodes its tile indices
# from the program id, so the 65,535 limit of grid dimensions y and z never applies.
MAX_PROGRAMS = 2**31 - 1
# Output pixels of the batch (N*Ho*Wo) and pixels of one image plane (H*W) are int32 in the kernels.
MAX_PIXELS = 2**31 - 1 - 1024

# Replaces the launch by something else (see :func:`launch_hook`); None launches.
_launch_hook: ContextVar[Callable | None] = ContextVar("deformconv_triton_launch_hook", default=None)
# The compute capability (``major*10 + minor``) kernels are configured for when not on CUDA.
_target: ContextVar[int] = ContextVar("deformconv_triton_target", default=0)


@contextlib.contextmanager
def launch_hook(hook: Callable, capability: int) -> Iterator[None]:
    """Inside the block, :func:`launch` calls ``hook(kernel, grid, args, options)`` instead of launching.

    The launchers then choose their configurations for compute capability ``capability``
    (e.g. 80 for sm_80) whatever the tensors' device: this is how the kernels are compiled for a
    GPU that is not there (:mod:`deformconv.backends.triton.health`).
    """
    hook_token = _launch_hook.set(hook)
    target_token = _target.set(capability)
    try:
        yield
    finally:
        _launch_hook.reset(hook_token)
        _target.reset(target_token)


def capability(device: torch.device) -> int:
    """Compute capability ``major*10 + minor`` of ``device``; off CUDA, the one set by :func:`launch_hook` (else 0)."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return major * 10 + minor
    return _target.get()


def check_pixels(name: str, pixels: int) -> None:
    """Raises when ``pixels`` (a count the kernels index in int32) is too large."""
    if pixels > MAX_PIXELS:
        raise ValueError(f"{name} must be at most {MAX_PIXELS} for the Triton kernels, got {pixels}; split the batch")


def launch(kernel, programs: int, args: tuple, options: dict, what: str) -> None:
    """Runs ``kernel`` on ``programs`` programs (a 1-d grid) with ``args`` and ``options``.

    Raises:
        ValueError: more programs than CUDA allows in a grid; ``what`` says which count.
    """
    if programs > MAX_PROGRAMS:
        raise ValueError(f"{what} = {programs} programs exceed CUDA's grid limit of {MAX_PROGRAMS}; split the batch")
    hook = _launch_hook.get()
    if hook is not None:
        hook(kernel, (programs,), args, options)
    else:
        kernel[(programs,)](*args, **options)


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
    """input with the channels of a pixel contiguous, so that a corner tile reads contiguous memory.

    The kernels read the input through its strides: a tensor whose channel stride is already 1
    (channels-last, or any view with channels innermost) is passed through without a copy.
    """
    if input.stride(1) == 1 or input.shape[1] == 1:
        return input
    return input.contiguous(memory_format=torch.channels_last)
