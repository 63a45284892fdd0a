"""The kernel registry: registration per operator and device, the choice, the report, errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import deformconv
from cases import BASE
from deformconv.backends import Kernel, import_kernel_modules, mark_unavailable, registered, select
from deformconv.backends.registry import default_kernel
from helpers import default_backend

OPS = ("deform_conv2d", "deform_conv2d_backward")


def _kernels(backend: str, device: str, fn, priority: int) -> list[Kernel]:
    return [Kernel(op, backend, device, fn, priority) for op in OPS]


def test_report_comes_from_the_registrations():
    report = deformconv.backends()
    assert report["reference"]["devices"] == ["any"] and set(OPS) <= set(report["reference"]["ops"])
    with registered(*_kernels("mine", "xpu", lambda *a: None, 5)):
        report = deformconv.backends()
        assert report["mine"] == {
            "available": True,
            "ops": list(OPS),
            "devices": ["xpu"],
            "default_for": ["xpu"],
            "forced": False,
        }
    assert "mine" not in deformconv.backends()


def test_a_third_party_backend_runs_when_it_has_the_highest_priority():
    calls: list[str] = []
    previous = select("deform_conv2d", "cpu").fn

    def forward(*args):
        calls.append("mine")
        return previous(*args)

    with registered(Kernel("deform_conv2d", "mine", "cpu", forward, 1000)):
        assert default_backend("deform_conv2d") == "mine"
        # The backward op has no kernel of "mine": the previous default still runs it.
        assert default_backend("deform_conv2d_backward") != "mine"
        out = deformconv.deform_conv2d(**BASE.tensors(), **BASE.params())
    assert calls == ["mine"]
    torch.testing.assert_close(out, deformconv.deform_conv2d(**BASE.tensors(), **BASE.params()))


def test_a_priority_tie_between_backends_is_an_error():
    taken = default_kernel("deform_conv2d", "cpu")
    with pytest.raises(
        ValueError, match=rf"backends '{taken.backend}' and 'mine' both register 'deform_conv2d' on 'cpu'"
    ):
        with registered(Kernel("deform_conv2d", "mine", "cpu", lambda *a: None, taken.priority)):
            pass
    assert "mine" not in deformconv.backends()


def test_forcing_an_unknown_backend_raises():
    with pytest.raises(ValueError, match=r"backend must be one of \[.*'reference'.*\] or None, got 'cudnn'"):
        deformconv.set_backend("cudnn")
    with pytest.raises(ValueError, match=r"got 'cudnn'"), deformconv.use_backend("cudnn"):
        pass


def test_forcing_an_unavailable_backend_raises_with_the_reason():
    with registered():
        mark_unavailable("mine", "no mine device here")
        assert deformconv.backends()["mine"] == {"available": False, "reason": "no mine device here", "forced": False}
        with pytest.raises(RuntimeError, match=r"backend 'mine' is not available: no mine device here"):
            deformconv.set_backend("mine")


def test_a_forced_backend_without_a_kernel_for_the_device_raises():
    with registered(*_kernels("mine", "xpu", lambda *a: None, 5)), deformconv.use_backend("mine"):
        with pytest.raises(RuntimeError, match=r"backend 'mine' runs 'deform_conv2d' on \['xpu'\], not on 'cpu'"):
            deformconv.deform_conv2d(**BASE.tensors(), **BASE.params())


def test_use_backend_forces_and_restores():
    before = default_backend("deform_conv2d")
    with deformconv.use_backend("reference"):
        assert deformconv.backends()["reference"]["forced"] is True
        assert select("deform_conv2d", "cpu").backend == "reference"
    assert select("deform_conv2d", "cpu").backend == before
    deformconv.set_backend("reference")
    try:
        assert select("deform_conv2d", "cpu").backend == "reference"
    finally:
        deformconv.set_backend(None)
    assert not any(state["forced"] for state in deformconv.backends().values())


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DEFORMCONV_")}
    return subprocess.run(
        [sys.executable, "-c", code], env={**environment, **env}, capture_output=True, text=True, timeout=120
    )


def test_environment_variables_are_read_and_validated():
    forced = _python(
        "import deformconv; print(deformconv.backends()['reference']['forced'])", DEFORMCONV_BACKEND="reference"
    )
    assert forced.stdout.strip() == "True", forced.stderr
    budget = _python("import deformconv; print(deformconv.get_im2col_budget())", DEFORMCONV_IM2COL_BUDGET_MB="2")
    assert budget.stdout.strip() == str(2 << 20), budget.stderr
    bad = _python("import deformconv", DEFORMCONV_IM2COL_BUDGET_MB="lots")
    assert bad.returncode != 0
    assert "DEFORMCONV_IM2COL_BUDGET_MB must be a positive number of MiB, got 'lots'" in bad.stderr


def test_info_command_lists_backends_and_their_operators(capsys):
    from deformconv.cli import main

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    cpu_default = default_backend("deform_conv2d")
    assert f"{cpu_default:<10} available on" in out
    assert "deform_conv2d" in out


def test_a_kernel_module_in_a_backend_folder_registers_itself(tmp_path, monkeypatch):
    # The "adding an operator" procedure of backends/README.md: a new module in a backend's folder is
    # found without any list naming it.
    package = tmp_path / "extra_backend"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "new_op.py").write_text(
        "from deformconv.backends import register_kernel\n\n"
        "@register_kernel('new_op', backend='extra', device_types=('cpu',))\n"
        "def kernel(x):\n"
        "    return x + 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import extra_backend

    with registered():
        import_kernel_modules(extra_backend)
        assert deformconv.backends()["extra"]["ops"] == ["new_op"]
        assert select("new_op", "cpu").fn(1) == 2
    assert "extra" not in deformconv.backends()
