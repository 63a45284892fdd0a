"""Translation of ``deformconv::multi_scale_deform_attn`` to standard ONNX operators.

ONNX has no deformable attention operator, so the graph is the ``grid_sample`` formulation:
for every level, ``Slice`` its rows out of ``value``, lay them out as one ``[N*M, D, H, W]``
image per (image, head), read every sample point with ``GridSample`` (bilinear, zero padding,
``align_corners=0``, opset 16), multiply by the attention weights and ``ReduceSum`` over the
points; the levels add up. ``GridSample`` with those settings reads location ``(x, y)`` at pixel
``(x*W - 0.5, y*H - 0.5)`` with neighbours outside the map reading 0, as the op does, so only the
rounding of the coordinate round trip differs.

The level sizes and starts are read at run time from ``spatial_shapes`` and
``level_start_index``, so the number of queries, the batch and the level sizes may all be
dynamic; the number of levels, heads, points and channels must be static. Locations outside the
map (NaN and Inf included) are moved far outside, where all four neighbours read 0, so no
runtime ever computes an index from them. Half-precision inputs are computed in float32 and the
output is cast back.
"""

from __future__ import annotations

import torch
from onnxscript import INT64, ir
from onnxscript import opset18 as op

from deformconv.export.onnx_geometry import HALF_TYPES, TFloat, const_float, const_ints, static_dim

# A normalised grid coordinate whose four neighbours lie outside any map (pixel <= -1.5).
_FAR_OUTSIDE = -4.0


def _level_grid(locations: ir.Value, height: ir.Value, width: ir.Value) -> ir.Value:
    """GridSample grid of one level's locations (Value[N, M, Lq, P, 2]); far outside where not inside."""
    x = op.Gather(locations, op.Constant(value_int=0), axis=4)
    y = op.Gather(locations, op.Constant(value_int=1), axis=4)
    pixel_x = op.Sub(op.Mul(x, width), const_float(0.5, x))
    pixel_y = op.Sub(op.Mul(y, height), const_float(0.5, y))
    # Written as "inside" so that NaN and Inf fall outside.
    minus_one = const_float(-1.0, x)
    inside = op.And(
        op.And(op.Greater(pixel_x, minus_one), op.Less(pixel_x, width)),
        op.And(op.Greater(pixel_y, minus_one), op.Less(pixel_y, height)),
    )
    grid = op.Sub(op.Mul(locations, const_float(2.0, x)), const_float(1.0, x))
    return op.Where(op.Unsqueeze(inside, const_ints([-1])), grid, const_float(_FAR_OUTSIDE, x))


def multi_scale_deform_attn_to_gridsample(
    value: TFloat,
    spatial_shapes: INT64,
    level_start_index: INT64,
    sampling_locations: TFloat,
    attention_weights: TFloat,
) -> TFloat:
    """Emits ``Slice`` + ``GridSample`` + ``Mul``/``ReduceSum`` nodes computing the op.

    Args:
        value (Value[N, S, M, D]), spatial_shapes (Value[L, 2], int64), level_start_index
        (Value[L], int64), sampling_locations (Value[N, Lq, M, L, P, 2]), attention_weights
        (Value[N, Lq, M, L, P]): as in :func:`deformconv.multi_scale_deform_attn`.

    Returns:
        Value[N, Lq, M*D], in the dtype of ``value``.
    """
    heads = static_dim(value, 2, "number of heads")
    channels = static_dim(value, 3, "channels per head")
    levels = static_dim(sampling_locations, 3, "number of levels")
    out_type = value.dtype
    if out_type in HALF_TYPES:
        float32 = ir.DataType.FLOAT
        value, sampling_locations, attention_weights = (
            op.Cast(t, to=float32) for t in (value, sampling_locations, attention_weights)
        )

    # [N, Lq, M, L, P, ...] -> [N, M, Lq, L, P, ...]: one GridSample image per (image, head).
    locations = op.Transpose(sampling_locations, perm=[0, 2, 1, 3, 4, 5])
    weights = op.Transpose(attention_weights, perm=[0, 2, 1, 3, 4])
    # [N*M, 1, Lq, P] for the weights of one level.
    weight_shape = op.Concat(const_ints([-1, 1]), op.Shape(weights, start=2, end=3), op.Shape(weights, start=4), axis=0)
    grid_shape = op.Concat(const_ints([-1]), op.Shape(locations, start=2, end=3), op.Shape(locations, start=4), axis=0)
    total = None
    for level in range(levels):
        index = op.Constant(value_int=level)
        size = op.Gather(spatial_shapes, index, axis=0)
        height_int, width_int = (op.Slice(size, const_ints([i]), const_ints([i + 1])) for i in (0, 1))
        start = op.Unsqueeze(op.Gather(level_start_index, index, axis=0), const_ints([0]))
        rows = op.Slice(value, start, op.Add(start, op.Mul(height_int, width_int)), const_ints([1]))
        # [N, H*W, M, D] -> [N, M, D, H*W] -> [N*M, D, H, W]
        image = op.Reshape(
            op.Transpose(rows, perm=[0, 2, 3, 1]), op.Concat(const_ints([-1, channels]), height_int, width_int, axis=0)
        )
        height, width = op.CastLike(height_int, locations), op.CastLike(width_int, locations)
        grid = _level_grid(op.Gather(locations, index, axis=3), height, width)
        sampled = op.GridSample(
            image, op.Reshape(grid, grid_shape), align_corners=0, mode="bilinear", padding_mode="zeros"
        )
        level_weights = op.Reshape(op.Gather(weights, index, axis=3), weight_shape)
        contribution = op.ReduceSum(op.Mul(sampled, level_weights), const_ints([-1]), keepdims=0)
        total = contribution if total is None else op.Add(total, contribution)

    # [N*M, D, Lq] -> [N, M*D, Lq] -> [N, Lq, M*D]
    batch = op.Shape(sampling_locations, start=0, end=1)
    output = op.Reshape(total, op.Concat(batch, const_ints([heads * channels, -1]), axis=0))
    output = op.Transpose(output, perm=[0, 2, 1])
    if out_type in HALF_TYPES:
        output = op.Cast(output, to=out_type)
    return output


#: The entry of :func:`deformconv.export.onnx_translation_table` for this op.
MSDA_TRANSLATION = {torch.ops.deformconv.multi_scale_deform_attn.default: multi_scale_deform_attn_to_gridsample}
