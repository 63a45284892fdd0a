"""The operators, one folder each: public function, custom ops, validation, kernel contract."""

from deformconv.ops.budget import get_im2col_budget, im2col_budget, set_im2col_budget
from deformconv.ops.dcnv3 import dcnv3
from deformconv.ops.dcnv4 import dcnv4
from deformconv.ops.deform_conv2d import deform_conv2d
from deformconv.ops.multi_scale_deform_attn import multi_scale_deform_attn

__all__ = [
    "dcnv3",
    "dcnv4",
    "deform_conv2d",
    "get_im2col_budget",
    "im2col_budget",
    "multi_scale_deform_attn",
    "set_im2col_budget",
]
