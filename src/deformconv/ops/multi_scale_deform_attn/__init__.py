"""``multi_scale_deform_attn`` (Deformable DETR): its public face, validation, geometry and kernel contract."""

from deformconv.ops.multi_scale_deform_attn.op import multi_scale_deform_attn

__all__ = ["multi_scale_deform_attn"]
