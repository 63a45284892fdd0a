"""Launch configurations of the ``deform_conv2d`` kernels: tiles, warps and pipeline stages.

Chosen per kernel, tile-product path, dtype and GPU family so that, compiled for sm_75, sm_80
and sm_90, no kernel spills registers and its shared memory fits the family's smallest
per-block limit; the kernel health check (:mod:`deformconv.backends.triton.health`, table in
the README) verifies exactly that on every CI run without a GPU. They are not autotuned:
``triton.autotune`` times candidates on the GPU, which the interpreter that runs the test
suite cannot do, and which timings would have to decide (not yet measured on a GPU).

Half types get wider output-channel tiles than float32: one gather of the input then feeds
more output channels, and their tiles take half the registers and shared memory. float64 and
channel runs narrower than 16 broadcast and sum (no ``tl.dot``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

from deformconv.ops.deform_conv2d.geometry import ConvGeometry

# Registers of one thread at most, and of one block at most (every GPU since Kepler).
MAX_REGISTERS = 255
REGISTER_FILE = 65536
# tl.dot needs every tile dimension >= 16; narrower channel runs use broadcast-and-sum.
MIN_DOT = 16
KERNELS = ("forward", "depthwise", "columns", "data_grad", "weight_grad")
# The kernels that multiply tiles (the others sample and multiply-add element by element).
DOT_KERNELS = ("forward", "data_grad", "weight_grad")


@dataclass(frozen=True)
class Config:
    """One launch configuration.

    Attributes:
        block_p: output pixels per tile.
        block_c: input channels per tile (within one group and one offset group).
        block_o: output channels per tile (within one group).
        use_dot: ``tl.dot`` (both channel tiles >= 16) or broadcast-and-sum.
        num_warps, num_stages: Triton's launch options (ignored by the interpreter).
        full_registers: set the register ceiling explicitly (``maxnreg``: all the registers a
            thread of this block size may have). Without it, the ptxas that Triton 3.9 runs
            settles on 80-128 registers for some kernels and spills a few bytes to local
            memory; with it, others grow to 255 registers and spill. Set where it removes spills.
    """

    block_p: int
    block_c: int
    block_o: int
    use_dot: bool
    num_warps: int
    num_stages: int
    full_registers: bool = False

    def launch_options(self) -> dict:
        """Triton's launch options of this configuration."""
        options = {"num_warps": self.num_warps, "num_stages": self.num_stages}
        if self.full_registers:
            options["maxnreg"] = min(MAX_REGISTERS, REGISTER_FILE // (32 * self.num_warps))
        return options

    def options(self) -> dict:
        """The kernel keyword arguments of this configuration (tiles and launch options)."""
        return {
            "BLOCK_P": self.block_p,
            "BLOCK_C": self.block_c,
            "BLOCK_O": self.block_o,
            "USE_DOT": self.use_dot,
            **self.launch_options(),
        }


@dataclass(frozen=True)
class _Limits:
    block_p: int
    max_c: int
    max_o: int
    num_warps: int
    num_stages: int
    full_registers: bool = False


# (kernel, path, dtype class) -> limits on GPUs of compute capability 8.x and 9.x.
_AMPERE_AND_LATER = {
    ("forward", "dot", "half"): _Limits(64, 32, 128, 8, 3),
    ("forward", "dot", "fp32"): _Limits(64, 32, 64, 8, 2),
    ("forward", "fma", "any"): _Limits(64, 8, 16, 4, 2),
    ("depthwise", "any", "any"): _Limits(32, 32, 1, 4, 2, full_registers=True),
    ("columns", "fma", "fp64"): _Limits(64, 16, 1, 4, 2),
    ("columns", "any", "any"): _Limits(64, 32, 1, 4, 2),
    ("data_grad", "dot", "half"): _Limits(64, 32, 64, 8, 2),
    ("data_grad", "dot", "fp32"): _Limits(64, 16, 32, 8, 2),
    ("data_grad", "fma", "any"): _Limits(32, 8, 16, 4, 2, full_registers=True),
    ("weight_grad", "dot", "half"): _Limits(64, 32, 64, 8, 2),
    # One stage: pipelined, the float32 weight gradient spills (255 registers) on sm_80 and sm_90.
    ("weight_grad", "dot", "fp32"): _Limits(64, 32, 64, 8, 1),
    ("weight_grad", "fma", "any"): _Limits(64, 8, 16, 4, 2),
}
# Hopper (sm_90) where it differs: ptxas keeps the float32 input gradient at 128 registers
# with 8 warps there, and spills.
_HOPPER = {
    ("data_grad", "dot", "fp32"): _Limits(32, 16, 32, 4, 2),
}
# Turing (sm_75): 64 KB of shared memory and no bfloat16 tensor cores; smaller tiles.
_TURING = {
    ("forward", "dot", "half"): _Limits(32, 32, 64, 4, 2),
    ("forward", "dot", "fp32"): _Limits(32, 32, 64, 4, 2),
    ("data_grad", "dot", "half"): _Limits(32, 16, 32, 4, 2),
    ("data_grad", "dot", "fp32"): _Limits(32, 32, 32, 4, 2),
    ("weight_grad", "dot", "half"): _Limits(32, 32, 32, 4, 2),
    ("weight_grad", "dot", "fp32"): _Limits(32, 32, 32, 4, 2),
}


def _dtype_class(dtype: torch.dtype) -> str:
    return {torch.float16: "half", torch.bfloat16: "half", torch.float32: "fp32"}.get(dtype, "fp64")


def _limits(kernel: str, path: str, dtype: torch.dtype, capability: int) -> _Limits:
    if 0 < capability < 80:
        tables = (_TURING, _AMPERE_AND_LATER)
    elif capability >= 90:
        tables = (_HOPPER, _AMPERE_AND_LATER)
    else:
        tables = (_AMPERE_AND_LATER,)
    for table in tables:
        for key in ((kernel, path, _dtype_class(dtype)), (kernel, path, "any"), (kernel, "any", "any")):
            if key in table:
                return table[key]
    raise KeyError(f"no launch configuration for kernel {kernel!r}")


def config(kernel: str, in_width: int, out_per_group: int, dtype: torch.dtype, capability: int) -> Config:
    """The configuration of ``kernel`` for a layer on a GPU of compute capability ``capability``.

    Args:
        kernel: one of ``KERNELS``.
        in_width: input channels that share a group and an offset group (the widest run a
            channel tile can cover without mixing offsets or weights).
        out_per_group: output channels per group.
        dtype: the input dtype.
        capability: ``major*10 + minor`` (0 off CUDA: the interpreter runs the sm_80 tiles).
    """
    use_dot = kernel in DOT_KERNELS and dtype != torch.float64 and min(in_width, out_per_group) >= MIN_DOT
    limits = _limits(kernel, "dot" if use_dot else "fma", dtype, capability)
    # Blocks of at least 2 lanes keep every tensor a true 2-d/3-d block.
    block_c = max(2, min(limits.max_c, triton.next_power_of_2(in_width)))
    block_o = max(2, min(limits.max_o, triton.next_power_of_2(out_per_group)))
    return Config(limits.block_p, block_c, block_o, use_dot, limits.num_warps, limits.num_stages, limits.full_registers)


def flat_channel_tiles(geometry: ConvGeometry, block_c: int) -> bool:
    """Whether every channel tile of ``block_c`` channels of a group lies in one offset group.

    Then a kernel samples each tile once per kernel point, in one loop (always with one offset
    group); otherwise a tile may need the positions of two offset groups.
    """
    if geometry.offset_groups == 1:
        return True
    return geometry.in_per_offset_group % block_c == 0 and geometry.in_per_group % block_c == 0
