"""Kernel health without a GPU: every Triton kernel compiles for sm_80 and sm_90, spills nothing, fits shared memory.

Triton compiles for a target without the GPU (see :mod:`deformconv.backends.triton.health`).
This runs in the ordinary test process: it needs the Triton compiler, not its interpreter, so
it is skipped in a process started with ``TRITON_INTERPRET=1``. It compiles every case but the
narrow-channel ones (whose kernels are the depthwise backward's) in every dtype for sm_80 and
sm_90 (48 compilations for ``deform_conv2d``, about 30 s of one core with an empty Triton
cache); ``python -m deformconv.backends.triton.health`` prints the full table (sm_75 and the
narrow-channel shape as well).
"""

from __future__ import annotations

import os
import shutil

import pytest
import torch

if os.environ.get("TRITON_INTERPRET") == "1":
    pytest.skip("compiles kernels: needs Triton's compiler, not its interpreter", allow_module_level=True)
triton = pytest.importorskip("triton")

from deformconv.backends.triton import health  # noqa: E402 (after the skips)

CI_TARGETS = [t for t in health.TARGETS if t.capability in (80, 90)]
CI_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
CASES = [c for c in health.collect_cases() if c.dtype in CI_DTYPES and "narrow" not in c.name]


def _cuobjdump_present() -> bool:
    return shutil.which(triton.knobs.nvidia.cuobjdump.path) is not None


pytestmark = [
    pytest.mark.skipif(not _cuobjdump_present(), reason="Triton's bundled cuobjdump is missing"),
    pytest.mark.filterwarnings("ignore:TRITON_DEFAULT_FP_FUSION is unset"),
]


def test_every_operator_contributes_cases():
    names = {case.name.split("/")[0] for case in health.collect_cases()}
    assert "deform_conv2d" in names
    assert {case.dtype for case in health.collect_cases()} >= set(CI_DTYPES)


@pytest.mark.parametrize("target", CI_TARGETS, ids=lambda t: t.name)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.name}-{str(c.dtype).removeprefix('torch.')}")
def test_kernels_compile_without_spills_within_shared_memory(case, target):
    rows = health.compile_case(case, target)
    print("\n" + health.format_table(rows))
    assert rows, f"{case.name} launched no kernel"
    for row in rows:
        assert row.spill_bytes == 0, f"{row.kernel} on {target.name} spills {row.spill_bytes} bytes per thread"
        assert row.shared <= target.shared_limit, (
            f"{row.kernel} on {target.name} needs {row.shared} bytes of shared memory, limit {target.shared_limit}"
        )
        assert row.registers <= 255
