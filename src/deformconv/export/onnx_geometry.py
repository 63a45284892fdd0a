"""What the ONNX exporter knows of a ``deform_conv2d`` call: tensor types and its geometry.

The exporter hands a translation function symbolic values whose shapes may hold symbolic
dimensions (a dynamic batch or image size). Channel counts and the kernel size must be static:
they become ONNX attributes or fixed reshape sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import torch
from onnxscript import BFLOAT16, DOUBLE, FLOAT, FLOAT16, ir
from onnxscript import opset18 as op

from deformconv.ops.deform_conv2d.geometry import ConvGeometry

# The tensor types a translation accepts; the exporter reads the translation's signature from
# these annotations.
TFloat = TypeVar("TFloat", FLOAT16, BFLOAT16, FLOAT, DOUBLE)

# Half types are computed in float32 by the decompositions and cast back once at the end.
HALF_TYPES = (ir.DataType.FLOAT16, ir.DataType.BFLOAT16)


def const_ints(values: Sequence[int]) -> ir.Value:
    """A constant int64 vector (shapes, axes, starts and ends)."""
    return op.Constant(value_ints=list(values))


def const_float(value: float, like: ir.Value) -> ir.Value:
    """A scalar constant in the dtype of ``like``."""
    return op.CastLike(op.Constant(value_float=value), like)


def static_dim(value: ir.Value, axis: int, name: str) -> int:
    """The size of ``value`` along ``axis``, which must be known at export time.

    Raises:
        ValueError: the size is symbolic or unknown (e.g. a dynamic channel dimension).
    """
    dim = None if value.shape is None else value.shape[axis]
    if not isinstance(dim, int):
        raise ValueError(
            f"ONNX export of deform_conv2d needs a static {name} (dimension {axis}), got {dim!r}; "
            "only the batch and spatial dimensions may be dynamic"
        )
    return dim


# dtypes of the values a translation receives, as torch dtypes.
TORCH_DTYPES = {
    ir.DataType.FLOAT16: torch.float16,
    ir.DataType.BFLOAT16: torch.bfloat16,
    ir.DataType.FLOAT: torch.float32,
    ir.DataType.DOUBLE: torch.float64,
}


def conv_geometry(
    input: ir.Value,
    offset: ir.Value,
    weight: ir.Value,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> ConvGeometry:
    """The geometry of a call, read from the shapes of the op's values.

    Batch and spatial sizes may be symbolic; channel counts and the kernel size must be static.

    Args:
        input (Value[N, C_in, H, W]): input feature map.
        offset (Value[N, 2*G*kh*kw, H_out, W_out]): sampling offsets.
        weight (Value[C_out, C_in/groups, kh, kw]): convolution weight.
        stride, padding, dilation: (h, w) pairs.
    """
    input_shape = [input.shape[0], static_dim(input, 1, "input channel count"), *input.shape[2:]]
    offset_shape = [offset.shape[0], static_dim(offset, 1, "offset channel count"), *offset.shape[2:]]
    weight_shape = [
        static_dim(weight, 0, "weight output channel count"),
        static_dim(weight, 1, "weight input channel count"),
        static_dim(weight, 2, "kernel height"),
        static_dim(weight, 3, "kernel width"),
    ]
    return ConvGeometry.from_shapes(
        input_shape, offset_shape, weight_shape, stride, padding, dilation, TORCH_DTYPES[input.dtype]
    )
