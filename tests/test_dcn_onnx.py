"""ONNX export of DCNv3 and DCNv4 (GridSample decomposition): onnxruntime matches PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")

from dcn_helpers import CASES, DCNCase, make_inputs, pack  # noqa: E402
from deformconv import dcnv3, dcnv4  # noqa: E402
from deformconv.export import export_onnx  # noqa: E402
from deformconv.nn import DCNv3, DCNv4  # noqa: E402


class Functional(torch.nn.Module):
    """dcnv3 (or dcnv4 with ``packed``) of one case, for export."""

    def __init__(self, case: DCNCase, packed: bool = False) -> None:
        super().__init__()
        self.case, self.packed = case, packed

    def forward(self, input, *offsets):
        function = dcnv4 if self.packed else dcnv3
        return function(input, *offsets, *self.case.args())


def run_onnx(program, *inputs: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {i.name: t.detach().numpy() for i, t in zip(session.get_inputs(), inputs)}
    return session.run(None, feeds)[0]


def assert_matches(got: np.ndarray, want: torch.Tensor, tolerance: float = 1e-4) -> None:
    want = want.detach()
    scale = max(1.0, want.abs().max().item())
    assert np.abs(got - want.numpy()).max() <= tolerance * scale


class Many(torch.nn.Module):
    """dcnv3 of several cases, so that one export covers them all: forward takes 3 tensors per case."""

    def __init__(self, cases: list[DCNCase]) -> None:
        super().__init__()
        self.cases = cases

    def forward(self, *tensors):
        return [dcnv3(*tensors[3 * i : 3 * i + 3], *case.args()) for i, case in enumerate(self.cases)]


def test_dcnv3_op_matches_pytorch():
    cases = [CASES[name] for name in ("3x3", "3x5-pad2", "stride2", "dilation2", "scale", "remove-center")]
    tensors = [t.float() for case in cases for t in make_inputs(case, spread=3.0)]
    tensors[1][0, 0, 0, 0] = float("nan")  # NaN offsets read 0 in onnxruntime too
    model = Many(cases).eval()
    program = export_onnx(model, tuple(tensors), use_deformconv_op=False, opset_version=18)
    assert "GridSample" in [node.op_type for node in program.model_proto.graph.node]
    session = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {i.name: t.numpy() for i, t in zip(session.get_inputs(), tensors)})
    for got, want in zip(outputs, model(*tensors)):
        assert_matches(got, want)


def test_dcnv4_op_matches_pytorch():
    case = DCNCase(group=2, group_channels=8, remove_center=True)
    input, offset, mask = (t.float() for t in make_inputs(case))
    offset_mask = pack(offset, mask, case.group, fill=5.0)
    model = Functional(case, packed=True).eval()
    program = export_onnx(model, (input, offset_mask))
    assert_matches(run_onnx(program, input, offset_mask), model(input, offset_mask))


def test_layers_with_dynamic_batch_and_size():
    torch.manual_seed(0)

    class Both(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.v3, self.v4 = DCNv3(32, group=2), DCNv4(32, group=2, dw_kernel_size=3)
            for layer in (self.v3.offset, self.v3.mask, self.v4.offset_mask):
                torch.nn.init.normal_(layer.weight, std=0.3)

        def forward(self, x):
            n, h, w, c = x.shape
            y = self.v3(x)
            return self.v4(y.reshape(n, h * w, c), shape=(h, w))

    model = Both().eval()
    x = torch.randn(2, 6, 5, 32)
    batch, height, width = torch.export.Dim("batch"), torch.export.Dim("height"), torch.export.Dim("width")
    program = export_onnx(model, (x,), dynamic_shapes={"x": {0: batch, 1: height, 2: width}})
    other = torch.randn(3, 7, 4, 32)
    assert_matches(run_onnx(program, other), model(other))
