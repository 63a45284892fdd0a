"""Translation of ``deformconv::deform_conv2d`` to the standard ONNX ``DeformConv`` operator.

``DeformConv`` (ONNX opset 19 and later) has exactly the semantics of
``torchvision.ops.deform_conv2d``, which this package shares: the offset tensor holds, per
offset group and kernel point (row-major), a (y, x) pair; the mask one scalar per offset group
and kernel point; sample points outside the image read zero. So the translation is a single
node whose attributes come from the op's arguments.
"""

from __future__ import annotations

from collections.abc import Sequence

from onnxscript import opset19 as op

from deformconv.export.onnx_geometry import TFloat, conv_geometry


def deform_conv2d_to_deformconv(
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
    """Emits one ``DeformConv`` node for a ``deformconv::deform_conv2d`` call.

    Called by ``torch.onnx.export(..., dynamo=True)`` through its ``custom_translation_table``,
    with the op's arguments. ``batch_chunk`` only bounds the memory of the PyTorch kernels and
    has no ONNX counterpart.

    Args:
        input (Value[N, C_in, H, W]): input feature map.
        offset (Value[N, 2*G*kh*kw, H_out, W_out]): (y, x) offset pairs.
        mask (Value[N, G*kh*kw, H_out, W_out], optional): modulation; None for DCNv1.
        weight (Value[C_out, C_in/groups, kh, kw]): convolution weight.
        bias (Value[C_out], optional): bias.
        stride, padding, dilation: (h, w) pairs.
        batch_chunk: ignored.

    Returns:
        Value[N, C_out, H_out, W_out].
    """
    geometry = conv_geometry(input, offset, weight, stride, padding, dilation)
    return op.DeformConv(
        input,
        weight,
        offset,
        bias,
        mask,
        dilations=list(dilation),
        group=geometry.groups,
        kernel_shape=list(geometry.kernel),
        offset_group=geometry.offset_groups,
        pads=[padding[0], padding[1], padding[0], padding[1]],
        strides=list(stride),
    )
