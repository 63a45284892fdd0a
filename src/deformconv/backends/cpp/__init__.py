"""The ``"cpp"`` backend: multi-threaded C++ kernels for CPU tensors.

The sources are in ``csrc/`` (one sub-folder per operator) and build into the extension
``deformconv.backends.cpp._C``, which declares private operators in the namespace
``deformconv_cpp``; the module of each operator here registers them as that operator's kernels.
"""

from __future__ import annotations

import sys

from deformconv import config
from deformconv.backends.registry import import_kernel_modules


def load() -> None:
    """Loads the extension and registers the kernels of every operator in this folder.

    Raises:
        ImportError: the extension was not built (``DEFORMCONV_NO_EXT=1`` at install time, or
            no C++ compiler) or is disabled by ``DEFORMCONV_NO_EXT=1``; the reference backend
            then runs on CPU.
    """
    if config.environment_flag("DEFORMCONV_NO_EXT"):
        raise ImportError("C++ extension disabled by DEFORMCONV_NO_EXT=1; using the reference")
    try:
        from deformconv.backends.cpp import _C  # noqa: F401  (loading the library registers the operators)
    except ImportError as error:
        raise ImportError(
            "C++ extension not built (DEFORMCONV_NO_EXT=1 at install time or no compiler); using the "
            f"reference. Rebuild with `pip install --no-build-isolation -e .` ({error})"
        ) from error
    import_kernel_modules(sys.modules[__name__])
