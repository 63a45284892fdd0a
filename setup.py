"""Builds the optional C++ CPU extension ``deformconv.backends.cpp._C``.

Set ``DEFORMCONV_NO_EXT=1`` to skip it; if it fails to compile, the package still installs and
runs on the pure-PyTorch reference (``deformconv.backends()`` says why the C++ backend is off).
"""

import glob
import os
import sys

from setuptools import setup


def extensions_and_commands():
    if os.environ.get("DEFORMCONV_NO_EXT", "0") == "1":
        return [], {}
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    class OptionalBuildExtension(BuildExtension):
        """Builds the extension if it can; a failure leaves the reference backend in charge."""

        def run(self):
            try:
                super().run()
            except Exception as error:  # a missing compiler must not break the install
                print(f"deformconv: C++ extension not built ({error}); using the reference", file=sys.stderr)

    sources = sorted(glob.glob(os.path.join("src", "deformconv", "backends", "cpp", "csrc", "**", "*.cpp"), recursive=True))
    if not sources:
        return [], {}
    extension = CppExtension(
        name="deformconv.backends.cpp._C",
        sources=sources,
        extra_compile_args=["-O3", "-fopenmp", "-std=c++17"],
        extra_link_args=["-fopenmp"],
    )
    return [extension], {"build_ext": OptionalBuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = extensions_and_commands()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
