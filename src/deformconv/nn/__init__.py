"""Deformable convolution layers, model conversion and optimizer helpers."""

from deformconv.nn.convert import convert_to_deformable, is_3x3
from deformconv.nn.dcnv3 import DCNv3
from deformconv.nn.dcnv4 import DCNv4
from deformconv.nn.deform_conv import DeformConv2d, ModulatedDeformConv2d
from deformconv.nn.ms_deform_attn import MultiScaleDeformableAttention as MultiScaleDeformableAttention
from deformconv.nn.pack import DeformConv2dPack, DeformConvPackBase, ModulatedDeformConv2dPack
from deformconv.nn.param_groups import offset_param_groups, offset_parameters

__all__ = [
    "DCNv3",
    "DCNv4",
    "DeformConv2d",
    "DeformConv2dPack",
    "DeformConvPackBase",
    "ModulatedDeformConv2d",
    "ModulatedDeformConv2dPack",
    "convert_to_deformable",
    "is_3x3",
    "offset_param_groups",
    "offset_parameters",
]
