"""What the ONNX exporter knows of a ``deform_conv2d`` call: tensor types and static geometry.

The exporter hands a translation function symbolic values whose shapes may hold symbolic
dimensions (a dynamic batch or image size). Channel counts and the kernel size must be static:
they become ONNX attributes or fixed reshape sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from onnxscript import BFLOAT16, DOUBLE, FLOAT, FLOAT16, ir

# The tensor types a translation accepts; the exporter reads the translation's signature from
# these annotations.
TFloat = TypeVar("TFloat", FLOAT16, BFLOAT16, FLOAT, DOUBLE)


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


@dataclass(frozen=True)
class ConvGeometry:
    """Channel counts and kernel size of one ``deform_conv2d`` call.

    Attributes:
        in_channels: ``C_in`` of ``input``.
        out_channels: ``C_out`` of ``weight``.
        groups: convolution groups, ``C_in / weight.shape[1]``.
        offset_groups: ``offset.shape[1] / (2*kh*kw)``.
        kernel: ``(kh, kw)``.
    """

    in_channels: int
    out_channels: int
    groups: int
    offset_groups: int
    kernel: tuple[int, int]

    @property
    def kernel_points(self) -> int:
        return self.kernel[0] * self.kernel[1]


def conv_geometry(input: ir.Value, offset: ir.Value, weight: ir.Value) -> ConvGeometry:
    """Reads the geometry from the static shapes of the op's tensors.

    Args:
        input (Value[N, C_in, H, W]): input feature map.
        offset (Value[N, 2*G*kh*kw, H_out, W_out]): sampling offsets.
        weight (Value[C_out, C_in/groups, kh, kw]): convolution weight.
    """
    in_channels = static_dim(input, 1, "input channel count")
    out_channels = static_dim(weight, 0, "weight output channel count")
    in_per_group = static_dim(weight, 1, "weight input channel count")
    kernel = (static_dim(weight, 2, "kernel height"), static_dim(weight, 3, "kernel width"))
    offset_channels = static_dim(offset, 1, "offset channel count")
    return ConvGeometry(
        in_channels=in_channels,
        out_channels=out_channels,
        groups=in_channels // in_per_group,
        offset_groups=offset_channels // (2 * kernel[0] * kernel[1]),
        kernel=kernel,
    )
