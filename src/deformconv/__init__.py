"""deformconv: deformable convolution (DCNv1, DCNv2) for PyTorch, fast on CPU and GPU."""

from deformconv.dispatch import backends, set_backend, use_backend
from deformconv.loading import load_backends
from deformconv.ops import deform_conv2d, get_im2col_budget, im2col_budget, set_im2col_budget

__version__ = "0.1.0"

load_backends()

__all__ = [
    "backends",
    "deform_conv2d",
    "get_im2col_budget",
    "im2col_budget",
    "set_backend",
    "set_im2col_budget",
    "use_backend",
]
