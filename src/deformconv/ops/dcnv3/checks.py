"""Argument validation for ``dcnv3`` (and the checks that ``dcnv4`` shares with it).

Every check runs in Python before any kernel sees the data, so a bad argument raises a clear
error naming the argument, what was expected and what was given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor

from deformconv.ops.dcnv3.geometry import DCNGeometry, output_size
from deformconv.ops.validation import FLOAT_DTYPES, check_grad_output, check_tensor, require

# The layout of each tensor argument of dcnv3 and dcnv4, as error messages name it.
TENSOR_LAYOUTS = {
    "input": "[N, H, W, group*group_channels]",
    "offset": "[N, H_out, W_out, group*P*2]",
    "mask": "[N, H_out, W_out, group*P]",
    "offset_mask": "[N, H_out, W_out, L]",
}


def check_like(tensor: object, name: str, input: Tensor, expected: tuple, layout: str) -> Tensor:
    """Checks that ``tensor`` is a Tensor of ``expected`` shape with the dtype and device of ``input``."""
    check_tensor(tensor, name, len(expected), layout)
    assert isinstance(tensor, Tensor)
    if tensor.dtype != input.dtype:
        raise TypeError(f"{name} must have the dtype of input ({input.dtype}), got {tensor.dtype}")
    if tensor.device != input.device:
        raise RuntimeError(f"{name} must be on the device of input ({input.device}), got {tensor.device}")
    require(
        tuple(tensor.shape) == tuple(expected),
        ValueError,
        f"{name} must have shape {layout} = {list(expected)}, got {list(tensor.shape)}",
    )
    return tensor


def _pair(values: Sequence[int], name: str) -> tuple[int, int]:
    if len(values) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise TypeError(f"{name} must be a pair of ints, got {values!r}")
    return (int(values[0]), int(values[1]))


def check_geometry(
    input: Tensor,
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    group: int,
    group_channels: int,
    offset_scale: float,
    remove_center: bool,
) -> DCNGeometry:
    """Validates ``input`` and the hyper-parameters shared by DCNv3 and DCNv4; returns their geometry.

    Raises:
        TypeError: ``input`` is not a floating-point Tensor, or a hyper-parameter has the wrong type.
        ValueError: a hyper-parameter is out of range or inconsistent with ``input``.
    """
    check_tensor(input, "input", 4, "[N, H, W, group*group_channels]")
    if input.dtype not in FLOAT_DTYPES:
        raise TypeError(f"input must be float64, float32, float16 or bfloat16, got {input.dtype}")
    kernel, stride = _pair(kernel, "kernel"), _pair(stride, "stride")
    padding, dilation = _pair(padding, "padding"), _pair(dilation, "dilation")
    minimums = (("kernel", kernel, 1), ("stride", stride, 1), ("dilation", dilation, 1), ("padding", padding, 0))
    for name, pair, low in minimums:
        if min(pair) < low:
            raise ValueError(f"{name} must be >= {low} in both dimensions, got {pair}")
    _positive(group, "group")
    _positive(group_channels, "group_channels")
    if not isinstance(offset_scale, (int, float)) or not math.isfinite(offset_scale):
        raise ValueError(f"offset_scale must be a finite number, got {offset_scale!r}")
    if remove_center and (kernel[0] % 2 == 0 or kernel[1] % 2 == 0 or kernel == (1, 1)):
        raise ValueError(f"remove_center needs an odd kernel size larger than 1x1, got kernel {kernel[0]}x{kernel[1]}")

    batch, height, width, channels = input.shape
    require(
        channels == group * group_channels,
        ValueError,
        f"input must have group*group_channels = {group}*{group_channels} = {group * group_channels} "
        f"channels (its last dimension), got {channels}",
    )
    out_size = output_size((height, width), kernel, stride, padding, dilation)
    require(
        out_size[0] >= 1 and out_size[1] >= 1,
        ValueError,
        f"output size would be {out_size[0]}x{out_size[1]} for input {height}x{width}, kernel "
        f"{kernel[0]}x{kernel[1]}, stride {stride}, padding {padding}, dilation {dilation}: it must be at least 1x1",
    )
    return DCNGeometry(
        batch=batch,
        in_size=(height, width),
        group=group,
        group_channels=group_channels,
        kernel=kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        offset_scale=float(offset_scale),
        remove_center=bool(remove_center),
        out_size=out_size,
        dtype=input.dtype,
    )


def check_args(input: Tensor, offset: Tensor, mask: Tensor, *params) -> DCNGeometry:
    """Validates every argument of ``dcnv3`` (``params`` as in :func:`check_geometry`).

    Raises:
        TypeError: an argument has the wrong type or dtype.
        ValueError: shapes or hyper-parameters are inconsistent.
        RuntimeError: tensors live on different devices.
    """
    geometry = check_geometry(input, *params)
    batch, (out_h, out_w), group, points = geometry.batch, geometry.out_size, geometry.group, geometry.points
    check_like(offset, "offset", input, (batch, out_h, out_w, group * points * 2), "[N, H_out, W_out, group*P*2]")
    check_like(mask, "mask", input, (batch, out_h, out_w, group * points), "[N, H_out, W_out, group*P]")
    return geometry


def check_dcn_grad_output(grad_output: object, input: Tensor, geometry: DCNGeometry) -> None:
    """Checks the backward op's ``grad_output`` against the forward's output."""
    expected = (geometry.batch, *geometry.out_size, geometry.channels)
    check_grad_output(grad_output, input, expected, "[N, H_out, W_out, group*group_channels]")


def _positive(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def op_args(input: object, *params) -> tuple:
    """The custom op's arguments after the tensors, from the public function's ``params``.

    ``params`` are ``(kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
    group, group_channels, offset_scale, remove_center)`` in the official order; a None ``group``
    or ``group_channels`` is derived from the channels of ``input``. Integers are checked here,
    before the op's schema would reject them with a less helpful message.

    Raises:
        TypeError: a size is not an int.
        ValueError: neither group nor group_channels is given, or one is not a positive int.
    """
    *sizes, group, group_channels, offset_scale, remove_center = params
    names = ("kernel_h", "kernel_w", "stride_h", "stride_w", "pad_h", "pad_w", "dilation_h", "dilation_w")
    for name, value in zip(names, sizes):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, got {value!r}")
    if group is None and group_channels is None:
        raise ValueError("pass group or group_channels (or both)")
    channels = input.shape[-1] if isinstance(input, Tensor) and input.dim() > 0 else 0
    if group is not None:
        _positive(group, "group")
    if group_channels is not None:
        _positive(group_channels, "group_channels")
    if group is None:
        group = max(1, channels // group_channels)
    if group_channels is None:
        group_channels = max(1, channels // group)
    if not isinstance(offset_scale, (int, float)) or isinstance(offset_scale, bool):
        raise TypeError(f"offset_scale must be a float, got {offset_scale!r}")
    pairs = [sizes[k : k + 2] for k in range(0, 8, 2)]
    return (*pairs, group, group_channels, float(offset_scale), bool(remove_center), 0)
