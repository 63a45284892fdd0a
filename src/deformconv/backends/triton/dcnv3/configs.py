"""Launch configurations of the DCNv3 / DCNv4 kernels: pixel tiles, warps and pipeline stages.

A program holds a ``[BLOCK_Q, BLOCK_D]`` tile (``BLOCK_D``: the group's channels rounded up to a
power of two), so the pixel tile shrinks as groups widen. Chosen per kernel, dtype and GPU family
so that, compiled for sm_75, sm_80 and sm_90, no kernel spills registers and its shared memory
fits the family's smallest per-block limit; the kernel health check
(:mod:`deformconv.backends.triton.health`, table in ``backends/triton/HEALTH.md``) verifies
exactly that without a GPU. Not autotuned (``triton.autotune`` times candidates on the GPU,
which the interpreter that runs the tests cannot do) and not yet timed on a GPU.

Example:
    >>> config("forward", group_channels=64, dtype=torch.float16, capability=90).block_q
    32
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

from deformconv.backends.triton.deform_conv2d.configs import MAX_REGISTERS, REGISTER_FILE

KERNELS = ("forward", "backward")


@dataclass(frozen=True)
class Config:
    """One launch configuration.

    Attributes:
        block_q: output pixels per program.
        block_d: channels per program: the group's channels rounded up to a power of two.
        num_warps, num_stages: Triton's launch options (ignored by the interpreter).
        full_registers: set the register ceiling explicitly (``maxnreg``: all the registers a
            thread of this block size may have). Without it, the ptxas that Triton 3.9 runs
            keeps the float32 and float64 kernels under the registers they need on some
            targets and spills; the others keep their lower register counts (and occupancy).
    """

    block_q: int
    block_d: int
    num_warps: int
    num_stages: int
    full_registers: bool

    def options(self) -> dict:
        """The kernel keyword arguments of this configuration (tiles and launch options)."""
        options = {
            "BLOCK_Q": self.block_q,
            "BLOCK_D": self.block_d,
            "num_warps": self.num_warps,
            "num_stages": self.num_stages,
        }
        if self.full_registers:
            options["maxnreg"] = min(MAX_REGISTERS, REGISTER_FILE // (32 * self.num_warps))
        return options


@dataclass(frozen=True)
class _Limits:
    tile_elements: int
    max_q: int
    num_warps: int
    num_stages: int
    full_registers: bool = False


# (kernel, dtype class) -> limits on every GPU family (Turing included) unless _HOPPER differs.
_LIMITS = {
    ("forward", "half"): _Limits(2048, 64, 4, 2),
    ("forward", "fp32"): _Limits(2048, 64, 4, 2),
    # float64: 8 bytes spill from a [64, 32] tile on sm_90, and from a [32, 32] one on sm_80
    # unless the ceiling is explicit.
    ("forward", "fp64"): _Limits(1024, 64, 4, 2, full_registers=True),
    ("backward", "half"): _Limits(2048, 64, 4, 2),
    # The backward holds the gradient tile and a corner tile at once: with 2048 elements, float32
    # spills 16-176 bytes on sm_75 and sm_80, float64 480-800 bytes everywhere.
    ("backward", "fp32"): _Limits(1024, 64, 4, 2, full_registers=True),
    ("backward", "fp64"): _Limits(1024, 64, 4, 2, full_registers=True),
}
# Hopper (sm_90) where it differs: the float32 backward fits in 176 registers with 2048 elements.
_HOPPER = {
    ("backward", "fp32"): _Limits(2048, 64, 4, 2, full_registers=True),
}


def _dtype_class(dtype: torch.dtype) -> str:
    return {torch.float16: "half", torch.bfloat16: "half", torch.float32: "fp32"}.get(dtype, "fp64")


def config(kernel: str, group_channels: int, dtype: torch.dtype, capability: int) -> Config:
    """The configuration of ``kernel`` for groups of ``group_channels`` on compute capability ``capability``.

    Args:
        kernel: one of ``KERNELS``.
        group_channels: channels per group (D).
        dtype: the input dtype.
        capability: ``major*10 + minor`` (0 off CUDA: the interpreter runs the sm_80 tiles).
    """
    key = (kernel, _dtype_class(dtype))
    limits = _HOPPER.get(key, _LIMITS[key]) if capability >= 90 else _LIMITS[key]
    block_d = triton.next_power_of_2(group_channels)
    block_q = max(1, min(limits.max_q, limits.tile_elements // block_d))
    return Config(block_q, block_d, limits.num_warps, limits.num_stages, limits.full_registers)
