"""How every Triton kernel of deformconv is launched: a 1-d grid, checked, and observable.

Launchers call :func:`launch` instead of ``kernel[grid](...)``. It checks the grid against
CUDA's limits and, inside :func:`launch_hook`, hands the launch to a hook instead: the kernel
health check (:mod:`deformconv.backends.triton.health`) compiles every launch for a GPU that is
not there that way. Launchers choose configurations for :func:`capability`, which the hook
sets when no GPU is present.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar

import torch

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
def configured_for(capability: int) -> Iterator[None]:
    """Inside the block, launchers off CUDA choose the configurations of compute capability ``capability``.

    The interpreter tests use it to run the tiles of each GPU family on the CPU.
    """
    token = _target.set(capability)
    try:
        yield
    finally:
        _target.reset(token)


@contextlib.contextmanager
def launch_hook(hook: Callable, capability: int) -> Iterator[None]:
    """Inside the block, :func:`launch` calls ``hook(kernel, grid, args, options)`` instead of launching.

    The launchers then choose their configurations for compute capability ``capability``
    (e.g. 80 for sm_80) whatever the tensors' device: this is how the kernels are compiled for a
    GPU that is not there (:mod:`deformconv.backends.triton.health`).
    """
    token = _launch_hook.set(hook)
    try:
        with configured_for(capability):
            yield
    finally:
        _launch_hook.reset(token)


def capability(device: torch.device) -> int:
    """``major*10 + minor`` of ``device``; off CUDA, the one set by :func:`configured_for` (else 0)."""
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
