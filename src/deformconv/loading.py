"""Registers every backend that can be loaded on this machine (called once, at import).

The ``"reference"`` backend always loads. Each accelerated backend lives in a module with a
``register()`` function that registers it, or raises with the reason it cannot run here (no
compiled extension, no Triton, no GPU); that reason is what :func:`deformconv.backends` shows.
"""

from __future__ import annotations

import importlib

from deformconv.dispatch import Backend, _apply_environment, mark_unavailable, register_backend
from deformconv.ops import reference

ACCELERATED = {
    "cpp": "deformconv.cpu_kernels",
    "triton": "deformconv.triton_kernels",
}


def load_backends() -> None:
    register_backend(
        Backend(
            name="reference",
            device_types=(),
            forward=reference.deform_conv2d_forward,
            backward=reference.deform_conv2d_backward,
            priority=0,
        )
    )
    for name, module in ACCELERATED.items():
        try:
            importlib.import_module(module).register()
        except Exception as error:  # any failure to load means: not available, and why
            mark_unavailable(name, f"{type(error).__name__}: {error}")
    _apply_environment()
