"""The ``"reference"`` backend: vectorised pure-PyTorch kernels that run on every device.

It is the semantic reference for the accelerated kernels (the conformance suite compares
every backend with it and with the float64 oracle) and the fallback where none is available.
"""

from __future__ import annotations

import sys

from deformconv.backends.registry import import_kernel_modules


def load() -> None:
    """Registers the kernels of every operator in this folder (always succeeds)."""
    import_kernel_modules(sys.modules[__name__])
