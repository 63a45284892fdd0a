"""Translation of ``deformconv::dcnv3`` and ``deformconv::dcnv4`` to standard ONNX operators.

No ONNX operator computes DCNv3 / DCNv4, so the graph decomposes them: the sample points'
pixel coordinates (the taps and origin of :mod:`deformconv.ops.dcnv3.geometry`, plus the scaled
offsets), ``GridSample`` (opset 16, bilinear, zero padding, ``align_corners=0``) reading every
point of every group, and a weighted sum over the points. ``GridSample`` interpolates exactly as
the op does (neighbours outside the image read 0); points outside ``-1 < x < W``, ``-1 < y < H``
(NaN and Inf included) move to a point whose four neighbours lie outside, so they read 0.
Half-precision inputs are computed in float32 and the output is cast back.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from onnxscript import ir
from onnxscript import opset18 as op

from deformconv.export.onnx_geometry import TFloat, static_dim
from deformconv.ops.dcnv3.geometry import kernel_origin, kernel_taps

_HALF_TYPES = (ir.DataType.FLOAT16, ir.DataType.BFLOAT16)


def _ints(values: Sequence[int]) -> ir.Value:
    return op.Constant(value_ints=list(values))


def _floats(values: Sequence[float], like: ir.Value) -> ir.Value:
    return op.CastLike(op.Constant(value_floats=[float(v) for v in values]), like)


def _dcn(input, offset, weight, kernel, stride, padding, dilation, group, group_channels, offset_scale, remove_center):
    """The output of DCNv3 / DCNv4 from offsets Value[N, Ho, Wo, G, P, 2] and weights Value[N, Ho, Wo, G, P]."""
    out_type = input.dtype
    if out_type in _HALF_TYPES:
        input, offset, weight = (op.Cast(t, to=ir.DataType.FLOAT) for t in (input, offset, weight))
    taps = kernel_taps(tuple(kernel), tuple(dilation), bool(remove_center))
    origin_x, origin_y = kernel_origin(tuple(kernel), tuple(dilation), tuple(padding))
    points = len(taps)
    out_h, out_w = op.Shape(offset, start=1, end=2), op.Shape(offset, start=2, end=3)
    height = op.CastLike(op.Shape(input, start=1, end=2), offset)
    width = op.CastLike(op.Shape(input, start=2, end=3), offset)

    def positions(count: ir.Value, step: int, origin: int) -> ir.Value:
        index = op.Range(op.Constant(value_int=0), op.Squeeze(count), op.Constant(value_int=1))
        return op.Add(op.Mul(op.CastLike(index, offset), _floats([step], offset)), _floats([origin], offset))

    scale = _floats([offset_scale], offset)
    dx = op.Gather(offset, op.Constant(value_int=0), axis=5)  # [N, Ho, Wo, G, P]
    dy = op.Gather(offset, op.Constant(value_int=1), axis=5)
    base_x = op.Reshape(positions(out_w, stride[1], origin_x), _ints([1, 1, -1, 1, 1]))
    base_y = op.Reshape(positions(out_h, stride[0], origin_y), _ints([1, -1, 1, 1, 1]))
    x = op.Add(base_x, op.Mul(scale, op.Add(_floats([t[0] for t in taps], offset), dx)))
    y = op.Add(base_y, op.Mul(scale, op.Add(_floats([t[1] for t in taps], offset), dy)))

    # Written as "inside" so that NaN and Inf fall outside; -2 has no neighbour in the image.
    minus_one = _floats([-1.0], offset)
    inside = op.And(
        op.And(op.Greater(x, minus_one), op.Less(x, width)), op.And(op.Greater(y, minus_one), op.Less(y, height))
    )
    x, y = op.Where(inside, x, _floats([-2.0], offset)), op.Where(inside, y, _floats([-2.0], offset))
    # GridSample with align_corners=0 reads pixel coordinate p at g = (2p + 1) / size - 1.
    one, two = _floats([1.0], offset), _floats([2.0], offset)
    grid_x = op.Sub(op.Div(op.Add(op.Mul(x, two), one), width), one)
    grid_y = op.Sub(op.Div(op.Add(op.Mul(y, two), one), height), one)
    grid = op.Concat(op.Unsqueeze(grid_x, _ints([-1])), op.Unsqueeze(grid_y, _ints([-1])), axis=-1)
    pixels = op.Mul(out_h, out_w)
    # [N, Ho, Wo, G, P, 2] -> [N*G, Ho*Wo, P, 2], one GridSample image per (batch element, group).
    grid = op.Reshape(
        op.Transpose(grid, perm=[0, 3, 1, 2, 4, 5]), op.Concat(_ints([-1]), pixels, _ints([points, 2]), axis=0)
    )
    image = op.Transpose(input, perm=[0, 3, 1, 2])  # [N, C, H, W]
    image = op.Reshape(image, op.Concat(_ints([-1, group_channels]), op.Shape(image, start=2), axis=0))
    sampled = op.GridSample(image, grid, align_corners=0, mode="bilinear", padding_mode="zeros")  # [N*G, D, Q, P]
    weight = op.Reshape(
        op.Transpose(weight, perm=[0, 3, 1, 2, 4]), op.Concat(_ints([-1, 1]), pixels, _ints([points]), axis=0)
    )
    output = op.ReduceSum(op.Mul(sampled, weight), _ints([3]), keepdims=0)  # [N*G, D, Q]
    output = op.Reshape(output, op.Concat(_ints([-1, group * group_channels]), pixels, axis=0))
    output = op.Transpose(output, perm=[0, 2, 1])
    output = op.Reshape(output, op.Concat(_ints([-1]), out_h, out_w, _ints([group * group_channels]), axis=0))
    return op.Cast(output, to=out_type) if out_type in _HALF_TYPES else output


def dcnv3_to_gridsample(
    input: TFloat,
    offset: TFloat,
    mask: TFloat,
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    group: int,
    group_channels: int,
    offset_scale: float,
    remove_center: bool,
    batch_chunk,
) -> TFloat:
    """Emits the nodes of a ``deformconv::dcnv3`` call (arguments as the op's; ``batch_chunk`` ignored).

    Returns:
        Value[N, H_out, W_out, group*group_channels].
    """
    points = static_dim(mask, 3, "mask channel count") // group
    offsets = op.Reshape(offset, _ints([0, 0, 0, group, points, 2]))
    weights = op.Reshape(mask, _ints([0, 0, 0, group, points]))
    return _dcn(
        input, offsets, weights, kernel, stride, padding, dilation, group, group_channels, offset_scale, remove_center
    )


def dcnv4_to_gridsample(
    input: TFloat,
    offset_mask: TFloat,
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    group: int,
    group_channels: int,
    offset_scale: float,
    remove_center: bool,
    batch_chunk,
) -> TFloat:
    """Emits the nodes of a ``deformconv::dcnv4`` call: unpacks ``offset_mask``, then as DCNv3.

    Returns:
        Value[N, H_out, W_out, group*group_channels].
    """
    points = kernel[0] * kernel[1] - int(remove_center)
    packed = op.Slice(offset_mask, _ints([0]), _ints([3 * group * points]), _ints([3]))
    packed = op.Reshape(packed, _ints([0, 0, 0, group, 3 * points]))
    offsets = op.Reshape(
        op.Slice(packed, _ints([0]), _ints([2 * points]), _ints([4])), _ints([0, 0, 0, group, points, 2])
    )
    weights = op.Slice(packed, _ints([2 * points]), _ints([3 * points]), _ints([4]))
    return _dcn(
        input, offsets, weights, kernel, stride, padding, dilation, group, group_channels, offset_scale, remove_center
    )


def dcn_translations() -> dict:
    """``{op overload: translation}`` for the export's ``custom_translation_table``."""
    return {
        torch.ops.deformconv.dcnv3.default: dcnv3_to_gridsample,
        torch.ops.deformconv.dcnv4.default: dcnv4_to_gridsample,
    }
