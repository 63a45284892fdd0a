"""The one description of a deformable convolution's sizes, shared by every layer of the code.

Validation (:mod:`.checks`) builds it, the op passes it to the kernel of every backend, and the
export, benchmark and ``deformconv check`` read their sizes from it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

Pair = tuple[int, int]


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other floating dtype accumulates in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def output_size(in_size: Sequence[int], kernel: Pair, stride: Pair, padding: Pair, dilation: Pair) -> Pair:
    """``(H_out, W_out)`` of a convolution, exactly as ``F.conv2d`` computes it."""
    h, w = (
        (size + 2 * pad - dil * (k - 1) - 1) // s + 1
        for size, k, s, pad, dil in zip(in_size, kernel, stride, padding, dilation)
    )
    return (h, w)


@dataclass(frozen=True)
class ConvGeometry:
    """Sizes and hyper-parameters of one ``deform_conv2d`` call.

    Attributes:
        batch: N.
        in_channels: C_in.
        in_size: (H, W) of the input.
        out_channels: C_out.
        groups: convolution groups (``C_in / weight.shape[1]``).
        offset_groups: G, offset (deformable) groups (``offset.shape[1] / (2*kh*kw)``).
        kernel: (kh, kw).
        stride, padding, dilation: (h, w) pairs.
        out_size: (H_out, W_out).
        dtype: dtype of every tensor argument.
        batch_chunk: images sampled into one column buffer (from the im2col budget).
    """

    batch: int
    in_channels: int
    in_size: Pair
    out_channels: int
    groups: int
    offset_groups: int
    kernel: Pair
    stride: Pair
    padding: Pair
    dilation: Pair
    out_size: Pair
    dtype: torch.dtype
    batch_chunk: int = 1

    @classmethod
    def of(
        cls,
        input: Tensor,
        offset: Tensor,
        weight: Tensor,
        stride: Sequence[int],
        padding: Sequence[int],
        dilation: Sequence[int],
        batch_chunk: int = 1,
    ) -> ConvGeometry:
        """Reads the geometry off tensors whose shapes are already known to be consistent."""
        return cls.from_shapes(
            input.shape, offset.shape, weight.shape, stride, padding, dilation, input.dtype, batch_chunk
        )

    @classmethod
    def from_shapes(
        cls,
        input_shape: Sequence,
        offset_shape: Sequence,
        weight_shape: Sequence[int],
        stride: Sequence[int],
        padding: Sequence[int],
        dilation: Sequence[int],
        dtype: torch.dtype,
        batch_chunk: int = 1,
    ) -> ConvGeometry:
        """The geometry of arguments with these shapes.

        The ONNX exporter passes shapes whose batch and spatial sizes may be symbolic; channel
        counts and the kernel size are always static.
        """
        batch, in_channels, height, width = input_shape
        out_channels, in_per_group, kh, kw = weight_shape
        return cls(
            batch=batch,
            in_channels=in_channels,
            in_size=(height, width),
            out_channels=out_channels,
            groups=in_channels // in_per_group,
            offset_groups=offset_shape[1] // (2 * kh * kw),
            kernel=(kh, kw),
            stride=(stride[0], stride[1]),
            padding=(padding[0], padding[1]),
            dilation=(dilation[0], dilation[1]),
            out_size=(offset_shape[2], offset_shape[3]),
            dtype=dtype,
            batch_chunk=batch_chunk,
        )

    def with_batch_chunk(self, batch_chunk: int) -> ConvGeometry:
        return dataclasses.replace(self, batch_chunk=batch_chunk)

    @property
    def height(self) -> int:
        return self.in_size[0]

    @property
    def width(self) -> int:
        return self.in_size[1]

    @property
    def out_h(self) -> int:
        return self.out_size[0]

    @property
    def out_w(self) -> int:
        return self.out_size[1]

    @property
    def kernel_h(self) -> int:
        return self.kernel[0]

    @property
    def kernel_w(self) -> int:
        return self.kernel[1]

    @property
    def kernel_points(self) -> int:
        return self.kernel[0] * self.kernel[1]

    @property
    def in_per_group(self) -> int:
        return self.in_channels // self.groups

    @property
    def out_per_group(self) -> int:
        return self.out_channels // self.groups

    @property
    def in_per_offset_group(self) -> int:
        return self.in_channels // self.offset_groups

    @property
    def channel_run(self) -> int:
        """Widest run of input channels that shares one group and one offset group."""
        return min(self.in_per_group, self.in_per_offset_group)

    @property
    def depthwise(self) -> bool:
        return self.in_per_group == 1 and self.out_per_group == 1

    @property
    def accumulation_dtype(self) -> torch.dtype:
        return accumulation_dtype(self.dtype)

    @property
    def column_elements_per_image(self) -> int:
        """Elements of the sampled (im2col) buffer that one image needs."""
        return self.in_channels * self.kernel_points * self.out_size[0] * self.out_size[1]

    @property
    def conv_args(self) -> tuple[list[int], list[int], list[int]]:
        """``(stride, padding, dilation)`` as lists, the form the op schemas take."""
        return list(self.stride), list(self.padding), list(self.dilation)
