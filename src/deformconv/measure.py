"""Timing and peak memory of a callable, on CPU or CUDA, for the benchmarks.

Peak extra memory is the largest amount of tensor memory that a call holds at once beyond what
existed before it (its outputs and gradients included). On CUDA it is
``torch.cuda.max_memory_allocated``; on CPU it is the running sum of the allocations and frees
that PyTorch's CPU allocator reports to the profiler (``profile_memory=True``): scratch memory
that BLAS or oneDNN allocate on their own is not seen.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator

import torch


def _synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], object], device: str) -> float:
    """Wall time of one call of ``fn`` in milliseconds (CUDA events on a GPU)."""
    if torch.device(device).type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    begin = time.perf_counter()
    fn()
    return (time.perf_counter() - begin) * 1e3


def interleaved_medians(
    fns: dict[str, Callable[[], object]], device: str, warmup: int, repeat: dict[str, int]
) -> dict[str, float]:
    """Median time of each function over ``repeat[name]`` runs after ``warmup`` runs.

    The runs are interleaved (one of each function per round), so that a change of load on a
    shared machine affects every function alike and the ratios stay meaningful.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(max(repeat.values())):
        for name, fn in fns.items():
            if round_ < repeat[name]:
                times[name].append(time_ms(fn, device))
    return {name: statistics.median(values) for name, values in times.items()}


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silences file descriptor 2 (the profiler logs every session start and stop there)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_extra_mb(fn: Callable[[], object], device: str) -> float:
    """Peak tensor memory held by one call of ``fn`` beyond what existed before, in MiB."""
    if torch.device(device).type == "cuda":
        _synchronize(device)
        baseline = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        _synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - baseline) / 2**20
    activities = [torch.profiler.ProfilerActivity.CPU]
    with _quiet_stderr(), torch.profiler.profile(activities=activities, profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak / 2**20
