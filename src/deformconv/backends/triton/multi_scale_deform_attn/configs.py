"""Launch configurations of the multi-scale deformable attention kernels: tiles, warps, stages.

One configuration per kernel, for every dtype and GPU family: compiled for sm_75, sm_80 and
sm_90 at Deformable DETR's shapes, none spills registers and none uses more than 4 KB of shared
memory; the kernel health check (:mod:`deformconv.backends.triton.health`, table in
``backends/triton/HEALTH.md``) verifies exactly that without a GPU. Not autotuned
(``triton.autotune`` times candidates on the GPU, which the interpreter that runs the tests
cannot do) and not yet timed on a GPU.

Example:
    >>> config("forward", channels=32).block_d
    32
"""

from __future__ import annotations

from dataclasses import dataclass

import triton

from deformconv.backends.triton.deform_conv2d.configs import MAX_REGISTERS, REGISTER_FILE

KERNELS = ("forward", "backward", "value_grad")


@dataclass(frozen=True)
class Config:
    """One launch configuration.

    Attributes:
        block_q: queries per program (``value_grad``: unused, a program walks every query).
        block_d: channels per program (or per step of the backward's channel loop).
        num_warps, num_stages: Triton's launch options (ignored by the interpreter).
        full_registers: set the register ceiling explicitly (``maxnreg``: all the registers a
            thread of this block size may have). Without it, the ptxas that Triton 3.9 runs
            settles on 48-168 registers for the forward and the backward and spills 8-104 bytes
            per thread on sm_75 or sm_90.
    """

    block_q: int
    block_d: int
    num_warps: int
    num_stages: int
    full_registers: bool

    def options(self) -> dict:
        """Triton's launch options of this configuration."""
        options = {"num_warps": self.num_warps, "num_stages": self.num_stages}
        if self.full_registers:
            options["maxnreg"] = min(MAX_REGISTERS, REGISTER_FILE // (32 * self.num_warps))
        return options


# kernel -> (queries per program, channels per program at most, warps, stages, full registers)
_LIMITS = {
    "forward": (16, 64, 4, 2, True),
    "backward": (16, 64, 4, 2, True),
    # One thread per channel lane orders the read-modify-write of a row (see the kernel): 32
    # lanes, one warp.
    "value_grad": (1, 32, 1, 1, False),
}


def config(kernel: str, channels: int) -> Config:
    """The configuration of ``kernel`` for ``channels`` per head (D); ``kernel`` is one of ``KERNELS``."""
    block_q, max_d, num_warps, num_stages, full_registers = _LIMITS[kernel]
    block_d = max_d if kernel == "value_grad" else max(16, min(max_d, triton.next_power_of_2(channels)))
    return Config(block_q, block_d, num_warps, num_stages, full_registers)
