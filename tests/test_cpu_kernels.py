"""What only the C++ CPU kernels ("cpp" backend) have: row tiles, threads, the fallback.

Everything every backend must do (oracle grid, dtypes, gradients, determinism, layouts) is in
test_conformance.py; here: tiles of the column buffer that end inside or span images, 1 vs 2
threads, the operators' own guards, and what happens without the extension.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import nullcontext

import pytest
import torch

import deformconv
from cases import BASE, Case, case_id
from helpers import TOLERANCE, assert_close_to_scale, forward_and_grads

requires_cpp = pytest.mark.skipif(
    not deformconv.backends()["cpp"]["available"],
    reason=f"cpp backend unavailable: {deformconv.backends()['cpp'].get('reason')}",
)


def _on(backend: str, case: Case, dtype=torch.float64):
    with deformconv.use_backend(backend):
        return forward_and_grads(deformconv.deform_conv2d, case.tensors(dtype=dtype), case.params())


def _assert_matches(got, want, tolerance: float) -> None:
    assert_close_to_scale(got[0], want[0], tolerance, "output")
    for name in want[1]:
        assert_close_to_scale(got[1][name], want[1][name], tolerance, name)


# The columns are sampled and multiplied in tiles of about 8 MiB of rows (1820 rows here, in
# float64): tiles that end inside an image and tiles that span two images.
TILED_CASES = [
    Case(batch=2, in_channels=64, out_channels=8, size=(33, 33), groups=2, offset_groups=2),
    Case(batch=1, in_channels=64, out_channels=4, size=(48, 48), modulated=False, offset_scale=4.0),
]


@requires_cpp
@pytest.mark.parametrize("case", TILED_CASES, ids=case_id)
def test_row_tiles_match_reference(case: Case):
    _assert_matches(_on("cpp", case), _on("reference", case), 1e-12)


# float32 against float64: the backward's products with more output channels than 256 and group
# columns (K * C_in/groups) that are no multiple of 32; a depthwise convolution whose offset groups
# have 40 channels (two whole blocks of 16 float32 lanes and a remainder in the one-pass
# backward of points inside the image). With one image per chunk the later chunks add to the
# weight gradient.
FLOAT32_CASES = [
    Case(batch=3, in_channels=20, out_channels=300, size=(9, 11), offset_groups=2, offset_scale=3.0),
    Case(batch=3, in_channels=8, out_channels=32, size=(7, 9), groups=2, offset_groups=4, offset_scale=3.0),
    Case(batch=2, in_channels=80, out_channels=80, size=(9, 11), groups=80, offset_groups=2, offset_scale=1.0),
]


@requires_cpp
@pytest.mark.parametrize("one_image_chunks", [False, True], ids=["whole-batch", "one-image-chunks"])
@pytest.mark.parametrize("case", FLOAT32_CASES, ids=case_id)
def test_float32_backward_matches_float64_across_chunks(case: Case, one_image_chunks: bool):
    low = case.tensors(dtype=torch.float32)
    with deformconv.use_backend("cpp"), deformconv.im2col_budget(1) if one_image_chunks else nullcontext():
        got = forward_and_grads(deformconv.deform_conv2d, low, case.params())
    with deformconv.use_backend("reference"):
        want = forward_and_grads(deformconv.deform_conv2d, {k: v.double() for k, v in low.items()}, case.params())
    _assert_matches(got, want, TOLERANCE[torch.float32])


# Large enough for several work items per kernel (rows, channel blocks, images).
THREAD_CASES = [
    Case(batch=3, in_channels=80, out_channels=16, size=(9, 11), offset_groups=2, offset_scale=3.0),
    Case(batch=3, in_channels=80, out_channels=80, size=(9, 11), groups=80, offset_groups=4, offset_scale=3.0),
]


@requires_cpp
@pytest.mark.parametrize("case", THREAD_CASES, ids=case_id)
def test_one_and_two_threads_agree(case: Case):
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = _on("cpp", case, torch.float32)
        torch.set_num_threads(2)
        double = _on("cpp", case, torch.float32)
    finally:
        torch.set_num_threads(previous)
    _assert_matches(double, single, 1e-5)


@requires_cpp
def test_operator_rejects_inconsistent_shapes():
    t = BASE.tensors()
    with pytest.raises(RuntimeError, match=r"offset\.shape\[1\] must be a positive multiple of 2\*kh\*kw = 18"):
        torch.ops.deformconv_cpp.deform_conv2d(
            t["input"], t["offset"][:, :5], None, t["weight"], None, [1, 1], [1, 1], [1, 1], 1
        )
    with pytest.raises(RuntimeError, match=r"batch_chunk must be >= 1, got 0"):
        torch.ops.deformconv_cpp.deform_conv2d(
            t["input"], t["offset"], None, t["weight"], None, [1, 1], [1, 1], [1, 1], 0
        )


def _run_without_extension(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DEFORMCONV_NO_EXT="1")
    env.pop("DEFORMCONV_BACKEND", None)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_without_extension_the_reference_runs_and_says_why():
    code = (
        "import torch, deformconv\n"
        "state = deformconv.backends()['cpp']\n"
        "print(state['available'])\n"
        "print(state['reason'])\n"
        "print(deformconv.backends()['reference']['default_for'])\n"
        "x = torch.randn(1, 2, 5, 5); w = torch.randn(3, 2, 3, 3); off = torch.zeros(1, 18, 5, 5)\n"
        "y = deformconv.deform_conv2d(x, off, w, padding=1)\n"
        "print(torch.allclose(y, torch.nn.functional.conv2d(x, w, padding=1), atol=1e-5))\n"
    )
    result = _run_without_extension(code)
    assert result.returncode == 0, result.stderr
    available, reason, default_for, matches = result.stdout.strip().splitlines()
    assert available == "False" and "DEFORMCONV_NO_EXT" in reason
    assert "cpu" in default_for
    assert matches == "True"


def test_without_extension_forcing_cpp_raises_a_clear_error():
    code = (
        "import deformconv\ntry:\n    deformconv.set_backend('cpp')\nexcept RuntimeError as error:\n    print(error)\n"
    )
    result = _run_without_extension(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("backend 'cpp' is not available: ")
    assert "DEFORMCONV_NO_EXT" in result.stdout
