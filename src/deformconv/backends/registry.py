"""Which kernel runs which operator on which device.

A kernel is registered per (operator, backend, device type). An operator is the name of one
custom op (``"deform_conv2d"``, ``"deform_conv2d_backward"``, ...); a backend is a named set of
kernels (``"reference"``, ``"cpp"``, ``"triton"``, or a third party's); the device type is a
``torch.device.type`` or ``"*"`` for every device. A backend may implement some operators and
not others. For a call, the op asks :func:`select` for the kernel: the backend forced by the
user if any (an error if it has no kernel for that operator and device), otherwise the
registered kernel of highest priority. Two backends may not register the same operator and
device with the same priority: the automatic choice would be arbitrary.

Example (a third-party backend):
    >>> from deformconv.backends import register_kernel
    >>> @register_kernel("deform_conv2d", backend="mine", device_types=("xpu",), priority=20)
    ... def forward(input, offset, mask, weight, bias, geometry): ...
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType

from deformconv import config

ANY_DEVICE = "*"


@dataclass(frozen=True)
class Kernel:
    """One registered kernel.

    Attributes:
        op: the operator it implements (the custom op's name without namespace).
        backend: the name of the backend it belongs to.
        device_type: the ``torch.device.type`` it runs on, or ``"*"`` for any.
        fn: the kernel; its signature is the operator's kernel contract.
        priority: among the kernels of one operator and device, the highest is the default.
    """

    op: str
    backend: str
    device_type: str
    fn: Callable
    priority: int


_kernels: dict[tuple[str, str], dict[str, Kernel]] = {}
_unavailable: dict[str, str] = {}
_first_use_warnings: dict[str, str] = {}


def _check_backend_name(name: str | None) -> str | None:
    if name is None:
        return None
    if not isinstance(name, str):
        raise ValueError(f"backend must be a backend name or None, got {name!r}")
    if name in _unavailable:
        raise RuntimeError(f"backend {name!r} is not available: {_unavailable[name]}")
    if name not in backend_names():
        raise ValueError(f"backend must be one of {sorted(backend_names())} or None, got {name!r}")
    return name


forced_backend = config.Setting("backend", None, _check_backend_name)


def backend_names() -> set[str]:
    """Names of the backends with at least one registered kernel."""
    return {backend for table in _kernels.values() for backend in table}


def add_kernel(kernel: Kernel) -> None:
    """Registers ``kernel`` (replacing the same backend's kernel for that operator and device).

    Raises:
        ValueError: another backend already registered this operator and device at the same
            priority.
    """
    table = _kernels.setdefault((kernel.op, kernel.device_type), {})
    for other in table.values():
        if other.backend != kernel.backend and other.priority == kernel.priority:
            raise ValueError(
                f"backends {other.backend!r} and {kernel.backend!r} both register {kernel.op!r} on "
                f"{kernel.device_type!r} with priority {kernel.priority}: give one a different priority"
            )
    table[kernel.backend] = kernel
    _unavailable.pop(kernel.backend, None)


def remove_backend(name: str) -> None:
    """Removes every kernel of backend ``name``."""
    for table in _kernels.values():
        table.pop(name, None)


def register_kernel(
    op: str, *, backend: str, device_types: Sequence[str] = (ANY_DEVICE,), priority: int = 10
) -> Callable[[Callable], Callable]:
    """Decorator that registers a function as ``backend``'s kernel of ``op`` on ``device_types``."""

    def decorate(fn: Callable) -> Callable:
        for device_type in device_types:
            add_kernel(Kernel(op, backend, device_type, fn, priority))
        return fn

    return decorate


def mark_unavailable(name: str, reason: str) -> None:
    """Records that backend ``name`` could not be loaded, and why (shown by :func:`backends`)."""
    remove_backend(name)
    _unavailable[name] = reason


def warn_on_first_use(device_type: str, message: str) -> None:
    """Issues ``message`` as a RuntimeWarning when a kernel is first selected for ``device_type``.

    A backend that could not load calls this when running without it is a surprise (a failed
    build) rather than a choice: the user learns it from the first call, not from a slow program.
    """
    _first_use_warnings[device_type] = message


def unavailable_reason(name: str) -> str | None:
    """Why backend ``name`` could not be loaded, or None if it loaded (or was never tried)."""
    return _unavailable.get(name)


def _candidates(op: str, device_type: str) -> list[Kernel]:
    return [*_kernels.get((op, device_type), {}).values(), *_kernels.get((op, ANY_DEVICE), {}).values()]


def default_kernel(op: str, device_type: str) -> Kernel:
    """The automatic choice for ``op`` on ``device_type``, ignoring any forced backend."""
    candidates = _candidates(op, device_type)
    if not candidates:
        raise RuntimeError(f"no backend implements {op!r} on {device_type!r}")
    return max(candidates, key=lambda kernel: kernel.priority)


def select(op: str, device_type: str) -> Kernel:
    """The kernel that runs ``op`` for tensors on ``device_type`` (its ``fn`` is the function).

    Raises:
        RuntimeError: the forced backend has no kernel for ``op`` on ``device_type``.
    """
    message = _first_use_warnings.pop(device_type, None)
    if message is not None:
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    forced = forced_backend.get()
    if forced is None:
        return default_kernel(op, device_type)
    for kernel in _candidates(op, device_type):
        if kernel.backend == forced:
            return kernel
    devices = sorted(
        {
            k.device_type
            for (name, _), table in _kernels.items()
            if name == op
            for k in table.values()
            if k.backend == forced
        }
    )
    raise RuntimeError(
        f"backend {forced!r} runs {op!r} on {devices}, not on {device_type!r}; "
        "call deformconv.set_backend(None) for automatic choice"
    )


def set_backend(name: str | None) -> None:
    """Forces backend ``name`` for every op call in the process; ``None`` restores the automatic choice.

    Raises:
        ValueError: ``name`` is not a registered backend.
        RuntimeError: the backend is known but could not be loaded (the reason is given).
    """
    forced_backend.set_default(name)


@contextlib.contextmanager
def use_backend(name: str | None) -> Iterator[None]:
    """Forces backend ``name`` in the current thread (or task) inside the ``with`` block.

    Example:
        >>> with deformconv.use_backend("reference"):
        ...     y = deformconv.deform_conv2d(x, offset, weight)
    """
    with forced_backend.override(name):
        yield


@contextlib.contextmanager
def registered(*kernels: Kernel) -> Iterator[None]:
    """Registers ``kernels`` inside the ``with`` block only (for tests of a temporary backend)."""
    saved = {key: dict(table) for key, table in _kernels.items()}
    saved_unavailable = dict(_unavailable)
    try:
        for kernel in kernels:
            add_kernel(kernel)
        yield
    finally:
        _kernels.clear()
        _kernels.update(saved)
        _unavailable.clear()
        _unavailable.update(saved_unavailable)


def device_types() -> list[str]:
    """The device types that some backend names explicitly, plus ``"cpu"``."""
    return sorted({"cpu"} | {device for (_, device) in _kernels if device != ANY_DEVICE})


def backends() -> dict[str, dict[str, object]]:
    """What each backend is: available or not (and why), its operators and devices.

    Returns:
        ``{name: {"available": True, "ops": [...], "devices": [...], "default_for": [...],
        "forced": bool}}`` for a loaded backend, ``{name: {"available": False, "reason": str,
        "forced": False}}`` for one that could not load. ``"devices"`` is ``["any"]`` for a
        backend that runs everywhere; ``"default_for"`` lists the device types on which it is the
        automatic choice for at least one operator.
    """
    report: dict[str, dict[str, object]] = {}
    forced = forced_backend.get()
    for name in sorted(backend_names()):
        mine = [kernel for table in _kernels.values() for kernel in table.values() if kernel.backend == name]
        devices = sorted({kernel.device_type for kernel in mine})
        ops = sorted({kernel.op for kernel in mine})
        default_for = [
            device
            for device in device_types()
            if any(_candidates(op, device) and default_kernel(op, device).backend == name for op in ops)
        ]
        report[name] = {
            "available": True,
            "ops": ops,
            "devices": ["any"] if ANY_DEVICE in devices else devices,
            "default_for": default_for,
            "forced": forced == name,
        }
    for name, reason in sorted(_unavailable.items()):
        report[name] = {"available": False, "reason": reason, "forced": False}
    return report


def import_kernel_modules(package: ModuleType) -> None:
    """Imports every module of a backend package: each registers its operators' kernels.

    A backend adds an operator by adding a module (or sub-package) to its folder; nothing else
    has to list it.
    """
    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{module.name}")
