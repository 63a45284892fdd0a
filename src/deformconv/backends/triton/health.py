"""Kernel health without a GPU: compile every Triton kernel for real NVIDIA targets and read its resources.

Triton compiles a kernel for any target it knows without a GPU being present. Each operator's
sub-package of this backend lists *health cases* in its own ``health.py`` (a function
``cases() -> list[HealthCase]``): each case runs the operator's real launchers on small CPU
tensors of a representative shape. Inside :func:`compile_case` every launch that goes through
:func:`deformconv.backends.triton.runtime.launch` is compiled for the chosen target instead of
run (with the configuration the launcher picks for that target), and the compiled binary's
registers, spilled bytes (the per-thread stack frame, which these kernels only use for spills)
and shared memory are read with ``cuobjdump`` (shipped with Triton).

A kernel is healthy on a target when it compiles, spills nothing, and its shared memory fits
:attr:`Target.shared_limit`. The limits are the per-block opt-in maxima of the smallest GPU of
each family the launchers configure alike: sm_75 64 KB (Turing); sm_80 99 KB, because the
configuration chosen for compute capability 8.x also runs on sm_86/sm_89 (RTX 30/40, A10,
L4, L40), whose limit is 99 KB, not the A100's 163 KB; sm_90 227 KB (H100/H200).

Print the table (kernel x target x dtype) with::

    python -m deformconv.backends.triton.health [--targets 80,90] [--dtypes float16,float32]

An operator added later plugs in by adding ``backends/triton/<op>/health.py``; nothing else
lists it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import pkgutil
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from deformconv.backends.registry import registered

KB = 1024


@dataclass(frozen=True)
class HealthCase:
    """Launches of one operator at one representative shape and dtype.

    Attributes:
        name: ``"<operator>/<shape>"``, e.g. ``"deform_conv2d/dot64"``.
        dtype: the dtype of the tensors ``run`` uses.
        run: runs the operator's launchers on CPU tensors (each launch is compiled, not run).
    """

    name: str
    dtype: torch.dtype
    run: Callable[[], None]


@dataclass(frozen=True)
class Target:
    """A GPU architecture to compile for: name, compute capability and shared memory per block."""

    name: str
    capability: int
    shared_limit: int


TARGETS = (
    Target("sm_75", 75, 64 * KB),
    Target("sm_80", 80, 99 * KB),
    Target("sm_90", 90, 227 * KB),
)


@dataclass(frozen=True)
class KernelHealth:
    """Resources of one compiled kernel.

    Attributes:
        spill_bytes: per-thread stack frame (bytes of local memory per thread); 0 when nothing spills.
        shared: dynamic shared memory per block (bytes).
    """

    case: str
    kernel: str
    target: Target
    dtype: torch.dtype
    registers: int
    spill_bytes: int
    shared: int
    num_warps: int
    num_stages: int

    @property
    def healthy(self) -> bool:
        return self.spill_bytes == 0 and self.shared <= self.target.shared_limit


def collect_cases() -> list[HealthCase]:
    """The health cases of every operator sub-package of this backend that has a ``health`` module.

    Importing an operator's sub-package registers its kernels for CUDA; on a machine without a
    GPU that registration is undone, so the backend stays unavailable there as before.
    """
    package = importlib.import_module("deformconv.backends.triton")
    cases: list[HealthCase] = []
    with registered():
        for module in pkgutil.iter_modules(package.__path__):
            if not module.ispkg or module.name.startswith("_"):
                continue
            name = f"{package.__name__}.{module.name}.health"
            if importlib.util.find_spec(name) is not None:
                cases.extend(importlib.import_module(name).cases())
    return cases


class _CompileOnlyDriver:
    """A Triton driver that answers for a GPU of the given capability that is not there."""

    def __init__(self, capability: int) -> None:
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", capability, 32)
        self.capability = capability

    def get_current_target(self):
        return self.target

    def get_current_device(self) -> int:
        # Triton keeps one kernel cache per device: one per target here.
        return self.capability

    def get_current_stream(self, device=None) -> int:
        return 0

    def get_active_torch_device(self) -> torch.device:
        return torch.device("cpu")

    def is_active(self) -> bool:
        return True


@contextlib.contextmanager
def _driver(capability: int) -> Iterator[None]:
    from triton.runtime.driver import driver

    previous = driver._active  # None until a driver was needed; a CPU-only machine has none
    driver.set_active(_CompileOnlyDriver(capability))
    try:
        yield
    finally:
        driver.set_active(previous)


def _resources(cubin: bytes) -> tuple[int, int]:
    """(registers, stack bytes) of a cubin, from ``cuobjdump -res-usage``."""
    from triton import knobs

    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        text = subprocess.run(
            [knobs.nvidia.cuobjdump.path, "-res-usage", file.name], capture_output=True, text=True, check=True
        ).stdout
    registers = re.search(r"REG:(\d+)", text)
    stack = re.search(r"STACK:(\d+)", text)
    if registers is None or stack is None:
        raise RuntimeError(f"cuobjdump printed no resource usage:\n{text}")
    return int(registers.group(1)), int(stack.group(1))


def compile_case(case: HealthCase, target: Target) -> list[KernelHealth]:
    """Compiles every launch of ``case`` for ``target``; one :class:`KernelHealth` per launch."""
    from deformconv.backends.triton.runtime import launch_hook

    compiled = []

    def compile_only(kernel, grid, args, options):
        # The switches that are on tell variants of one kernel apart (e.g. DETERMINISTIC).
        switches = ",".join(name for name, value in options.items() if value is True)
        compiled.append((f"{kernel.fn.__name__}[{switches}]", kernel.warmup(*args, grid=grid, **options)))

    with registered(), _driver(target.capability), launch_hook(compile_only, target.capability):
        case.run()
    rows = []
    for name, kernel in compiled:
        registers, spills = _resources(kernel.asm["cubin"])
        rows.append(
            KernelHealth(
                case=case.name,
                kernel=name,
                target=target,
                dtype=case.dtype,
                registers=registers,
                spill_bytes=spills,
                shared=kernel.metadata.shared,
                num_warps=kernel.metadata.num_warps,
                num_stages=kernel.metadata.num_stages,
            )
        )
    return rows


def format_table(rows: list[KernelHealth]) -> str:
    """The rows as a Markdown table: kernel x target x dtype with registers, spills and shared memory."""
    lines = [
        "| case | kernel | target | dtype | regs | spill B | smem KB (limit) | warps | stages | ok |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        dtype = str(r.dtype).removeprefix("torch.")
        smem = f"{r.shared / KB:.0f} ({r.target.shared_limit // KB})"
        lines.append(
            f"| {r.case} | {r.kernel} | {r.target.name} | {dtype} | {r.registers} | {r.spill_bytes} | {smem} "
            f"| {r.num_warps} | {r.num_stages} | {'yes' if r.healthy else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Prints the health table; exit status 1 when a kernel spills or exceeds shared memory."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default=",".join(str(t.capability) for t in TARGETS))
    parser.add_argument("--dtypes", default="float32,float16,bfloat16,float64")
    parser.add_argument("--cases", default="", help="only cases whose name contains this")
    args = parser.parse_args(argv)
    capabilities = {int(c) for c in args.targets.split(",")}
    dtypes = {getattr(torch, d) for d in args.dtypes.split(",")}
    rows = []
    for case in collect_cases():
        if case.dtype not in dtypes or args.cases not in case.name:
            continue
        for target in TARGETS:
            if target.capability in capabilities:
                rows.extend(compile_case(case, target))
    print(format_table(rows))
    return 0 if all(r.healthy for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
