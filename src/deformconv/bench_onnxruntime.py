"""onnxruntime's ``DeformConv`` as a benchmark peer of ``deformconv bench --against onnxruntime``.

A single ``deform_conv2d`` layer (weight as a constant, no bias) is exported with
:func:`deformconv.export.export_onnx` to the standard ONNX ``DeformConv`` operator
(https://onnx.ai/onnx/operators/onnx__DeformConv.html) and run in an onnxruntime CPU session with
as many intra-op threads as PyTorch uses, so that both run on the same cores. Forward only:
onnxruntime does not train.

Example:
    >>> peer = onnxruntime_peer(input, weight, offset, mask, stride=1, padding=1)
    >>> if isinstance(peer, OnnxRuntimePeer):
    ...     output = peer()  # numpy array [N, C_out, H_out, W_out]
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

import deformconv

_NUMPY_DTYPES = (torch.float16, torch.float32, torch.float64)


class _Layer(nn.Module):
    """``deform_conv2d`` with a fixed weight, the graph exported for onnxruntime."""

    def __init__(self, weight: Tensor, stride: int, padding: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        self.stride, self.padding = stride, padding

    def forward(self, input: Tensor, offset: Tensor, mask: Tensor) -> Tensor:
        return deformconv.deform_conv2d(input, offset, self.weight, stride=self.stride, padding=self.padding, mask=mask)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Hides the exporter's progress (stdout) and its notes on other libraries' ops (log warnings)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        logger.setLevel(level)


@dataclass
class OnnxRuntimePeer:
    """A ready onnxruntime session and its inputs; calling it runs one forward."""

    run: Callable[[], list[np.ndarray]]
    version: str
    threads: int

    def __call__(self) -> np.ndarray:
        return self.run()[0]


def onnxruntime_peer(
    input: Tensor, weight: Tensor, offset: Tensor, mask: Tensor, stride: int, padding: int
) -> OnnxRuntimePeer | str:
    """onnxruntime's ``DeformConv`` for the given tensors, or the reason it cannot run.

    Args:
        input (Tensor[N, C_in, H, W]): CPU input.
        weight (Tensor[C_out, C_in/groups, kh, kw]): weight, stored in the model as a constant.
        offset (Tensor[N, 2*G*kh*kw, H_out, W_out]): offsets.
        mask (Tensor[N, G*kh*kw, H_out, W_out]): mask.
        stride, padding: as in :func:`deformconv.deform_conv2d` (both dimensions alike).

    Returns:
        The peer, or a one-line note saying why it was skipped (onnxruntime or the ONNX exporter
        missing, a CUDA tensor, a dtype onnxruntime's ``DeformConv`` does not run).
    """
    try:
        import onnxruntime
    except ImportError as error:
        return f"onnxruntime does not import ({error})"
    if input.device.type != "cpu":
        return f"onnxruntime's CPU DeformConv is compared on CPU tensors only, got {input.device}"
    if input.dtype not in _NUMPY_DTYPES:
        return f"onnxruntime is fed numpy arrays, and numpy has no {input.dtype}"
    try:
        from deformconv.export import export_onnx
    except ImportError as error:
        return f"the ONNX exporter needs deformconv[onnx] ({error})"
    tensors = [t.detach() for t in (input, offset, mask)]
    with _quiet_exporter():
        program = export_onnx(_Layer(weight, stride, padding).eval(), tuple(tensors))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    # onnxruntime's idle threads spin by default, taking the cores from the implementations timed
    # between its runs: without spinning every implementation gets the machine to itself.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.inter_op_num_threads = 1
    try:
        session = onnxruntime.InferenceSession(
            program.model_proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
    except Exception as error:  # e.g. no DeformConv kernel for this dtype in this onnxruntime
        return f"onnxruntime {onnxruntime.__version__} cannot run DeformConv in {input.dtype}: {error}".splitlines()[0]
    feeds = {arg.name: t.numpy() for arg, t in zip(session.get_inputs(), tensors)}
    return OnnxRuntimePeer(lambda: session.run(None, feeds), onnxruntime.__version__, options.intra_op_num_threads)
