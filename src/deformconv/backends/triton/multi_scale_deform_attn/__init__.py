"""``multi_scale_deform_attn`` kernels of the ``"triton"`` backend.

- :mod:`.kernels`: the ``@triton.jit`` kernels (forward, backward with atomics, deterministic
  value gradient).
- :mod:`.configs`: their launch configurations per kernel, dtype and GPU family.
- :mod:`.launch`: their launchers, the backend's kernels for the op.
- :mod:`.health`: their cases of the kernel health check (:mod:`deformconv.backends.triton.health`).
"""

from deformconv.backends.registry import register_kernel
from deformconv.backends.triton.multi_scale_deform_attn.launch import backward, forward
from deformconv.ops.multi_scale_deform_attn.contract import BACKWARD, FORWARD

register_kernel(FORWARD, backend="triton", device_types=("cuda",))(forward)
register_kernel(BACKWARD, backend="triton", device_types=("cuda",))(backward)
