"""Triton kernels for CUDA devices: the ``"triton"`` backend.

:func:`register` is called once when ``deformconv`` is imported. It checks that Triton imports
and that a CUDA device is present *before* importing the modules that define the
``@triton.jit`` kernels, so that importing ``deformconv`` on a machine without a GPU never
touches them (and the tests can set ``TRITON_INTERPRET=1`` before they are first imported).

Kernels (one concept per module):

- :mod:`.sampling`: ``@triton.jit`` helpers shared by every kernel (output-pixel decoding,
  sample positions, bilinear corners, the tile product).
- :mod:`.forward`: implicit-GEMM forward (sampled tiles feed ``tl.dot`` directly, no column
  buffer) and the column-buffer forward (Triton im2col + a cuBLAS matmul).
- :mod:`.data_grad`: gradients of input, offset and mask.
- :mod:`.weight_grad`: gradient of the weight (implicit GEMM over output pixels).
- :mod:`.backward`: the backward op's launcher, including the deterministic mode.
- :mod:`.launch`: block sizes, dtypes and other launch parameters.
"""

from __future__ import annotations

import torch

from deformconv.dispatch import Backend, register_backend

MIN_TRITON_MAJOR = 3


def register() -> None:
    """Registers the ``"triton"`` backend for CUDA tensors.

    Raises:
        RuntimeError: no CUDA device is available (``torch.cuda.is_available()`` is False).
        ImportError: Triton is not installed, or is older than 3.0.
    """
    # Checked first: without a GPU, importing deformconv does not import Triton at all.
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device (torch.cuda.is_available() is False)")
    try:
        import triton
    except ImportError as error:
        raise ImportError(f"triton is not importable ({error}); install deformconv[triton]") from error
    major = int(triton.__version__.split(".")[0])
    if major < MIN_TRITON_MAJOR:
        raise ImportError(f"triton >= {MIN_TRITON_MAJOR}.0 is required, found {triton.__version__}")

    from deformconv.triton_kernels.backward import deform_conv2d_backward
    from deformconv.triton_kernels.forward import deform_conv2d_forward

    register_backend(
        Backend(
            name="triton",
            device_types=("cuda",),
            forward=deform_conv2d_forward,
            backward=deform_conv2d_backward,
            priority=10,
        )
    )
