"""``deform_conv2d`` (DCNv1 and DCNv2): its public face, validation, geometry and kernel contract."""

from deformconv.ops.deform_conv2d.op import deform_conv2d

__all__ = ["deform_conv2d"]
