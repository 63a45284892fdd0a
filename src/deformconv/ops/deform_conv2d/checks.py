"""Argument validation for ``deform_conv2d``.

Every check runs in Python before any kernel sees the data, so a bad argument raises a clear
error (naming the argument, what was expected and what was given) instead of crashing a kernel
or reading out of bounds.
"""

from __future__ import annotations

import torch
from torch import Tensor

from deformconv.ops.deform_conv2d.geometry import ConvGeometry, output_size
from deformconv.ops.validation import FLOAT_DTYPES, check_tensor, require

IntPair = int | tuple[int, int] | list[int]


def to_pair(value: IntPair, name: str) -> tuple[int, int]:
    """Returns ``value`` as an ``(h, w)`` pair of Python ints.

    Raises:
        TypeError: ``value`` is neither an int nor a pair of ints.
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (tuple, list, torch.Size)) and len(value) == 2:
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return (int(value[0]), int(value[1]))
    raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")


LAYOUTS = {
    "input": "[N, C_in, H, W]",
    "weight": "[C_out, C_in/groups, kh, kw]",
    "offset": "[N, 2*offset_groups*kh*kw, H_out, W_out]",
    "mask": "[N, offset_groups*kh*kw, H_out, W_out]",
    "bias": "[C_out]",
}


def check_args(
    input: Tensor,
    offset: Tensor,
    mask: Tensor | None,
    weight: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> ConvGeometry:
    """Validates every argument of ``deform_conv2d`` and returns the geometry they imply.

    Raises:
        TypeError: an argument has the wrong type or dtype.
        ValueError: shapes, channel counts or hyper-parameters are inconsistent.
        RuntimeError: tensors live on different devices.
    """
    check_tensor(input, "input", 4, LAYOUTS["input"])
    check_tensor(weight, "weight", 4, LAYOUTS["weight"])
    check_tensor(offset, "offset", 4, LAYOUTS["offset"])
    if mask is not None:
        check_tensor(mask, "mask", 4, LAYOUTS["mask"])
    if bias is not None:
        check_tensor(bias, "bias", 1, LAYOUTS["bias"])

    if input.dtype not in FLOAT_DTYPES:
        raise TypeError(f"input must be float64, float32, float16 or bfloat16, got {input.dtype}")
    named = [("offset", offset), ("weight", weight), ("mask", mask), ("bias", bias)]
    for name, tensor in named:
        if tensor is None:
            continue
        if tensor.dtype != input.dtype:
            raise TypeError(f"{name} must have the dtype of input ({input.dtype}), got {tensor.dtype}")
        if tensor.device != input.device:
            raise RuntimeError(f"{name} must be on the device of input ({input.device}), got {tensor.device}")

    for name, pair, low in (("stride", stride, 1), ("dilation", dilation, 1), ("padding", padding, 0)):
        if min(pair) < low:
            raise ValueError(f"{name} must be >= {low} in both dimensions, got {pair}")

    batch, in_channels, in_h, in_w = input.shape
    out_channels, in_per_group, kh, kw = weight.shape
    require(kh >= 1 and kw >= 1, ValueError, f"weight's kernel size must be at least 1x1, got {kh}x{kw}")
    require(
        out_channels >= 1 and in_per_group >= 1,
        ValueError,
        f"weight must have at least one output and one input channel, got shape {tuple(weight.shape)}",
    )
    require(
        in_channels % in_per_group == 0,
        ValueError,
        f"input channels ({in_channels}) must be a multiple of weight.shape[1] "
        f"({in_per_group}, the input channels per group)",
    )
    groups = in_channels // in_per_group
    require(
        out_channels % groups == 0,
        ValueError,
        f"weight.shape[0] (output channels, {out_channels}) must be divisible by groups "
        f"({groups} = input channels {in_channels} / weight.shape[1] {in_per_group})",
    )

    kernel_points = kh * kw
    offset_channels = offset.shape[1]
    require(
        offset_channels > 0 and offset_channels % (2 * kernel_points) == 0,
        ValueError,
        f"offset.shape[1] must be a positive multiple of 2*kh*kw = {2 * kernel_points} "
        f"(2*offset_groups*kh*kw), got {offset_channels}",
    )
    offset_groups = offset_channels // (2 * kernel_points)
    require(
        in_channels % offset_groups == 0,
        ValueError,
        f"input channels ({in_channels}) must be divisible by offset groups "
        f"({offset_groups} = offset.shape[1] {offset_channels} / (2*kh*kw))",
    )

    out_size = output_size((in_h, in_w), (kh, kw), stride, padding, dilation)
    require(
        out_size[0] >= 1 and out_size[1] >= 1,
        ValueError,
        f"output size would be {out_size[0]}x{out_size[1]} for input {in_h}x{in_w}, "
        f"kernel {kh}x{kw}, stride {stride}, padding {padding}, dilation {dilation}: it must be at least 1x1",
    )
    expected_offset = (batch, 2 * offset_groups * kernel_points, *out_size)
    require(
        tuple(offset.shape) == expected_offset,
        ValueError,
        f"offset must have shape [N, 2*offset_groups*kh*kw, H_out, W_out] = "
        f"{list(expected_offset)}, got {list(offset.shape)}",
    )
    if mask is not None:
        expected_mask = (batch, offset_groups * kernel_points, *out_size)
        require(
            tuple(mask.shape) == expected_mask,
            ValueError,
            f"mask must have shape [N, offset_groups*kh*kw, H_out, W_out] = "
            f"{list(expected_mask)}, got {list(mask.shape)}",
        )
    if bias is not None:
        require(
            bias.shape[0] == out_channels,
            ValueError,
            f"bias must have shape [C_out] = [{out_channels}], got {list(bias.shape)}",
        )
    return ConvGeometry.of(input, offset, weight, stride, padding, dilation)
