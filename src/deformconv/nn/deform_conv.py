"""Deformable convolution layers whose offsets (and mask) are given to ``forward``.

:class:`DeformConv2d` is a drop-in replacement for ``torchvision.ops.DeformConv2d``: same
constructor, parameters (``weight``, ``bias``), initialisation and state-dict keys.
:class:`ModulatedDeformConv2d` is the same layer with a mask that ``forward`` requires (DCNv2).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from deformconv.ops import deform_conv2d
from deformconv.ops.deform_conv2d.checks import IntPair, to_pair


def positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def check_layer_args(
    in_channels: int,
    out_channels: int,
    kernel_size: IntPair,
    stride: IntPair,
    padding: IntPair,
    dilation: IntPair,
    groups: int,
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Validates a layer's hyper-parameters; returns ``(kernel_size, stride, padding, dilation)`` as pairs.

    Raises:
        ValueError: a size is not positive, or the channels are not divisible by ``groups``.
        TypeError: a size is neither an int nor a pair of ints.
    """
    positive_int(in_channels, "in_channels")
    positive_int(out_channels, "out_channels")
    positive_int(groups, "groups")
    if in_channels % groups != 0:
        raise ValueError(f"in_channels ({in_channels}) must be divisible by groups ({groups})")
    if out_channels % groups != 0:
        raise ValueError(f"out_channels ({out_channels}) must be divisible by groups ({groups})")
    pairs = {
        "kernel_size": to_pair(kernel_size, "kernel_size"),
        "stride": to_pair(stride, "stride"),
        "padding": to_pair(padding, "padding"),
        "dilation": to_pair(dilation, "dilation"),
    }
    for name, low in (("kernel_size", 1), ("stride", 1), ("dilation", 1), ("padding", 0)):
        if min(pairs[name]) < low:
            raise ValueError(f"{name} must be >= {low} in both dimensions, got {pairs[name]}")
    return pairs["kernel_size"], pairs["stride"], pairs["padding"], pairs["dilation"]


class DeformConvBase(nn.Module):
    """Hyper-parameters, ``weight`` and ``bias`` shared by every deformable layer.

    Attributes:
        weight (Tensor[out_channels, in_channels/groups, kh, kw]): initialised like
            ``nn.Conv2d`` (``kaiming_uniform_`` with ``a=sqrt(5)``).
        bias (Tensor[out_channels] or None): uniform in ``±1/sqrt(fan_in)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        bias: bool = True,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kernel_size, stride, padding, dilation = check_layer_args(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups
        )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.groups = groups
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *kernel_size, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels, **factory))
        else:
            self.register_parameter("bias", None)
        # Not self.reset_parameters(): a subclass's override may reset modules it has not created yet.
        DeformConvBase.reset_parameters(self)

    def reset_parameters(self) -> None:
        """Initialises ``weight`` and ``bias`` exactly as ``nn.Conv2d`` and torchvision do."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = nn.init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return text


class DeformConv2d(DeformConvBase):
    """Deformable convolution (DCNv1, or DCNv2 when ``forward`` gets a mask).

    A drop-in replacement for ``torchvision.ops.DeformConv2d``: the offsets, and optionally
    the mask, come from elsewhere (usually an ordinary convolution over the same input; see
    :class:`deformconv.nn.DeformConv2dPack` for a layer that owns it). The number of offset
    groups is inferred from the offset's channels.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        kernel_size: ``kh`` or ``(kh, kw)``.
        stride: distance between sampling windows. Default: 1.
        padding: implicit zero padding on both sides. Default: 0.
        dilation: spacing between kernel points. Default: 1.
        groups: blocked connections from input to output channels. Default: 1.
        bias: whether to add a learnable bias. Default: True.
        device: where the parameters are created.
        dtype: dtype of the parameters.

    Example:
        >>> layer = DeformConv2d(8, 16, 3, padding=1)
        >>> x = torch.randn(2, 8, 12, 12)
        >>> offset = torch.randn(2, 2 * 3 * 3, 12, 12)
        >>> layer(x, offset).shape
        torch.Size([2, 16, 12, 12])
    """

    def forward(self, input: Tensor, offset: Tensor, mask: Tensor | None = None) -> Tensor:
        """Deformable convolution of ``input``.

        Args:
            input (Tensor[N, in_channels, H, W]): input feature map.
            offset (Tensor[N, 2*G*kh*kw, H_out, W_out]): (dy, dx) of every kernel point of
                every offset group ``G``.
            mask (Tensor[N, G*kh*kw, H_out, W_out], optional): modulation of every kernel
                point, applied as given. None gives DCNv1.

        Returns:
            Tensor[N, out_channels, H_out, W_out].
        """
        return deform_conv2d(input, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask)


class ModulatedDeformConv2d(DeformConv2d):
    """Modulated deformable convolution (DCNv2): :class:`DeformConv2d` whose mask is required.

    Same constructor, parameters and state-dict keys as :class:`DeformConv2d`.

    Example:
        >>> layer = ModulatedDeformConv2d(8, 16, 3, padding=1)
        >>> x = torch.randn(2, 8, 12, 12)
        >>> offset = torch.randn(2, 2 * 9, 12, 12)
        >>> mask = torch.rand(2, 9, 12, 12)
        >>> layer(x, offset, mask).shape
        torch.Size([2, 16, 12, 12])
    """

    def forward(self, input: Tensor, offset: Tensor, mask: Tensor) -> Tensor:  # type: ignore[override]
        """Modulated deformable convolution of ``input``.

        Args:
            input (Tensor[N, in_channels, H, W]): input feature map.
            offset (Tensor[N, 2*G*kh*kw, H_out, W_out]): (dy, dx) of every kernel point.
            mask (Tensor[N, G*kh*kw, H_out, W_out]): modulation of every kernel point.

        Returns:
            Tensor[N, out_channels, H_out, W_out].

        Raises:
            TypeError: ``mask`` is not a Tensor.
        """
        if not isinstance(mask, Tensor):
            raise TypeError(f"mask must be a Tensor[N, offset_groups*kh*kw, H_out, W_out], got {type(mask).__name__}")
        return super().forward(input, offset, mask)
