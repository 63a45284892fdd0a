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
from deformconv.backends.registry import (
    ANY_DEVICE,
    Kernel,
    backends,
    import_kernel_modules,
    mark_unavailable,
    register_kernel,
    registered,
    select,
    set_backend,
    unavailable_reason,
    use_backend,
    warn_on_first_use,
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
    "warn_on_first_use",
]
