"""The ``"cpp"`` backend: multi-threaded C++ kernels for CPU tensors.

The sources are in ``csrc/`` (one sub-folder per operator) and build into the extension
``deformconv.backends.cpp._C``, which declares private operators in the namespace
``deformconv_cpp``; the module of each operator here registers them as that operator's kernels.

The extension uses only PyTorch's stable ABI (https://docs.pytorch.org/docs/stable/notes/libtorch_stable_abi.html)
and Python's limited API, so one binary loads in every torch >= :data:`MIN_TORCH` and every
CPython >= 3.10. Below that torch, or when the extension was not built, CPU calls run the
pure-PyTorch reference, and the first of them warns unless ``DEFORMCONV_NO_EXT=1`` says that
this is intended.

Example:
    >>> from deformconv.backends import cpp
    >>> cpp.build_info()
    {'torch_build': '2.13.0', 'torch_min': '2.10', 'abi': 'stable'}
"""

from __future__ import annotations

import re
import sys

import torch

from deformconv import config
from deformconv.backends.registry import import_kernel_modules, warn_on_first_use

#: The oldest torch whose stable ABI the extension targets (setup.py builds for it).
MIN_TORCH = (2, 10)

OPT_OUT = "DEFORMCONV_NO_EXT"


def torch_release(version: str) -> tuple[int, int]:
    """``(major, minor)`` of a torch version string (``"2.10.0+cpu"``, ``"2.11.0a0+git"``)."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise ValueError(f"unrecognised torch version {version!r}")
    return int(match[1]), int(match[2])


def _import_extension():
    """The extension module, or ImportError saying why it cannot load and how to fix it."""
    minimum = ".".join(map(str, MIN_TORCH))
    if torch_release(torch.__version__) < MIN_TORCH:
        raise ImportError(
            f"the C++ kernels need torch >= {minimum} (PyTorch's stable ABI), this is torch {torch.__version__}; "
            f"upgrade with `pip install 'torch>={minimum}'`"
        )
    try:
        from deformconv.backends.cpp import _C
    except ImportError as error:
        raise ImportError(
            f"C++ extension not built or not loadable ({error}); reinstall deformconv with a C++ compiler "
            "(`pip install --no-build-isolation -e .` in a source checkout), which stops with the compiler's "
            "message if the build fails"
        ) from error
    return _C


def load() -> None:
    """Loads the extension and registers the kernels of every operator in this folder.

    Raises:
        ImportError: the extension is disabled by ``DEFORMCONV_NO_EXT=1``, was not built, or
            cannot load in this torch; the reference backend then runs on CPU.
    """
    if config.environment_flag(OPT_OUT):
        raise ImportError(f"C++ extension disabled by {OPT_OUT}=1; using the reference")
    try:
        _import_extension()
    except ImportError as error:
        warn_on_first_use(
            "cpu",
            f"deformconv: the C++ CPU kernels are not loaded: {error}. CPU calls run the pure-PyTorch "
            f"reference, several times slower. Set {OPT_OUT}=1 to run the reference without this warning.",
        )
        raise
    import_kernel_modules(sys.modules[__name__])


def build_info() -> dict[str, str] | None:
    """What the loaded extension was built against, or None when it is not loaded.

    Returns:
        ``{"torch_build": torch version of the headers it was compiled with, "torch_min": the
        oldest torch it loads in, "abi": "stable"}``.
    """
    extension = sys.modules.get(f"{__name__}._C")
    if extension is None:
        return None
    # A binary from before the stable-ABI port lacks these attributes (setup.py removes such
    # binaries when it builds).
    return {
        "torch_build": getattr(extension, "TORCH_BUILD_VERSION", "unknown"),
        "torch_min": getattr(extension, "TORCH_TARGET_VERSION", "unknown"),
        "abi": getattr(extension, "ABI", "unknown: rebuild the extension"),
    }
