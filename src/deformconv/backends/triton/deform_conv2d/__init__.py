"""``deform_conv2d`` kernels of the ``"triton"`` backend (one concept per module).

- :mod:`.sampling`: ``@triton.jit`` helpers shared by every kernel (output-pixel decoding,
  sample positions, bilinear corners, the tile product).
- :mod:`.forward`: implicit-GEMM forward (sampled tiles feed ``tl.dot`` directly, no column
  buffer) and the column-buffer forward (Triton im2col + a cuBLAS matmul).
- :mod:`.depthwise`: the forward of depthwise layers, many contiguous channels per program.
- :mod:`.data_grad`: gradients of input, offset and mask.
- :mod:`.weight_grad`: gradient of the weight (implicit GEMM over output pixels).
- :mod:`.backward`: the backward kernel's launcher, including the deterministic mode.
- :mod:`.configs`: tiles, warps and stages per kernel, dtype and GPU family.
- :mod:`.launch`: dtypes and precision (TF32), argument layouts.
- :mod:`.health`: the shapes the kernel health check compiles (``../HEALTH.md``).
"""

from deformconv.backends.registry import register_kernel
from deformconv.backends.triton.deform_conv2d.backward import deform_conv2d_backward
from deformconv.backends.triton.deform_conv2d.forward import deform_conv2d_forward
from deformconv.ops.deform_conv2d.contract import BACKWARD, FORWARD

register_kernel(FORWARD, backend="triton", device_types=("cuda",))(deform_conv2d_forward)
register_kernel(BACKWARD, backend="triton", device_types=("cuda",))(deform_conv2d_backward)
