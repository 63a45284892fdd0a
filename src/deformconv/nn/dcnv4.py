"""``DCNv4``: FlashInternImage's deformable convolution layer, with the official constructor and state-dict keys.

DCNv4 (`arXiv:2401.06197 <https://arxiv.org/abs/2401.06197>`_) simplifies DCNv3's layer: one
linear layer predicts the offsets and weights together (packed per group, padded to a multiple
of 8, no softmax), optionally after a depthwise convolution, and the value and output
projections can be left out (``without_pointwise``). Tokens come in as ``[N, H*W, C]``.

State-dict keys (as in the official module, so FlashInternImage checkpoints load):
``offset_mask.*``, ``offset_mask_dw.*`` (with ``dw_kernel_size``), ``value_proj.*`` and
``output_proj.*`` (unless ``without_pointwise``; ``output_proj.bias`` only with ``output_bias``),
and ``center_feature_scale_proj_{weight,bias}`` with ``center_feature_scale``.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from deformconv.nn.dcnv3 import add_center_feature_scale, init_projection
from deformconv.ops.dcnv4 import dcnv4
from deformconv.ops.dcnv4.layout import packed_width

#: The official layer's constraint on the channels per group.
GROUP_CHANNELS_MULTIPLE = 16


class DCNv4(nn.Module):
    """FlashInternImage's DCNv4 layer.

    Args:
        channels: C, input and output channels.
        kernel_size, stride, pad, dilation: of the sampling kernel. Defaults: 3, 1, 1, 1.
        group: G; ``channels / group`` must be a multiple of 16 (as in the official layer).
        offset_scale: factor on the taps and offsets. Default: 1.
        dw_kernel_size: if set, a depthwise conv of this size runs before ``offset_mask``.
        center_feature_scale: blend the output with the projected value (learned, per group).
        remove_center: leave out the kernel's centre point (odd ``kernel_size``).
        output_bias: whether ``output_proj`` has a bias. Default: True.
        without_pointwise: no ``value_proj`` / ``output_proj``. Default: False.
        **kwargs: accepted and ignored, as by the official layer.

    Shape:
        input (Tensor[N, H*W, C]) with ``shape=(H, W)`` (default: a square image) ->
        Tensor[N, H_out*W_out, C].

    Raises:
        ValueError: ``channels`` is not divisible by ``group`` or ``channels / group`` is not a
            multiple of 16.

    Example:
        >>> layer = DCNv4(64, group=4)
        >>> layer(torch.randn(2, 14 * 14, 64), shape=(14, 14)).shape
        torch.Size([2, 196, 64])
    """

    def __init__(
        self,
        channels: int = 64,
        kernel_size: int = 3,
        stride: int = 1,
        pad: int = 1,
        dilation: int = 1,
        group: int = 4,
        offset_scale: float = 1.0,
        dw_kernel_size: int | None = None,
        center_feature_scale: bool = False,
        remove_center: bool = False,
        output_bias: bool = True,
        without_pointwise: bool = False,
        **kwargs,
    ) -> None:
        super().__init__()
        if channels % group != 0:
            raise ValueError(f"channels must be divisible by group, got {channels} and {group}")
        if (channels // group) % GROUP_CHANNELS_MULTIPLE != 0:
            raise ValueError(
                f"channels / group must be a multiple of {GROUP_CHANNELS_MULTIPLE} for DCNv4, got "
                f"{channels} / {group} = {channels / group:g}"
            )
        self.channels, self.kernel_size, self.stride, self.pad, self.dilation = (
            channels, kernel_size, stride, pad, dilation,
        )  # fmt: skip
        self.group, self.group_channels = group, channels // group
        self.offset_scale, self.dw_kernel_size = offset_scale, dw_kernel_size
        self.center_feature_scale = center_feature_scale
        self.remove_center = int(remove_center)
        self.without_pointwise = without_pointwise
        self.K = group * (kernel_size * kernel_size - self.remove_center)

        if dw_kernel_size is not None:
            self.offset_mask_dw = nn.Conv2d(
                channels, channels, dw_kernel_size, padding=(dw_kernel_size - 1) // 2, groups=channels
            )
        self.offset_mask = nn.Linear(channels, packed_width(group, self.K // group))
        if not without_pointwise:
            self.value_proj = nn.Linear(channels, channels)
            self.output_proj = nn.Linear(channels, channels, bias=output_bias)
        self.reset_parameters()
        if center_feature_scale:
            add_center_feature_scale(self, group, channels)

    def reset_parameters(self) -> None:
        """Offsets and weights start at 0; projections Xavier-uniform with zero bias."""
        nn.init.zeros_(self.offset_mask.weight)
        nn.init.zeros_(self.offset_mask.bias)
        if not self.without_pointwise:
            init_projection(self.value_proj)
            init_projection(self.output_proj)

    def forward(self, input: Tensor, shape: tuple[int, int] | None = None) -> Tensor:
        """input (Tensor[N, H*W, C]), ``shape`` = (H, W) -> Tensor[N, H_out*W_out, C]."""
        n, length, channels = input.shape
        height, width = shape if shape is not None else (math.isqrt(length), math.isqrt(length))
        x = input if self.without_pointwise else self.value_proj(input)
        x = x.reshape(n, height, width, -1)
        offset_input = input
        if self.dw_kernel_size is not None:
            image = input.view(n, height, width, channels).permute(0, 3, 1, 2)
            offset_input = self.offset_mask_dw(image).permute(0, 2, 3, 1).reshape(n, length, channels)
        offset_mask = self.offset_mask(offset_input).reshape(n, height, width, -1)
        x_proj = x
        k, s, p, d = self.kernel_size, self.stride, self.pad, self.dilation
        x = dcnv4(
            x, offset_mask.to(x.dtype), k, k, s, s, p, p, d, d,
            self.group, self.group_channels, self.offset_scale, bool(self.remove_center),
        )  # fmt: skip
        if self.center_feature_scale:
            weight, bias = self.center_feature_scale_proj_weight, self.center_feature_scale_proj_bias
            x = self.center_feature_scale_module(x, weight, bias, x, x_proj)
        x = x.reshape(n, -1, x.shape[-1])
        return x if self.without_pointwise else self.output_proj(x)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, kernel_size={self.kernel_size}, stride={self.stride}, pad={self.pad}, "
            f"dilation={self.dilation}, group={self.group}, offset_scale={self.offset_scale}, "
            f"remove_center={bool(self.remove_center)}, without_pointwise={self.without_pointwise}"
        )
