"""Where DCNv3 and DCNv4 sample: the one description of their geometry, shared by both operators.

DCNv3 (InternImage, `arXiv:2211.05778 <https://arxiv.org/abs/2211.05778>`_) and DCNv4
(FlashInternImage, `arXiv:2401.06197 <https://arxiv.org/abs/2401.06197>`_) sample the
channels-last input at the same points; they differ only in how offsets and weights are laid
out (and DCNv3's layer applies a softmax to its weights). For output pixel ``(oy, ox)``, group
``g`` and sample point ``p``, the point is read at the pixel coordinates

.. code-block:: text

    x = ox*stride_w - pad_w + cx + offset_scale * (tap_x[p] + dx[g, p])
    y = oy*stride_h - pad_h + cy + offset_scale * (tap_y[p] + dy[g, p])

with ``cx = dilation_w*(kernel_w-1) // 2`` (the centre of the dilated kernel, rounded down; ``cy``
likewise) and the taps in x-major order: point ``p = i*kernel_h + j`` (``i`` over the kernel's
columns, ``j`` over its rows) has ``tap_x = i*dilation_w - cx``, ``tap_y = j*dilation_h - cy``.
With ``remove_center`` the point ``(i, j) = (kernel_w//2, kernel_h//2)`` is left out and the
later points move up by one. Pixel ``(y, x)`` is the centre of input row ``y`` and column ``x``;
bilinear interpolation reads 0 outside the image (a point with ``x <= -1``, ``x >= W``,
``y <= -1`` or ``y >= H``, or a NaN coordinate, reads 0).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from deformconv.ops import budget
from deformconv.ops.deform_conv2d.geometry import accumulation_dtype

Pair = tuple[int, int]


def output_size(in_size: Pair, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair) -> Pair:
    """``(H_out, W_out) = ((H + 2*pad - (dilation*(kernel-1) + 1)) // stride + 1, ...)``."""
    h, w = (
        (size + 2 * pad - (dil * (k - 1) + 1)) // s + 1
        for size, k, s, pad, dil in zip(in_size, kernel, stride, padding, dilation)
    )
    return (h, w)


def kernel_taps(kernel: Pair, dilation: Pair, remove_center: bool) -> list[tuple[int, int]]:
    """``(tap_x, tap_y)`` of every sample point, in the official x-major order.

    Example:
        >>> kernel_taps((3, 3), (1, 1), remove_center=False)[:4]
        [(-1, -1), (-1, 0), (-1, 1), (0, -1)]
    """
    (kh, kw), (dh, dw) = kernel, dilation
    cy, cx = dh * (kh - 1) // 2, dw * (kw - 1) // 2
    return [
        (i * dw - cx, j * dh - cy)
        for i in range(kw)
        for j in range(kh)
        if not (remove_center and i == kw // 2 and j == kh // 2)
    ]


def kernel_origin(kernel: Pair, dilation: Pair, padding: Pair) -> tuple[int, int]:
    """``(x, y)`` of the kernel centre for output pixel (0, 0): ``dilation*(kernel-1)//2 - pad``."""
    (kh, kw), (dh, dw) = kernel, dilation
    return (dw * (kw - 1) // 2 - padding[1], dh * (kh - 1) // 2 - padding[0])


@dataclass(frozen=True)
class DCNGeometry:
    """Sizes and hyper-parameters of one DCNv3 or DCNv4 call.

    Attributes:
        batch: N.
        in_size: (H, W) of the input.
        group: G, groups of channels with their own sample points.
        group_channels: D, channels per group (C = G*D).
        kernel: (kernel_h, kernel_w).
        stride, padding, dilation: (h, w) pairs.
        offset_scale: factor applied to the taps and the offsets.
        remove_center: whether the centre point of the kernel is left out.
        out_size: (H_out, W_out).
        dtype: dtype of every tensor argument.
        batch_chunk: images processed at once by kernels that buffer samples (from the budget).
    """

    batch: int
    in_size: Pair
    group: int
    group_channels: int
    kernel: Pair
    stride: Pair
    padding: Pair
    dilation: Pair
    offset_scale: float
    remove_center: bool
    out_size: Pair
    dtype: torch.dtype
    batch_chunk: int = 1

    @property
    def channels(self) -> int:
        return self.group * self.group_channels

    @property
    def points(self) -> int:
        """P, sample points per group and output pixel."""
        return self.kernel[0] * self.kernel[1] - int(self.remove_center)

    @property
    def taps(self) -> list[tuple[int, int]]:
        return kernel_taps(self.kernel, self.dilation, self.remove_center)

    @property
    def origin(self) -> tuple[int, int]:
        """``(x, y)`` of the kernel centre for output pixel (0, 0); output pixels step by the stride."""
        return kernel_origin(self.kernel, self.dilation, self.padding)

    @property
    def accumulation_dtype(self) -> torch.dtype:
        return accumulation_dtype(self.dtype)

    @property
    def sample_elements_per_image(self) -> int:
        """Elements that a buffer of every sample's four corners, all channels, needs per image."""
        return self.out_size[0] * self.out_size[1] * self.channels * self.points * 4

    def with_budget_chunk(self, batch_chunk: int) -> DCNGeometry:
        """The geometry with ``batch_chunk`` images per buffer (0: as many as the im2col budget allows).

        Raises:
            ValueError: ``batch_chunk`` is negative.
        """
        if batch_chunk < 0:
            raise ValueError(f"batch_chunk must be >= 0 (0: from the im2col budget), got {batch_chunk}")
        if batch_chunk == 0:
            element_size = torch.finfo(self.accumulation_dtype).bits // 8
            batch_chunk = budget.batch_chunk(self.sample_elements_per_image * element_size)
        return dataclasses.replace(self, batch_chunk=batch_chunk)

    @property
    def op_args(self) -> tuple[list[int], list[int], list[int], list[int], int, int, float, bool]:
        """``(kernel, stride, padding, dilation, group, group_channels, offset_scale, remove_center)``."""
        return (
            list(self.kernel),
            list(self.stride),
            list(self.padding),
            list(self.dilation),
            self.group,
            self.group_channels,
            self.offset_scale,
            self.remove_center,
        )


def sample_locations(offset: Tensor, geometry: DCNGeometry) -> Tensor:
    """Pixel coordinates ``(x, y)`` of every sample point.

    Args:
        offset (Tensor[n, H_out, W_out, G, P, 2]): ``(dx, dy)`` per group and point, any strides.
        geometry: the call's geometry.

    Returns:
        Tensor[n, H_out, W_out, G, P, 2]: ``(x, y)`` in input pixels, in the dtype of ``offset``.
    """
    out_h, out_w = offset.shape[1:3]
    device, dtype = offset.device, offset.dtype
    origin_x, origin_y = geometry.origin
    base_x = torch.arange(out_w, device=device, dtype=dtype) * geometry.stride[1] + origin_x
    base_y = torch.arange(out_h, device=device, dtype=dtype) * geometry.stride[0] + origin_y
    taps = torch.tensor(geometry.taps, device=device, dtype=dtype)  # [P, 2]
    scale = geometry.offset_scale
    x = base_x.view(1, 1, out_w, 1, 1) + scale * (taps[:, 0] + offset[..., 0])
    y = base_y.view(1, out_h, 1, 1, 1) + scale * (taps[:, 1] + offset[..., 1])
    return torch.stack((x, y), dim=-1)
