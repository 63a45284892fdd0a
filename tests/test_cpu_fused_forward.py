"""The C++ forward without a column buffer (float32 arithmetic; every geometry but depthwise).

The cpp backend samples panels of output pixels and multiplies them, per convolution group, in
blocks of 32 (AVX-512) or 16 (AVX2) output channels and 12 or 6 pixels, over depth blocks of
about 256 columns (whole kernel points, or parts of one when a group has more input channels):
these cases put the edges of every block (channels past a block, pixels past a panel, depth
blocks of several kernel points and within one, panels that span images, offset groups that
straddle convolution groups) where the results are checked against the pure-PyTorch reference in
float64 and the float64 loop oracle.
"""

from __future__ import annotations

import pytest
import torch

import deformconv
from cases import Case, case_id
from helpers import TOLERANCE, assert_close_to_scale
from oracle import deform_conv2d_oracle

pytestmark = pytest.mark.skipif(
    not deformconv.backends()["cpp"]["available"],
    reason=f"cpp backend unavailable: {deformconv.backends()['cpp'].get('reason')}",
)

# rows = batch * Ho * Wo; depth = C_in * kh * kw.
CASES = [
    # 5 output channels (less than one block), 3 x 35 = 105 rows in one panel per thread.
    Case(batch=3, in_channels=3, out_channels=5, size=(5, 7)),
    # 33 output channels (a block and one channel), depth 40 * 9 = 360 (depth blocks of 6 and 3
    # kernel points), 2 x 17 x 19 = 646 rows (several panels, across images).
    Case(batch=2, in_channels=40, out_channels=33, size=(17, 19), offset_groups=2),
    # Stride, dilation, a 3x5 kernel, no mask, no bias, 4 offset groups.
    Case(
        batch=2,
        in_channels=8,
        out_channels=20,
        size=(13, 11),
        kernel=(3, 5),
        stride=(2, 1),
        padding=(2, 1),
        dilation=(1, 2),
        offset_groups=4,
        modulated=False,
        bias=False,
    ),
    # 4 convolution groups of 3 input and 5 output channels, 3 offset groups of 4 channels: the
    # runs of channels that share both are 3, 1, 2, 2, 1, 3 long.
    Case(batch=2, in_channels=12, out_channels=20, size=(9, 8), groups=4, offset_groups=3),
    # 2 groups of 40 output channels (two blocks and a part per group), depth 6 * 9 = 54.
    Case(batch=1, in_channels=12, out_channels=80, size=(8, 8), groups=2, stride=(2, 2), modulated=False),
    # 300 input channels: depth blocks of 256 and 44 channels of each kernel point.
    Case(batch=1, in_channels=300, out_channels=8, size=(5, 4), offset_groups=3),
    # A single output pixel; a 1x1 kernel.
    Case(batch=1, in_channels=6, out_channels=64, size=(1, 1), kernel=(1, 1), padding=(0, 0)),
]


def _forward(case: Case, dtype: torch.dtype, backend: str = "cpp", threads: int | None = None) -> torch.Tensor:
    tensors = case.tensors(dtype=dtype)
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with torch.no_grad(), deformconv.use_backend(backend):
            return deformconv.deform_conv2d(**tensors, **case.params())
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_float32_matches_the_float64_reference(case):
    want = _forward(case, torch.float64, backend="reference")
    got = _forward(case, torch.float32)
    assert got.dtype == torch.float32 and got.is_contiguous()
    assert_close_to_scale(got, want, TOLERANCE[torch.float32])


@pytest.mark.parametrize(
    "case",
    [
        CASES[0].vary(batch=1, offset_groups=3, in_channels=6, size=(4, 6)),
        Case(batch=1, in_channels=6, out_channels=4, size=(4, 5), groups=2, offset_groups=3),
    ],
    ids=case_id,
)
def test_float32_matches_the_oracle(case):
    tensors = case.tensors(dtype=torch.float64)
    want = deform_conv2d_oracle(**tensors, **case.params())
    assert_close_to_scale(_forward(case, torch.float32), want, TOLERANCE[torch.float32])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_types_compute_in_float32(dtype):
    case = CASES[1]
    want = _forward(case, torch.float64, backend="reference")
    got = _forward(case, dtype)
    assert got.dtype == dtype
    assert_close_to_scale(got, want, TOLERANCE[dtype])


def test_results_do_not_depend_on_the_number_of_threads():
    case = CASES[1]
    one, two = _forward(case, torch.float32, threads=1), _forward(case, torch.float32, threads=2)
    assert torch.equal(one, two)
    assert torch.equal(_forward(case, torch.float32, threads=2), two)


def test_nan_and_infinite_offsets_read_zero():
    case = CASES[0].vary(batch=1)
    tensors = case.tensors(dtype=torch.float32)
    offset = tensors["offset"]
    offset[0, 0, 0, 0] = float("nan")
    offset[0, 3, 1, 2] = float("inf")
    offset[0, 4, 2, 3] = -float("inf")
    with torch.no_grad(), deformconv.use_backend("cpp"):
        got = deformconv.deform_conv2d(**tensors, **case.params())
    with torch.no_grad(), deformconv.use_backend("reference"):
        want = deformconv.deform_conv2d(**{k: v.double() for k, v in tensors.items()}, **case.params())
    assert torch.isfinite(got).all()
    assert_close_to_scale(got, want, TOLERANCE[torch.float32])
