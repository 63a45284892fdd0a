"""Translation of ``deformconv::deform_conv2d`` to older ONNX operators, without ``DeformConv``.

For runtimes that lack ``DeformConv`` (added in opset 19). The graph follows the im2col
formulation: ``GridSample`` (opset 16) reads every sample point of every offset group
bilinearly with zero padding, the mask multiplies the samples, and one batched ``MatMul`` with
the grouped weight gives the output. The remaining nodes are shape and elementwise operators.

``GridSample`` with zero padding and ``align_corners=0`` interpolates exactly as the op does
(neighbours outside the image read 0), so only the pixel-to-normalised coordinate round trip
differs, by a few float32 ulps of the position. Sample points outside ``-1 < y < H``,
``-1 < x < W`` (NaN and Inf included) are moved to a point whose four neighbours all lie
outside, so they read 0 as in the PyTorch kernels and never reach an index computation.
Half-precision inputs are computed in float32 and the output is cast back.
"""

from __future__ import annotations

from collections.abc import Sequence

from onnxscript import ir
from onnxscript import opset18 as op

from deformconv.export.onnx_geometry import HALF_TYPES, TFloat, const_float, const_ints, conv_geometry
from deformconv.ops.deform_conv2d.geometry import ConvGeometry


def _sample_grid(
    offset: ir.Value,
    in_size: tuple[ir.Value, ir.Value],
    geometry: ConvGeometry,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> ir.Value:
    """The normalised GridSample grid of every sample point.

    Args:
        offset (Value[N, 2*G*K, Ho, Wo]): (y, x) offset pairs, K = kh*kw.
        in_size: H and W of the input, as 1-element tensors of offset's dtype.

    Returns:
        Value[N*G, K, Ho*Wo, 2]: (x, y) pairs in [-1, 1] for the points inside the image.
    """
    kh, kw = geometry.kernel
    points = geometry.kernel_points
    height, width = in_size
    out_h = op.Shape(offset, start=2, end=3)
    out_w = op.Shape(offset, start=3, end=4)

    def positions(count: ir.Value, step: int, pad: int) -> ir.Value:
        index = op.Range(op.Constant(value_int=0), op.Squeeze(count), op.Constant(value_int=1))
        return op.Sub(op.Mul(op.CastLike(index, offset), const_float(step, offset)), const_float(pad, offset))

    # Position of kernel point k = i*kw + j for output pixel (oy, ox), before the offset:
    # base_y has shape [K, Ho, 1] and base_x [K, 1, Wo].
    tap_y = [i * dilation[0] for i in range(kh) for _ in range(kw)]
    tap_x = [j * dilation[1] for _ in range(kh) for j in range(kw)]
    tap_y = op.CastLike(op.Constant(value_floats=[float(v) for v in tap_y]), offset)
    tap_x = op.CastLike(op.Constant(value_floats=[float(v) for v in tap_x]), offset)
    rows = positions(out_h, stride[0], padding[0])
    cols = positions(out_w, stride[1], padding[1])
    base_y = op.Add(op.Unsqueeze(tap_y, const_ints([1, 2])), op.Unsqueeze(rows, const_ints([1])))
    base_x = op.Add(op.Unsqueeze(tap_x, const_ints([1, 2])), op.Unsqueeze(cols, const_ints([0])))

    # offset channel 2*(g*K + k) is dy, the next one dx: shape [N, G, K, 2, Ho, Wo].
    pairs = op.Reshape(offset, op.Concat(const_ints([0, geometry.offset_groups, points, 2]), out_h, out_w, axis=0))
    y = op.Add(op.Gather(pairs, op.Constant(value_int=0), axis=3), base_y)
    x = op.Add(op.Gather(pairs, op.Constant(value_int=1), axis=3), base_x)

    # Written as "inside" so that NaN and Inf fall outside; -2 has no neighbour in the image.
    minus_one = const_float(-1.0, offset)
    inside = op.And(
        op.And(op.Greater(y, minus_one), op.Less(y, height)),
        op.And(op.Greater(x, minus_one), op.Less(x, width)),
    )
    y = op.Where(inside, y, const_float(-2.0, offset))
    x = op.Where(inside, x, const_float(-2.0, offset))

    # GridSample with align_corners=0 reads pixel coordinate p at g = (2p + 1) / size - 1.
    one, two = const_float(1.0, offset), const_float(2.0, offset)
    grid_y = op.Sub(op.Div(op.Add(op.Mul(y, two), one), height), one)
    grid_x = op.Sub(op.Div(op.Add(op.Mul(x, two), one), width), one)
    grid = op.Concat(op.Unsqueeze(grid_x, const_ints([-1])), op.Unsqueeze(grid_y, const_ints([-1])), axis=-1)
    pixels = op.Mul(out_h, out_w)
    return op.Reshape(grid, op.Concat(const_ints([-1, points]), pixels, const_ints([2]), axis=0))


def deform_conv2d_to_gridsample(
    input: TFloat,
    offset: TFloat,
    mask: TFloat | None,
    weight: TFloat,
    bias: TFloat | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    batch_chunk,
) -> TFloat:
    """Emits ``GridSample`` + ``MatMul`` nodes computing a ``deformconv::deform_conv2d`` call.

    Same arguments as :func:`deformconv.export.onnx_deformconv.deform_conv2d_to_deformconv`.

    Returns:
        Value[N, C_out, H_out, W_out], in the dtype of ``input``.
    """
    geometry = conv_geometry(input, offset, weight, stride, padding, dilation)
    out_type = input.dtype
    if out_type in HALF_TYPES:
        float32 = ir.DataType.FLOAT
        input, offset, weight = (op.Cast(t, to=float32) for t in (input, offset, weight))
        mask = None if mask is None else op.Cast(mask, to=float32)
        bias = None if bias is None else op.Cast(bias, to=float32)

    points = geometry.kernel_points
    groups, offset_groups = geometry.groups, geometry.offset_groups
    height = op.CastLike(op.Shape(input, start=2, end=3), offset)
    width = op.CastLike(op.Shape(input, start=3, end=4), offset)
    grid = _sample_grid(offset, (height, width), geometry, stride, padding, dilation)

    # One GridSample image per (batch element, offset group): [N*G, C_in/G, H, W].
    image = op.Reshape(
        input, op.Concat(const_ints([-1, geometry.in_channels // offset_groups]), op.Shape(input, start=2), axis=0)
    )
    sampled = op.GridSample(image, grid, align_corners=0, mode="bilinear", padding_mode="zeros")
    pixels = op.Mul(op.Shape(offset, start=2, end=3), op.Shape(offset, start=3, end=4))
    if mask is not None:
        sampled = op.Mul(sampled, op.Reshape(mask, op.Concat(const_ints([-1, 1, points]), pixels, axis=0)))

    # [N*G, C_in/G, K, L] is [N, C_in, K, L] in memory, i.e. the grouped im2col columns.
    in_per_group = geometry.in_channels // groups
    columns = op.Reshape(sampled, op.Concat(const_ints([-1, groups, in_per_group * points]), pixels, axis=0))
    kernel = op.Reshape(weight, const_ints([groups, geometry.out_channels // groups, in_per_group * points]))
    output = op.MatMul(kernel, columns)
    output = op.Reshape(output, op.Concat(const_ints([-1, geometry.out_channels]), op.Shape(offset, start=2), axis=0))
    if bias is not None:
        output = op.Add(output, op.Reshape(bias, const_ints([geometry.out_channels, 1, 1])))
    if out_type in HALF_TYPES:
        output = op.Cast(output, to=out_type)
    return output
