"""Backends: named sets of kernels for deformconv's operators, one folder each.

- ``reference/``: vectorised pure PyTorch, every device (the semantic reference and fallback).
- ``cpp/``: multi-threaded C++ kernels for CPU, with their sources in ``cpp/csrc/``.
- ``triton/``: Triton kernels for CUDA.

Each backend folder holds one module (or sub-package) per operator it implements, which
registers its kernels with :func:`register_kernel`, and a ``load()`` that raises with the
reason when the backend cannot run on this machine (no compiled extension, no Triton, no GPU).
:func:`load_backends` runs once when ``deformconv`` is imported. See README.md in this folder
for adding a backend or an operator.
"""

from __future__ import annotations

import importlib

from deformconv import config
from deformconv.backends import cpp, registry
from deformconv.backends.registry import (
    ANY_DEVICE,
    Kernel,
    backends,
    import_kernel_modules,
    mark_unavailable,
    register_kernel,
    registered,
    set_backend,
    unavailable_reason,
    use_backend,
)

#: The backends that ship with deformconv, in the order they load.
BUILTIN_BACKENDS = ("reference", "cpp", "triton")


def load_backends() -> None:
    """Loads every built-in backend that can run here, then applies ``DEFORMCONV_BACKEND``."""
    for name in BUILTIN_BACKENDS:
        try:
            importlib.import_module(f"deformconv.backends.{name}").load()
        except Exception as error:  # any failure to load means: not available, and why
            mark_unavailable(name, f"{type(error).__name__}: {error}")
    forced = config.environment_value("DEFORMCONV_BACKEND")
    if forced:
        set_backend(forced)


def select(op: str, device_type: str) -> Kernel:
    """The kernel that runs ``op`` on ``device_type`` (see :func:`registry.select`).

    The first CPU call warns when the C++ kernels failed to load and the user did not opt out
    with ``DEFORMCONV_NO_EXT=1``: a missing build must not pass unnoticed as a slow package.
    """
    if device_type == "cpu":
        cpp.warn_if_missing()
    return registry.select(op, device_type)


__all__ = [
    "ANY_DEVICE",
    "BUILTIN_BACKENDS",
    "Kernel",
    "backends",
    "import_kernel_modules",
    "load_backends",
    "mark_unavailable",
    "register_kernel",
    "registered",
    "select",
    "set_backend",
    "unavailable_reason",
    "use_backend",
]
