"""Kernel health without a GPU: every Triton kernel compiles for sm_80 and sm_90, spills nothing, fits shared memory.

Triton compiles for a target without the GPU (see :mod:`deformconv.backends.triton.health`).
This runs in the ordinary test process: it needs the Triton compiler, not its interpreter, so
it is skipped in a process started with ``TRITON_INTERPRET=1``. It compiles every case for
sm_80 and sm_90 (see ``CI_MATRIX``) but those whose kernels and configurations another case
already compiles (``SAME_KERNELS_AS_ANOTHER``); ``python -m deformconv.backends.triton.health``
prints the full table (sm_75, every case and every dtype on every target).
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

# Every dtype on sm_90; float32 and float16 (the FMA and tensor-core paths) on sm_80, where
# bfloat16 and float64 compile to the same structure.
CI_MATRIX = {80: (torch.float32, torch.float16), 90: (torch.float32, torch.float16, torch.bfloat16, torch.float64)}
# narrow8: the depthwise backward's kernels. The Deformable DETR encoder: the decoder's kernels and
# configurations at more queries. DCNv4: the DCNv3 kernels, with offset and mask packed in one tensor.
SAME_KERNELS_AS_ANOTHER = ("deform_conv2d/narrow8", "multi_scale_deform_attn/encoder", "dcnv4/")
CI_CASES = [
    pytest.param(case, target, id=f"{case.name}-{str(case.dtype).removeprefix('torch.')}-{target.name}")
    for case in health.collect_cases()
    if not case.name.startswith(SAME_KERNELS_AS_ANOTHER)
    for target in health.TARGETS
    if case.dtype in CI_MATRIX.get(target.capability, ())
]


def _cuobjdump_present() -> bool:
    return shutil.which(triton.knobs.nvidia.cuobjdump.path) is not None


pytestmark = [
    pytest.mark.skipif(not _cuobjdump_present(), reason="Triton's bundled cuobjdump is missing"),
    pytest.mark.filterwarnings("ignore:TRITON_DEFAULT_FP_FUSION is unset"),
]


def test_every_operator_contributes_cases_in_every_dtype():
    cases = health.collect_cases()
    operators = {"deform_conv2d", "multi_scale_deform_attn", "dcnv3", "dcnv4"}
    assert operators <= {case.name.split("/")[0] for case in cases}
    assert {case.dtype for case in cases} == {torch.float32, torch.float16, torch.bfloat16, torch.float64}


@pytest.mark.parametrize("case,target", CI_CASES)
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
