"""Bad arguments raise a clear error that names the argument, before any kernel runs."""

from __future__ import annotations

import pytest
import torch

import deformconv
from cases import BASE


def _args(**changes):
    tensors = BASE.vary(bias=True).tensors(dtype=torch.float32)
    kwargs = {**tensors, **BASE.params()}
    kwargs.update(changes)
    return kwargs


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"input": torch.zeros(4, 6, 7)}, ValueError, r"input must be a 4-d Tensor.*got shape \(4, 6, 7\)"),
        ({"weight": torch.zeros(4, 4, 3)}, ValueError, r"weight must be a 4-d Tensor"),
        ({"offset": torch.zeros(2, 18, 6)}, ValueError, r"offset must be a 4-d Tensor"),
        ({"mask": torch.zeros(2, 9)}, ValueError, r"mask must be a 4-d Tensor"),
        ({"bias": torch.zeros(4, 1)}, ValueError, r"bias must be a 1-d Tensor"),
        ({"input": [1.0]}, TypeError, r"input must be a Tensor.*got list"),
        (
            {"offset": torch.zeros(2, 17, 6, 7)},
            ValueError,
            r"offset.shape\[1\] must be a positive multiple of 2\*kh\*kw = 18.*got 17",
        ),
        ({"offset": torch.zeros(2, 0, 6, 7)}, ValueError, r"offset.shape\[1\] must be a positive multiple"),
        (
            {"offset": torch.zeros(2, 18, 5, 7)},
            ValueError,
            r"offset must have shape .*\[2, 18, 6, 7\], got \[2, 18, 5, 7\]",
        ),
        (
            {"offset": torch.zeros(3, 18, 6, 7)},
            ValueError,
            r"offset must have shape .*\[2, 18, 6, 7\], got \[3, 18, 6, 7\]",
        ),
        (
            {"offset": torch.zeros(2, 18 * 3, 6, 7)},
            ValueError,
            r"input channels \(4\) must be divisible by offset groups \(3",
        ),
        ({"mask": torch.zeros(2, 8, 6, 7)}, ValueError, r"mask must have shape .*\[2, 9, 6, 7\], got \[2, 8, 6, 7\]"),
        ({"mask": torch.zeros(2, 9, 6, 6)}, ValueError, r"mask must have shape"),
        (
            {"weight": torch.zeros(4, 3, 3, 3)},
            ValueError,
            r"input channels \(4\) must be a multiple of weight.shape\[1\] \(3",
        ),
        (
            {"weight": torch.zeros(3, 2, 3, 3)},
            ValueError,
            r"weight.shape\[0\] \(output channels, 3\) must be divisible by groups \(2",
        ),
        ({"weight": torch.zeros(4, 4, 0, 3)}, ValueError, r"kernel size must be at least 1x1, got 0x3"),
        ({"bias": torch.zeros(5)}, ValueError, r"bias must have shape \[C_out\] = \[4\], got \[5\]"),
        ({"stride": 0}, ValueError, r"stride must be >= 1 in both dimensions, got \(0, 0\)"),
        ({"stride": (1, -1)}, ValueError, r"stride must be >= 1"),
        ({"dilation": (0, 1)}, ValueError, r"dilation must be >= 1 in both dimensions, got \(0, 1\)"),
        ({"padding": -1}, ValueError, r"padding must be >= 0 in both dimensions, got \(-1, -1\)"),
        ({"stride": 1.5}, TypeError, r"stride must be an int or a pair of ints, got 1.5"),
        ({"padding": (1, 2, 3)}, TypeError, r"padding must be an int or a pair of ints"),
        ({"dilation": True}, TypeError, r"dilation must be an int or a pair of ints, got True"),
        ({"input": torch.zeros(2, 4, 1, 1), "padding": 0}, ValueError, r"output size would be -1x-1 .* at least 1x1"),
        (
            {"input": torch.zeros(2, 4, 6, 7, dtype=torch.int64)},
            TypeError,
            r"input must be float64, float32, float16 or bfloat16, got torch.int64",
        ),
        (
            {"weight": torch.zeros(4, 4, 3, 3, dtype=torch.float64)},
            TypeError,
            r"weight must have the dtype of input \(torch.float32\), got torch.float64",
        ),
        ({"mask": torch.zeros(2, 9, 6, 7, dtype=torch.float16)}, TypeError, r"mask must have the dtype of input"),
        (
            {"offset": torch.zeros(2, 18, 6, 7, device="meta")},
            RuntimeError,
            r"offset must be on the device of input \(cpu\), got meta",
        ),
    ],
)
def test_bad_arguments_raise_with_a_clear_message(changes, error, match):
    with pytest.raises(error, match=match):
        deformconv.deform_conv2d(**_args(**changes))


def test_the_op_itself_validates_when_called_directly():
    t = BASE.tensors(dtype=torch.float32)
    with pytest.raises(ValueError, match=r"offset must have shape"):
        torch.ops.deformconv.deform_conv2d(
            t["input"], t["offset"][:, :, :3], t["mask"], t["weight"], None, [1, 1], [1, 1], [1, 1], 1
        )
    with pytest.raises(ValueError, match=r"batch_chunk must be >= 0 \(0: from the im2col budget\), got -1"):
        torch.ops.deformconv.deform_conv2d(
            t["input"], t["offset"], t["mask"], t["weight"], None, [1, 1], [1, 1], [1, 1], -1
        )
    upstream = torch.zeros(2, 4, 6, 6)
    with pytest.raises(ValueError, match=r"grad_output must have shape \[N, C_out, H_out, W_out\] = \[2, 4, 6, 7\]"):
        torch.ops.deformconv.deform_conv2d_backward(
            upstream, t["input"], t["offset"], t["mask"], t["weight"], [1, 1], [1, 1], [1, 1], 1, True, True, True
        )


def test_budget_must_be_positive():
    with pytest.raises(ValueError, match=r"num_bytes must be a positive int, got 0"):
        deformconv.set_im2col_budget(0)
    with pytest.raises(ValueError, match=r"num_bytes must be a positive int, got 1.5"):
        with deformconv.im2col_budget(1.5):
            pass
