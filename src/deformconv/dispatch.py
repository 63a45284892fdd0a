"""Which kernel runs the deformable-convolution ops on which device.

Every backend implements the two ops declared in :mod:`deformconv.ops.deform_conv2d` (forward
and backward) with the same signature. The pure-PyTorch ``"reference"`` backend runs on every
device; accelerated backends register themselves when they can be loaded (``"cpp"`` on CPU
when the C++ extension is built, ``"triton"`` on CUDA when Triton imports) and otherwise record
why not. The op picks, for the device of its input, the backend the user asked for or the
fastest available one.

Example:
    >>> deformconv.backends()            # what is available, and what runs where
    >>> deformconv.set_backend("reference")   # force one backend everywhere
    >>> with deformconv.use_backend("cpp"):
    ...     y = deformconv.deform_conv2d(x, offset, weight)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

KNOWN_BACKENDS = ("reference", "cpp", "triton")


@dataclass(frozen=True)
class Backend:
    """A set of kernels for the forward and backward ops.

    Attributes:
        name: one of ``KNOWN_BACKENDS``.
        device_types: the ``torch.device.type`` values it runs on; empty means every device.
        forward: called with the forward op's arguments.
        backward: called with the backward op's arguments.
        priority: among backends for one device, the highest priority is the default.
    """

    name: str
    device_types: tuple[str, ...]
    forward: Callable
    backward: Callable
    priority: int

    def runs_on(self, device_type: str) -> bool:
        return not self.device_types or device_type in self.device_types


_available: dict[str, Backend] = {}
_unavailable: dict[str, str] = {}
_forced: str | None = None


def register_backend(backend: Backend) -> None:
    """Makes ``backend`` available to the ops (replacing one of the same name)."""
    if backend.name not in KNOWN_BACKENDS:
        raise ValueError(f"backend name must be one of {KNOWN_BACKENDS}, got {backend.name!r}")
    _unavailable.pop(backend.name, None)
    _available[backend.name] = backend


def mark_unavailable(name: str, reason: str) -> None:
    """Records that backend ``name`` could not be loaded, and why (shown by :func:`backends`)."""
    _available.pop(name, None)
    _unavailable[name] = reason


def _check_name(name: str) -> None:
    if name not in KNOWN_BACKENDS:
        raise ValueError(f"backend must be one of {KNOWN_BACKENDS}, got {name!r}")
    if name in _unavailable:
        raise RuntimeError(f"backend {name!r} is not available: {_unavailable[name]}")
    if name not in _available:
        raise RuntimeError(f"backend {name!r} is not available: it was not registered")


def set_backend(name: str | None) -> None:
    """Forces backend ``name`` for every op call; ``None`` restores automatic choice.

    Raises:
        ValueError: ``name`` is not a known backend.
        RuntimeError: the backend is known but could not be loaded (the reason is given).
    """
    global _forced
    if name is not None:
        _check_name(name)
    _forced = name


def get_forced_backend() -> str | None:
    """The backend forced by :func:`set_backend`, or ``None`` for automatic choice."""
    return _forced


@contextlib.contextmanager
def use_backend(name: str | None) -> Iterator[None]:
    """Context manager form of :func:`set_backend`; restores the previous choice on exit."""
    previous = _forced
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def select(device_type: str) -> Backend:
    """The backend that runs the ops for a tensor on ``device_type``.

    Raises:
        RuntimeError: the forced backend does not run on ``device_type``.
    """
    if _forced is not None:
        backend = _available[_forced]
        if not backend.runs_on(device_type):
            raise RuntimeError(
                f"backend {_forced!r} runs on {list(backend.device_types)}, "
                f"not on {device_type!r}; call deformconv.set_backend(None) for automatic choice"
            )
        return backend
    return select_default(device_type)


def backends() -> dict[str, dict[str, object]]:
    """What each backend is: available or not (and why), and the devices it runs on.

    Returns:
        ``{name: {"available": bool, "devices": [...], "reason": str, "default_for": [...]}}``;
        ``"default_for"`` lists the device types on which it is the automatic choice,
        ``"forced"`` is True for a backend forced with :func:`set_backend`.
    """
    report: dict[str, dict[str, object]] = {}
    for name in KNOWN_BACKENDS:
        if name in _available:
            backend = _available[name]
            devices = list(backend.device_types) or ["any"]
            default_for = [d for d in ("cpu", "cuda") if select_default(d).name == name]
            report[name] = {
                "available": True,
                "devices": devices,
                "default_for": default_for,
                "forced": _forced == name,
            }
        else:
            reason = _unavailable.get(name, "not registered")
            report[name] = {"available": False, "reason": reason, "forced": False}
    return report


def select_default(device_type: str) -> Backend:
    """The automatic choice for ``device_type``, ignoring any forced backend."""
    candidates = [b for b in _available.values() if b.runs_on(device_type)]
    return max(candidates, key=lambda b: b.priority)


def _apply_environment() -> None:
    """Honours ``DEFORMCONV_BACKEND`` (a backend name) once all backends have loaded."""
    name = os.environ.get("DEFORMCONV_BACKEND")
    if name:
        set_backend(name)
