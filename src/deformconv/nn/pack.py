"""Deformable layers that compute their own offsets (and mask) with an ordinary convolution.

:class:`DeformConv2dPack` (DCNv1) and :class:`ModulatedDeformConv2dPack` (DCNv2) have mmcv's
names and state-dict keys (``weight``, ``bias``, ``conv_offset.weight``, ``conv_offset.bias``),
so mmcv and mmdetection checkpoints load into them. ``conv_offset`` has the layer's kernel size,
stride, padding and dilation, and starts at zero: at initialisation the offsets are 0 and (with
the default mask activation) the mask is 1, so the layer is exactly a regular convolution.
"""

from __future__ import annotations

from typing import Literal, TypeVar

import torch
from torch import Tensor, nn

from deformconv.nn.deform_conv import DeformConvBase
from deformconv.ops import deform_conv2d
from deformconv.ops.deform_conv2d.checks import IntPair

MaskActivation = Literal["2sigmoid", "sigmoid"]
MASK_ACTIVATIONS: tuple[str, ...] = ("2sigmoid", "sigmoid")

PackT = TypeVar("PackT", bound="DeformConvPackBase")


def _offset_groups(offset_groups: int, deform_groups: int | None) -> int:
    """Resolves ``offset_groups`` and mmcv's alias ``deform_groups`` into one value."""
    if deform_groups is not None:
        if offset_groups not in (1, deform_groups):
            raise ValueError(
                f"offset_groups ({offset_groups}) and its alias deform_groups ({deform_groups}) disagree: "
                "give only one of them"
            )
        offset_groups = deform_groups
    if isinstance(offset_groups, bool) or not isinstance(offset_groups, int) or offset_groups < 1:
        raise ValueError(f"offset_groups must be a positive int, got {offset_groups!r}")
    return offset_groups


def conv_padding(conv: nn.Conv2d) -> tuple[int, int]:
    """The symmetric zero padding ``(pad_h, pad_w)`` that ``conv`` applies.

    Raises:
        ValueError: ``conv`` pads with something other than zeros, or asymmetrically
            (``padding="same"`` with an even effective kernel size).
    """
    if conv.padding_mode != "zeros":
        raise ValueError(
            f"only convolutions with padding_mode='zeros' can be made deformable, got "
            f"padding_mode={conv.padding_mode!r}"
        )
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same":
        totals = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
        if any(total % 2 for total in totals):
            raise ValueError(
                f"padding='same' with kernel_size={conv.kernel_size} and dilation={conv.dilation} pads "
                "asymmetrically, which deformable convolution does not support"
            )
        return (totals[0] // 2, totals[1] // 2)
    return (int(conv.padding[0]), int(conv.padding[1]))


class DeformConvPackBase(DeformConvBase):
    """A deformable layer with its own offset convolution ``conv_offset`` (shared by v1 and v2).

    Subclasses set ``mask_channels`` (0 or 1 mask channel per kernel point and offset group)
    and implement :meth:`offsets_and_mask`.
    """

    mask_channels: int = 0

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        offset_groups: int = 1,
        bias: bool = True,
        *,
        deform_groups: int | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            device=device,
            dtype=dtype,
        )
        offset_groups = _offset_groups(offset_groups, deform_groups)
        if in_channels % offset_groups != 0:
            raise ValueError(f"in_channels ({in_channels}) must be divisible by offset_groups ({offset_groups})")
        self.offset_groups = offset_groups
        kernel_points = self.kernel_size[0] * self.kernel_size[1]
        self.conv_offset = nn.Conv2d(
            in_channels,
            (2 + self.mask_channels) * offset_groups * kernel_points,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            bias=True,
            device=device,
            dtype=dtype,
        )
        self.reset_offset()

    @property
    def deform_groups(self) -> int:
        """mmcv's name for :attr:`offset_groups`."""
        return self.offset_groups

    def reset_parameters(self) -> None:
        """Re-initialises ``weight`` and ``bias`` like ``nn.Conv2d``, and ``conv_offset`` to zero."""
        super().reset_parameters()
        self.reset_offset()

    def reset_offset(self) -> None:
        """Sets ``conv_offset``'s weight and bias to zero: offsets 0, and the initial mask."""
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def offsets_and_mask(self, input: Tensor) -> tuple[Tensor, Tensor | None]:
        """The offsets and mask this layer samples ``input`` with (e.g. to draw the sampling points).

        Args:
            input (Tensor[N, in_channels, H, W]): input feature map.

        Returns:
            ``(offset, mask)``: offset (Tensor[N, 2*G*kh*kw, H_out, W_out]) in the layout of
            :func:`deformconv.deform_conv2d`; mask (Tensor[N, G*kh*kw, H_out, W_out]) after the
            activation, or None for DCNv1.
        """
        raise NotImplementedError

    def forward(self, input: Tensor) -> Tensor:
        """Deformable convolution of ``input`` with the offsets (and mask) computed from it.

        Args:
            input (Tensor[N, in_channels, H, W]): input feature map.

        Returns:
            Tensor[N, out_channels, H_out, W_out].
        """
        offset, mask = self.offsets_and_mask(input)
        return deform_conv2d(input, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask)

    @classmethod
    def from_conv(cls: type[PackT], conv: nn.Conv2d, offset_groups: int = 1, **kwargs) -> PackT:
        """A deformable layer that computes exactly what ``conv`` computes, until ``conv_offset`` learns.

        The new layer has ``conv``'s hyper-parameters, a copy of its weight and bias (with the
        same ``requires_grad``), and lives on its device with its dtype.

        Args:
            conv: the convolution to start from; zero padding only.
            offset_groups: number of offset (deformable) groups; must divide ``conv.in_channels``.
            **kwargs: other constructor arguments of the class (e.g. ``mask_activation``).

        Raises:
            TypeError: ``conv`` is not an ``nn.Conv2d``.
            ValueError: ``conv`` cannot be expressed as a deformable convolution (see
                :func:`conv_padding`), or the arguments would not start equal to ``conv``.
        """
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"conv must be an nn.Conv2d, got {type(conv).__name__}")
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv_padding(conv),
            conv.dilation,
            conv.groups,
            offset_groups,
            bias=conv.bias is not None,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
            **kwargs,
        )
        with torch.no_grad():
            layer.weight.copy_(conv.weight)
            if conv.bias is not None:
                layer.bias.copy_(conv.bias)
                layer.bias.requires_grad_(conv.bias.requires_grad)
        layer.weight.requires_grad_(conv.weight.requires_grad)
        return layer

    def extra_repr(self) -> str:
        text = super().extra_repr()
        if self.offset_groups != 1:
            text += f", offset_groups={self.offset_groups}"
        return text


class DeformConv2dPack(DeformConvPackBase):
    """DCNv1 layer that computes its offsets with ``conv_offset`` (2*G*kh*kw channels).

    mmcv's ``DeformConv2dPack``: same constructor (``deform_groups`` is accepted as an alias
    of ``offset_groups``) and state-dict keys. As in mmcv, ``bias`` defaults to False, so
    mmcv checkpoints load strictly.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        kernel_size: ``kh`` or ``(kh, kw)``.
        stride: distance between sampling windows. Default: 1.
        padding: implicit zero padding on both sides. Default: 0.
        dilation: spacing between kernel points. Default: 1.
        groups: blocked connections from input to output channels. Default: 1.
        offset_groups: number of offset (deformable) groups ``G``: input channels are split
            into ``G`` parts, each with its own offsets. Default: 1.
        bias: whether to add a learnable bias. Default: False.
        deform_groups: mmcv's name for ``offset_groups``.
        device: where the parameters are created.
        dtype: dtype of the parameters.

    Example:
        >>> layer = DeformConv2dPack(16, 32, 3, padding=1, offset_groups=2)
        >>> layer(torch.randn(2, 16, 20, 20)).shape
        torch.Size([2, 32, 20, 20])
    """

    mask_channels = 0

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        offset_groups: int = 1,
        bias: bool = False,
        *,
        deform_groups: int | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            offset_groups,
            bias,
            deform_groups=deform_groups,
            device=device,
            dtype=dtype,
        )

    def offsets_and_mask(self, input: Tensor) -> tuple[Tensor, None]:
        """``(offset, None)``: offset (Tensor[N, 2*G*kh*kw, H_out, W_out]) is ``conv_offset(input)``."""
        return self.conv_offset(input), None


class ModulatedDeformConv2dPack(DeformConvPackBase):
    """DCNv2 layer that computes offsets and mask with ``conv_offset`` (3*G*kh*kw channels).

    mmcv's ``ModulatedDeformConv2dPack``: same constructor (``deform_groups`` is accepted as
    an alias of ``offset_groups``), state-dict keys and channel split: the first 2/3 of
    ``conv_offset``'s channels are the offsets, the last 1/3 the mask logits.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        kernel_size: ``kh`` or ``(kh, kw)``.
        stride: distance between sampling windows. Default: 1.
        padding: implicit zero padding on both sides. Default: 0.
        dilation: spacing between kernel points. Default: 1.
        groups: blocked connections from input to output channels. Default: 1.
        offset_groups: number of offset (deformable) groups ``G``: input channels are split
            into ``G`` parts, each with its own offsets and mask. Default: 1.
        bias: whether to add a learnable bias. Default: True.
        mask_activation: ``"2sigmoid"`` (default) maps the mask logits through
            ``2*sigmoid``, which is 1 at zero, so the layer starts as exactly a regular
            convolution; ``"sigmoid"`` is the convention of the DCNv2 paper and mmcv (0.5 at
            start): use it for checkpoints trained that way.
        deform_groups: mmcv's name for ``offset_groups``.
        device: where the parameters are created.
        dtype: dtype of the parameters.

    Example:
        >>> layer = ModulatedDeformConv2dPack(16, 32, 3, padding=1)
        >>> offset, mask = layer.offsets_and_mask(torch.randn(2, 16, 20, 20))
        >>> offset.shape, mask.shape
        (torch.Size([2, 18, 20, 20]), torch.Size([2, 9, 20, 20]))
    """

    mask_channels = 1

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        offset_groups: int = 1,
        bias: bool = True,
        *,
        mask_activation: MaskActivation = "2sigmoid",
        deform_groups: int | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if mask_activation not in MASK_ACTIVATIONS:
            raise ValueError(f"mask_activation must be one of {MASK_ACTIVATIONS}, got {mask_activation!r}")
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            offset_groups,
            bias,
            deform_groups=deform_groups,
            device=device,
            dtype=dtype,
        )
        self.mask_activation = mask_activation

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, offset_groups: int = 1, **kwargs) -> ModulatedDeformConv2dPack:
        """See :meth:`DeformConvPackBase.from_conv`; the mask activation must be ``"2sigmoid"``.

        Raises:
            ValueError: ``mask_activation="sigmoid"`` is asked for: the layer would start at
                half of ``conv``'s output.
        """
        if kwargs.get("mask_activation", "2sigmoid") != "2sigmoid":
            raise ValueError(
                "from_conv needs mask_activation='2sigmoid' (mask 1 at initialisation) to start equal "
                f"to the convolution, got mask_activation={kwargs['mask_activation']!r}"
            )
        return super().from_conv(conv, offset_groups, **kwargs)

    def offsets_and_mask(self, input: Tensor) -> tuple[Tensor, Tensor]:
        """``(offset, mask)`` computed from ``input`` (see :meth:`DeformConvPackBase.offsets_and_mask`)."""
        out = self.conv_offset(input)
        # mmcv computes o1, o2, logits = out.chunk(3, 1); offset = cat(o1, o2): the same split.
        offset, logits = out.split([2 * out.shape[1] // 3, out.shape[1] // 3], dim=1)
        mask = torch.sigmoid(logits)
        if self.mask_activation == "2sigmoid":
            mask = 2 * mask
        return offset, mask

    def extra_repr(self) -> str:
        text = super().extra_repr()
        if self.mask_activation != "2sigmoid":
            text += f", mask_activation={self.mask_activation!r}"
        return text
