"""The networks the demo compares: a plain classifier and its twin whose last 3x3 convolutions deform.

Both are a small all-convolutional classifier for ``canvas x canvas`` grey images (the demo's
parameter-matched control is the plain one with a larger ``w``)::

    stem:   conv3x3(1 -> w)    stride 1     BN ReLU
            conv3x3(w -> 2w)   stride 2     BN ReLU
    body:   conv3x3(2w -> 2w)  stride 1     BN ReLU   } x depth; the last ``deformable`` of them
                                                      } are deformable in the deformable model
    head:   global average pooling, linear(2w -> 10)

The body works at half the input resolution with stride 1, so the sampling points of stacked
deformable layers live on one grid (what :mod:`deformconv.demo.sampling` traces). Global average
pooling removes any fixed map from image position to class, so what the network can recognise
is decided by what its convolutions can see: a fixed 3x3 grid in the plain network, learned
sampling locations in the deformable one.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

# Pixels of input per step of the body's grid (the stem's one stride-2 convolution).
BODY_STRIDE = 2
# 3x3 convolutions in the body, the ones that may deform.
BODY_DEPTH = 3


class ConvBlock(nn.Module):
    """3x3 convolution, batch norm, ReLU; ``conv`` may be swapped for a deformable layer."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv: nn.Module = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.bn(self.conv(x)))


class DigitNet(nn.Module):
    """The plain classifier; see the module docstring for the layout.

    Args:
        width: channels of the first convolution (the body has ``2 * width``).
        depth: number of 3x3 convolutions in the body.
    """

    def __init__(self, width: int, depth: int):
        super().__init__()
        wide = 2 * width
        self.stem = nn.Sequential(ConvBlock(1, width, 1), ConvBlock(width, wide, BODY_STRIDE))
        self.body = nn.Sequential(*(ConvBlock(wide, wide, 1) for _ in range(depth)))
        self.head = nn.Linear(wide, 10)

    def forward(self, images: Tensor) -> Tensor:
        """images (Tensor[N, 1, H, W]) -> class scores (Tensor[N, 10])."""
        features = self.body(self.stem(images))
        return self.head(features.mean((2, 3)))

    def deformable_layers(self) -> list[nn.Module]:
        """The body's deformable convolutions, input side first (empty for the plain network)."""
        from deformconv.nn import DeformConvPackBase

        return [block.conv for block in self.body if isinstance(block.conv, DeformConvPackBase)]


def make_deformable(plain: DigitNet, layers: int, modulated: bool) -> DigitNet:
    """A copy of ``plain`` whose last ``layers`` body convolutions are deformable.

    Each deformable layer starts from the plain layer's weight, with its offset convolution at
    zero (offsets 0, mask 1): the copy computes exactly what ``plain`` computes until it trains.

    Args:
        plain: the network to copy (left unchanged).
        layers: how many of the last body convolutions to replace, 1..depth.
        modulated: DCNv2 (a learned mask per sampling point) if True, DCNv1 otherwise.

    Raises:
        ValueError: ``layers`` is not in 1..depth.
    """
    from deformconv.nn import convert_to_deformable

    depth = len(plain.body)
    if not 1 <= layers <= depth:
        raise ValueError(f"deformable layers must be in 1..{depth} (the body's depth), got {layers}")
    names = [f"body.{index}.conv" for index in range(depth - layers, depth)]
    return convert_to_deformable(copy.deepcopy(plain), names, modulated=modulated)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
