"""Small models with deformable convolutions for the export, autocast and distributed tests."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

import deformconv
from cases import Case
from deformconv.models import resnet18
from deformconv.nn import DeformConvPackBase


class FunctionalLayer(nn.Module):
    """The functional op with its weight and bias as parameters, for one test case."""

    def __init__(self, case: Case, seed: int = 0) -> None:
        super().__init__()
        tensors = case.tensors(torch.float32, seed=seed)
        self.weight = nn.Parameter(tensors["weight"])
        self.bias = nn.Parameter(tensors["bias"]) if "bias" in tensors else None
        self.params = case.params()

    def forward(self, input: Tensor, offset: Tensor, mask: Tensor | None = None) -> Tensor:
        return deformconv.deform_conv2d(input, offset, self.weight, self.bias, mask=mask, **self.params)


def randomize_offsets(model: nn.Module, pixels: float = 1.0, seed: int = 0) -> nn.Module:
    """Gives every ``conv_offset`` random weights, so the offsets are fractional and non-zero.

    Offset convolutions start at zero, which would test nothing but a regular convolution. The
    weights are scaled by ``1/sqrt(fan_in)`` so that offsets are about ``pixels`` for inputs of
    unit scale.
    """
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, DeformConvPackBase):
            weight = module.conv_offset.weight
            fan_in = weight[0].numel()
            noise = torch.randn(weight.shape, generator=generator) * (pixels / math.sqrt(fan_in))
            with torch.no_grad():
                weight.copy_(noise)
                module.conv_offset.bias.copy_(torch.randn(module.conv_offset.bias.shape, generator=generator))
    return model


def deformable_resnet18(num_classes: int = 10, seed: int = 0, **kwargs) -> nn.Module:
    """ResNet-18 with deformable stages 2-4 and random offset convolutions."""
    torch.manual_seed(seed)
    options = {"deform_stages": (False, True, True, True), "num_classes": num_classes, **kwargs}
    return randomize_offsets(resnet18(**options), seed=seed)
