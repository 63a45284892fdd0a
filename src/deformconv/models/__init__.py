"""Backbones with deformable convolutions that load torchvision weights."""

from deformconv.models.resnet import (
    BasicBlock,
    Bottleneck,
    DeformOptions,
    ResNet,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
)
from deformconv.models.weights import LoadReport, load_torchvision_weights, offset_keys

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "DeformOptions",
    "LoadReport",
    "ResNet",
    "load_torchvision_weights",
    "offset_keys",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
]
