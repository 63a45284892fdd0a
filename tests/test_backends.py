"""Backend selection: the report, forcing a backend by name, and clear errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import deformconv
from cases import BASE
from deformconv import dispatch


def test_reference_is_always_available():
    report = deformconv.backends()
    assert set(report) == set(dispatch.KNOWN_BACKENDS)
    assert report["reference"]["available"] is True
    assert "cpu" in report["reference"]["default_for"] or report["cpp"]["available"]


def test_unavailable_backends_say_why():
    for state in deformconv.backends().values():
        if not state["available"]:
            assert state["reason"]


def test_forcing_an_unknown_backend_raises():
    with pytest.raises(ValueError, match=r"backend must be one of .*got 'cudnn'"):
        deformconv.set_backend("cudnn")


def test_forcing_an_unavailable_backend_raises_with_the_reason():
    missing = [n for n, s in deformconv.backends().items() if not s["available"]]
    if not missing:
        pytest.skip("every backend is available here")
    with pytest.raises(RuntimeError, match=rf"backend '{missing[0]}' is not available: .+"):
        deformconv.set_backend(missing[0])


def test_use_backend_forces_and_restores():
    tensors = BASE.tensors()
    with deformconv.use_backend("reference"):
        assert deformconv.backends()["reference"]["forced"] is True
        assert dispatch.select("cpu").name == "reference"
        forced = deformconv.deform_conv2d(**tensors, **BASE.params())
    assert dispatch.get_forced_backend() is None
    torch.testing.assert_close(forced, deformconv.deform_conv2d(**tensors, **BASE.params()))


def test_backend_that_does_not_run_on_the_device_raises():
    only_cuda = dispatch.Backend("triton", ("cuda",), lambda *a: None, lambda *a: None, priority=10)
    saved = dict(dispatch._available), dict(dispatch._unavailable)
    try:
        dispatch.register_backend(only_cuda)
        with deformconv.use_backend("triton"), pytest.raises(RuntimeError, match=r"runs on \['cuda'\], not on 'cpu'"):
            deformconv.deform_conv2d(**BASE.tensors(), **BASE.params())
    finally:
        dispatch._available.clear(), dispatch._available.update(saved[0])
        dispatch._unavailable.clear(), dispatch._unavailable.update(saved[1])


def test_environment_variable_forces_a_backend():
    env = dict(os.environ, DEFORMCONV_BACKEND="reference")
    code = "import deformconv; print(deformconv.backends()['reference']['forced'])"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "True"


def test_info_command_lists_backends(capsys):
    from deformconv.cli import main

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "reference" in out and "available" in out
