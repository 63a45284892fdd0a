"""The C++ extension as built and installed: stable-ABI binary, loud build failures, loud fallback.

- A failed C++ build stops ``setup.py`` with the compiler's message and the opt-out.
- The binary uses only PyTorch's stable ABI and Python's limited API (an abi3 module), and
  ``deformconv info`` says which torch built it and the oldest torch it loads in.
- Without the extension, the first CPU call warns once (reason and fix), unless
  ``DEFORMCONV_NO_EXT=1``; a torch older than the stable-ABI minimum is refused with the reason.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import deformconv
from deformconv import info
from deformconv.backends import cpp

ROOT = Path(__file__).resolve().parents[1]

requires_cpp = pytest.mark.skipif(
    not deformconv.backends()["cpp"]["available"],
    reason=f"cpp backend unavailable: {deformconv.backends()['cpp'].get('reason')}",
)

# Runs in a fresh interpreter with the extension hidden from the import system (as if it had
# not been built), calls the op twice on CPU, and prints every warning and whether the result
# is F.conv2d's (zero offsets).
_HIDDEN_EXTENSION_RUN = """
import importlib.abc, sys, warnings

class HideExtension(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "deformconv.backends.cpp._C":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, HideExtension())
import torch, deformconv

x = torch.randn(1, 2, 5, 5); w = torch.randn(3, 2, 3, 3); offset = torch.zeros(1, 18, 5, 5)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    first = deformconv.deform_conv2d(x, offset, w, padding=1)
    second = deformconv.deform_conv2d(x, offset, w, padding=1)
for warning in caught:
    print("WARNING", warning.category.__name__, warning.message)
expected = torch.nn.functional.conv2d(x, w, padding=1)
print("MATCHES", torch.allclose(first, expected, atol=1e-5) and torch.equal(first, second))
"""


def _run_python(code: str, **env_changes: str | None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    for key in ("DEFORMCONV_NO_EXT", "DEFORMCONV_BACKEND"):
        env.pop(key, None)
    for key, value in env_changes.items():
        if value is not None:
            env[key] = value
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def _warnings(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("WARNING")]


def test_missing_extension_warns_once_with_the_reason_and_the_fix():
    result = _run_python(_HIDDEN_EXTENSION_RUN)
    assert result.returncode == 0, result.stderr
    warnings = _warnings(result.stdout)
    assert len(warnings) == 1, result.stdout
    assert warnings[0].startswith("WARNING RuntimeWarning deformconv: the C++ CPU kernels are not loaded")
    assert "C++ extension not built" in warnings[0]  # the reason
    assert "pip install" in warnings[0] and "DEFORMCONV_NO_EXT=1" in warnings[0]  # the fix, the opt-out
    assert "MATCHES True" in result.stdout  # the reference ran


def test_opting_out_runs_the_reference_without_a_warning():
    result = _run_python(_HIDDEN_EXTENSION_RUN, DEFORMCONV_NO_EXT="1")
    assert result.returncode == 0, result.stderr
    assert _warnings(result.stdout) == []
    assert "MATCHES True" in result.stdout


def test_torch_older_than_the_stable_abi_minimum_is_refused_with_the_reason(monkeypatch):
    monkeypatch.setattr(torch, "__version__", "2.9.1+cpu")
    with pytest.raises(ImportError, match=r"need torch >= 2\.10 .*this is torch 2\.9\.1\+cpu; upgrade"):
        cpp._import_extension()


@pytest.mark.parametrize(
    ("version", "release"), [("2.10.0", (2, 10)), ("2.13.0+cpu", (2, 13)), ("2.11.0a0+git1234", (2, 11))]
)
def test_torch_release(version, release):
    assert cpp.torch_release(version) == release


def test_torch_release_rejects_what_is_not_a_version():
    with pytest.raises(ValueError, match="unrecognised torch version 'nightly'"):
        cpp.torch_release("nightly")


@requires_cpp
def test_info_shows_the_stable_abi_build(capsys):
    assert info.run(argparse.Namespace(json=True)) == 0
    build = json.loads(capsys.readouterr().out)["cpp_extension"]
    assert build["abi"] == "stable"
    assert build["torch_min"] == ".".join(map(str, cpp.MIN_TORCH))
    assert re.fullmatch(r"\d+\.\d+\.\d+", build["torch_build"])
    assert cpp.torch_release(build["torch_build"]) >= cpp.MIN_TORCH
    assert info.run(argparse.Namespace(json=False)) == 0
    text = capsys.readouterr().out
    assert f"cpp_extension: stable ABI, built with torch {build['torch_build']}, loads in torch >= 2.10" in text


@requires_cpp
@pytest.mark.skipif(shutil.which("nm") is None, reason="needs nm (binutils) to read the binary's symbols")
def test_extension_binds_only_to_the_stable_abi():
    path = sys.modules["deformconv.backends.cpp._C"].__file__
    assert path.endswith(".abi3.so"), path  # Python's limited API: one binary for every CPython >= 3.10
    symbols = subprocess.run(["nm", "-D", "--undefined-only", path], capture_output=True, text=True, check=True)
    undefined = [line.split()[-1] for line in symbols.stdout.splitlines()]
    # C++ symbols of ATen, c10 or torch would tie the binary to one torch release.
    cxx_torch = [name for name in undefined if re.match(r"_ZN(K?)(2at|3c10|5torch)", name)]
    assert cxx_torch == []
    assert any(name == "torch_call_dispatcher" for name in undefined)  # it does call into torch (C shim)


def _can_run_setup() -> bool:
    """A source checkout and the setuptools of the build requirements (>= 77, pyproject.toml)."""
    try:
        major = int(importlib.metadata.version("setuptools").split(".")[0])
    except importlib.metadata.PackageNotFoundError:
        return False
    return (ROOT / "setup.py").exists() and major >= 77


@pytest.mark.skipif(not _can_run_setup(), reason="needs the source checkout and setuptools >= 77")
def test_failed_build_stops_with_the_compiler_message_and_the_opt_out(tmp_path):
    # A flag no compiler knows makes every compile fail at once: cheap, and the compiler's own
    # message names the flag.
    env = dict(os.environ, CFLAGS="-fdeformconv-no-such-flag")
    env.pop("DEFORMCONV_NO_EXT", None)
    result = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--build-lib", str(tmp_path / "lib")]
        + ["--build-temp", str(tmp_path / "tmp")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "-fdeformconv-no-such-flag" in output and "error" in output  # the compiler's message
    assert "deformconv: the C++ extension failed to build" in output
    assert "DEFORMCONV_NO_EXT=1 pip install" in output
    assert not list((tmp_path / "lib").rglob("*.so"))
