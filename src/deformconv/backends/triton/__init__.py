"""The ``"triton"`` backend: Triton kernels for CUDA tensors, one sub-package per operator.

:func:`load` checks that a CUDA device is present and that Triton imports *before* importing
the modules that define the ``@triton.jit`` kernels, so that importing ``deformconv`` on a
machine without a GPU never touches them (and the tests can set ``TRITON_INTERPRET=1`` before
they are first imported).
"""

from __future__ import annotations

import sys

import torch

from deformconv.backends.registry import import_kernel_modules

MIN_TRITON_MAJOR = 3


def load() -> None:
    """Registers the kernels of every operator in this folder for CUDA tensors.

    Raises:
        RuntimeError: no CUDA device is available (``torch.cuda.is_available()`` is False).
        ImportError: Triton is not installed, or is older than 3.0.
    """
    # Checked first: without a GPU, importing deformconv does not import Triton at all.
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device (torch.cuda.is_available() is False)")
    try:
        import triton
    except ImportError as error:
        raise ImportError(f"triton is not importable ({error}); install deformconv[triton]") from error
    major = int(triton.__version__.split(".")[0])
    if major < MIN_TRITON_MAJOR:
        raise ImportError(f"triton >= {MIN_TRITON_MAJOR}.0 is required, found {triton.__version__}")
    import_kernel_modules(sys.modules[__name__])
