"""Builds the C++ CPU extension ``deformconv.backends.cpp._C``.

A failed C++ build stops the install with the compiler's messages: a package that silently
falls back to the pure-PyTorch reference is several times slower on CPU. To install without
the extension on purpose, set ``DEFORMCONV_NO_EXT=1``.
"""

import glob
import os

from setuptools import setup

OPT_OUT = "DEFORMCONV_NO_EXT"


def extensions_and_commands():
    if os.environ.get(OPT_OUT, "0") == "1":
        return [], {}
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    class BuildExtensionOrExplain(BuildExtension):
        """Builds the extension; a failure stops the install and says how to opt out."""

        def run(self):
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
    # No -std flag: torch's build helpers pass the language standard its headers need.
    extension = CppExtension(
        name="deformconv.backends.cpp._C",
        sources=sources,
        extra_compile_args=["-O3", "-fopenmp"],
        extra_link_args=["-fopenmp"],
    )
    return [extension], {"build_ext": BuildExtensionOrExplain.with_options(use_ninja=True)}


ext_modules, cmdclass = extensions_and_commands()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
