"""deformconv: deformable operators for PyTorch (DCNv1-v4, multi-scale deformable attention), fast on CPU and GPU."""

from deformconv import models, nn
from deformconv.backends import backends, load_backends, set_backend, use_backend
from deformconv.nn import (
    DeformConv2d,
    DeformConv2dPack,
    ModulatedDeformConv2d,
    ModulatedDeformConv2dPack,
    convert_to_deformable,
    offset_param_groups,
)
from deformconv.ops import (
    dcnv3,
    dcnv4,
    deform_conv2d,
    get_im2col_budget,
    im2col_budget,
    multi_scale_deform_attn,
    set_im2col_budget,
)

__version__ = "0.1.0"

load_backends()

__all__ = [
    "backends",
    "convert_to_deformable",
    "dcnv3",
    "dcnv4",
    "deform_conv2d",
    "DeformConv2d",
    "DeformConv2dPack",
    "get_im2col_budget",
    "im2col_budget",
    "models",
    "multi_scale_deform_attn",
    "ModulatedDeformConv2d",
    "ModulatedDeformConv2dPack",
    "nn",
    "offset_param_groups",
    "set_backend",
    "set_im2col_budget",
    "use_backend",
]
