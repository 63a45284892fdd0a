"""``DCNv3``: InternImage's deformable convolution layer, with the official constructor and state-dict keys.

InternImage (`arXiv:2211.05778 <https://arxiv.org/abs/2211.05778>`_) replaces the 3x3 convolution
of its blocks by this layer: a linear input projection, offsets and softmaxed weights predicted
from a depthwise convolution + norm + activation branch, :func:`deformconv.dcnv3` (every group of
channels shares its sample points and weights), optionally a learned blend with the projected
input at the kernel centre (``center_feature_scale``), and a linear output projection.

State-dict keys (as in the official module, so InternImage checkpoints load):
``dw_conv.0.{weight,bias}`` (depthwise conv), ``dw_conv.1.1.{weight,bias}`` (LayerNorm) or
``dw_conv.1.0.*`` (BatchNorm), ``offset.*``, ``mask.*``, ``input_proj.*``, ``output_proj.*`` and,
with ``center_feature_scale``, ``center_feature_scale_proj_{weight,bias}``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deformconv.ops.dcnv3 import dcnv3


class ToChannelsLast(nn.Module):
    """[N, C, H, W] -> [N, H, W, C] (a view)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.permute(0, 2, 3, 1)


def norm_layer_channels_last(channels: int, norm_layer: str) -> nn.Sequential:
    """The official ``build_norm_layer(channels, norm_layer, 'channels_first', 'channels_last')``.

    ``"LN"``: ``[ToChannelsLast, LayerNorm(eps=1e-6)]``; ``"BN"``: ``[BatchNorm2d, ToChannelsLast]``
    (the positions give the official state-dict keys).

    Raises:
        ValueError: another ``norm_layer``.
    """
    if norm_layer == "LN":
        return nn.Sequential(ToChannelsLast(), nn.LayerNorm(channels, eps=1e-6))
    if norm_layer == "BN":
        return nn.Sequential(nn.BatchNorm2d(channels), ToChannelsLast())
    raise ValueError(f"norm_layer must be 'LN' or 'BN', got {norm_layer!r}")


def activation(act_layer: str) -> nn.Module:
    """``"GELU"``, ``"ReLU"`` or ``"SiLU"``.

    Raises:
        ValueError: another ``act_layer``.
    """
    layers = {"GELU": nn.GELU, "ReLU": nn.ReLU, "SiLU": nn.SiLU}
    if act_layer not in layers:
        raise ValueError(f"act_layer must be one of {sorted(layers)}, got {act_layer!r}")
    return layers[act_layer]()


class CenterFeatureScale(nn.Module):
    """Sigmoid of a linear map per group, blending a layer's output with its projected input.

    Holds no parameters itself: the layers own ``center_feature_scale_proj_{weight,bias}`` under the
    official names and pass them in.
    """

    def forward(self, query: Tensor, weight: Tensor, bias: Tensor, output: Tensor, projected: Tensor) -> Tensor:
        """``output * (1 - s) + projected * s`` with ``s = sigmoid(query @ weight.T + bias)`` per group."""
        scale = F.linear(query, weight, bias).sigmoid()
        scale = scale.repeat_interleave(output.shape[-1] // weight.shape[0], dim=-1)
        return output * (1 - scale) + projected * scale


def add_center_feature_scale(module: nn.Module, group: int, channels: int) -> None:
    """Registers the official ``center_feature_scale_proj_{weight,bias}`` (zeros) and the blend module."""
    module.center_feature_scale_proj_weight = nn.Parameter(torch.zeros(group, channels))
    module.center_feature_scale_proj_bias = nn.Parameter(torch.zeros(group))
    module.center_feature_scale_module = CenterFeatureScale()


def init_projection(linear: nn.Linear) -> None:
    """The official initialisation of the input and output projections: Xavier-uniform weight, zero bias."""
    nn.init.xavier_uniform_(linear.weight)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


class DCNv3(nn.Module):
    """InternImage's DCNv3 layer (channels-last in and out).

    Args:
        channels: C, input and output channels.
        kernel_size: sampling kernel size. Default: 3.
        dw_kernel_size: kernel of the depthwise conv of the offset branch; None = ``kernel_size``.
        stride, pad, dilation: of the sampling kernel. Defaults: 1, 1, 1.
        group: G, groups of channels with their own sample points; ``C`` must be divisible by it.
        offset_scale: factor on the taps and offsets. Default: 1.
        act_layer: ``"GELU"`` (default), ``"ReLU"`` or ``"SiLU"``, of the offset branch.
        norm_layer: ``"LN"`` (default) or ``"BN"``, of the offset branch.
        center_feature_scale: blend the output with the projected input (learned, per group).
        remove_center: leave out the kernel's centre point (odd ``kernel_size``).

    Shape:
        input (Tensor[N, H, W, C]) -> Tensor[N, H_out, W_out, C] (the offset branch keeps H x W, so
        the official layer is used with sizes that keep H_out x W_out = H x W).

    Raises:
        ValueError: ``channels`` is not divisible by ``group``, ``remove_center`` with an even
            kernel, or an unknown norm or activation.

    Example:
        >>> layer = DCNv3(64, group=4)
        >>> layer(torch.randn(2, 14, 14, 64)).shape
        torch.Size([2, 14, 14, 64])
    """

    def __init__(
        self,
        channels: int = 64,
        kernel_size: int = 3,
        dw_kernel_size: int | None = None,
        stride: int = 1,
        pad: int = 1,
        dilation: int = 1,
        group: int = 4,
        offset_scale: float = 1.0,
        act_layer: str = "GELU",
        norm_layer: str = "LN",
        center_feature_scale: bool = False,
        remove_center: bool = False,
    ) -> None:
        super().__init__()
        if channels % group != 0:
            raise ValueError(f"channels must be divisible by group, got {channels} and {group}")
        if remove_center and kernel_size % 2 == 0:
            raise ValueError(f"remove_center needs an odd kernel_size, got {kernel_size}")
        dw_kernel_size = kernel_size if dw_kernel_size is None else dw_kernel_size
        self.channels, self.kernel_size, self.dw_kernel_size = channels, kernel_size, dw_kernel_size
        self.stride, self.pad, self.dilation = stride, pad, dilation
        self.group, self.group_channels = group, channels // group
        self.offset_scale = offset_scale
        self.center_feature_scale = center_feature_scale
        self.remove_center = int(remove_center)
        points = kernel_size * kernel_size - self.remove_center

        self.dw_conv = nn.Sequential(
            nn.Conv2d(channels, channels, dw_kernel_size, padding=(dw_kernel_size - 1) // 2, groups=channels),
            norm_layer_channels_last(channels, norm_layer),
            activation(act_layer),
        )
        self.offset = nn.Linear(channels, group * points * 2)
        self.mask = nn.Linear(channels, group * points)
        self.input_proj = nn.Linear(channels, channels)
        self.output_proj = nn.Linear(channels, channels)
        self.reset_parameters()
        if center_feature_scale:
            add_center_feature_scale(self, group, channels)

    def reset_parameters(self) -> None:
        """Offsets and weights start at 0 (uniform weights after the softmax); projections Xavier-uniform."""
        for linear in (self.offset, self.mask):
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)
        init_projection(self.input_proj)
        init_projection(self.output_proj)

    def forward(self, input: Tensor) -> Tensor:
        """input (Tensor[N, H, W, C]) -> Tensor[N, H_out, W_out, C]."""
        n, height, width, _ = input.shape
        x = self.input_proj(input)
        x_proj = x
        x1 = self.dw_conv(input.permute(0, 3, 1, 2))
        offset = self.offset(x1)
        mask = self.mask(x1).reshape(n, height, width, self.group, -1).softmax(-1)
        mask = mask.reshape(n, height, width, -1).to(x.dtype)
        k, s, p, d = self.kernel_size, self.stride, self.pad, self.dilation
        x = dcnv3(
            x, offset.to(x.dtype), mask, k, k, s, s, p, p, d, d,
            self.group, self.group_channels, self.offset_scale, bool(self.remove_center),
        )  # fmt: skip
        if self.center_feature_scale:
            weight, bias = self.center_feature_scale_proj_weight, self.center_feature_scale_proj_bias
            x = self.center_feature_scale_module(x1, weight, bias, x, x_proj)
        return self.output_proj(x)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, kernel_size={self.kernel_size}, stride={self.stride}, pad={self.pad}, "
            f"dilation={self.dilation}, group={self.group}, offset_scale={self.offset_scale}, "
            f"remove_center={bool(self.remove_center)}"
        )
