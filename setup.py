"""Builds the C++ CPU extension ``deformconv.backends.cpp._C``.

The extension uses only PyTorch's stable ABI, compiled for the oldest torch it supports
(``TORCH_TARGET``), and Python's limited API: one binary (an abi3 wheel) loads unchanged in every
torch >= 2.10 and every CPython >= 3.10.

A failed C++ build stops the install with the compiler's messages: a package that silently
falls back to the pure-PyTorch reference is several times slower on CPU. To install without
the extension on purpose, set ``DEFORMCONV_NO_EXT=1``.
"""

import glob
import os

from setuptools import setup

OPT_OUT = "DEFORMCONV_NO_EXT"
# The oldest torch whose stable ABI the binary targets (deformconv.backends.cpp.MIN_TORCH).
TORCH_TARGET = (2, 10)
# The oldest CPython whose limited API the binary targets (torch's build helpers define
# Py_LIMITED_API for the same version).
PYTHON_TARGET = "cp310"
EXTENSION = "deformconv.backends.cpp._C"


def extensions_and_commands():
    if os.environ.get(OPT_OUT, "0") == "1":
        return [], {}
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    class BuildExtensionOrExplain(BuildExtension):
        """Builds the extension; a failure stops the install and says how to opt out."""

        def run(self):
            remove_stale_binaries()
            try:
                super().run()
            except Exception as error:
                raise SystemExit(
                    f"deformconv: the C++ extension failed to build ({error}); the compiler's messages are "
                    f"above.\nFix the cause, or install without the C++ CPU kernels (CPU calls then run the "
                    f"slower pure-PyTorch reference): {OPT_OUT}=1 pip install ..."
                ) from error

    csrc = os.path.join("src", "deformconv", "backends", "cpp", "csrc")
    sources = sorted(glob.glob(os.path.join(csrc, "**", "*.cpp"), recursive=True))
    if not sources:
        return [], {}
    major, minor = TORCH_TARGET
    # No -std flag: torch's build helpers pass the language standard its headers need.
    extension = CppExtension(
        name=EXTENSION,
        sources=sources,
        extra_compile_args=[
            "-O3",
            "-fopenmp",
            "-fvisibility=hidden",
            f"-DTORCH_TARGET_VERSION=0x{major:02x}{minor:02x}000000000000",
        ],
        extra_link_args=["-fopenmp"],
        py_limited_api=True,
    )
    return [extension], {"build_ext": BuildExtensionOrExplain.with_options(use_ninja=True)}


def remove_stale_binaries():
    """Removes binaries of the extension built under other names (a ``_C.cpython-*.so`` from an
    older build would shadow the ``_C.abi3.so`` built now)."""
    folder = os.path.join("src", *EXTENSION.split(".")[:-1])
    for path in glob.glob(os.path.join(folder, "_C.*.so")):
        if not path.endswith(".abi3.so"):
            os.remove(path)


ext_modules, cmdclass = extensions_and_commands()
setup(
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    options={"bdist_wheel": {"py_limited_api": PYTHON_TARGET}} if ext_modules else {},
)
