"""ONNX export: the op becomes DeformConv (or GridSample + MatMul) and onnxruntime matches PyTorch."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")

from cases import BASE, Case  # noqa: E402
from deformconv.export import export_onnx  # noqa: E402
from deformconv.nn import DeformConv2dPack, ModulatedDeformConv2dPack  # noqa: E402
from deploy_helpers import FunctionalLayer, deformable_resnet18, randomize_offsets  # noqa: E402

TRANSLATIONS = [pytest.param(True, id="DeformConv"), pytest.param(False, id="GridSample")]

LAYER_CASES = {
    "base": BASE,
    "stride-pad-dilation": BASE.vary(stride=(2, 1), padding=(0, 2), dilation=(1, 2)),
    "3x5-groups": BASE.vary(kernel=(3, 5), padding=(1, 2), groups=2, out_channels=6),
    "v1-offset-groups": BASE.vary(offset_groups=2, modulated=False),
    "no-bias-4-offset-groups": BASE.vary(offset_groups=4, bias=False, batch=1),
    "height-1": BASE.vary(size=(1, 5), kernel=(1, 3), padding=(0, 1)),
    "far-offsets": BASE.vary(offset_scale=6.0),
}


class LayerSet(torch.nn.Module):
    """One functional layer per case, so that one export covers every case."""

    def __init__(self, cases: dict[str, Case]) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(FunctionalLayer(case) for case in cases.values())

    def forward(self, inputs: list[tuple[torch.Tensor, ...]]) -> list[torch.Tensor]:
        return [layer(*args) for layer, args in zip(self.layers, inputs)]


def run_onnx(program: torch.onnx.ONNXProgram, *inputs: torch.Tensor) -> list[np.ndarray]:
    session = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {arg.name: tensor.detach().numpy() for arg, tensor in zip(session.get_inputs(), inputs)}
    return session.run(None, feeds)


def layer_inputs(case: Case, seed: int = 1) -> tuple[torch.Tensor, ...]:
    tensors = case.tensors(torch.float32, seed=seed)
    inputs = (tensors["input"], tensors["offset"])
    return inputs + ((tensors["mask"],) if case.modulated else ())


def op_types(program: torch.onnx.ONNXProgram) -> list[str]:
    return [node.op_type for node in program.model_proto.graph.node]


def assert_matches(got: np.ndarray, want: torch.Tensor, message: str = "", tolerance: float = 1e-4) -> None:
    """float32 agreement, relative to the output's scale."""
    scale = max(1.0, want.abs().max().item())
    np.testing.assert_allclose(got, want.detach().numpy(), rtol=tolerance, atol=tolerance * scale, err_msg=message)


@pytest.mark.parametrize("use_deformconv_op", TRANSLATIONS)
def test_single_layers_match_pytorch(use_deformconv_op):
    model = LayerSet(LAYER_CASES).eval()
    inputs = [layer_inputs(case) for case in LAYER_CASES.values()]
    # Offsets that are NaN, infinite or far outside read 0, as in the PyTorch kernels.
    offset = inputs[-1][1]
    offset[0, 0, 0, 0] = float("nan")
    offset[0, 1, 0, 1] = float("inf")
    offset[1, -1, -1, -1] = -float("inf")
    offset[1, 4] = 1e9
    program = export_onnx(model, (inputs,), use_deformconv_op=use_deformconv_op)
    outputs = run_onnx(program, *[tensor for args in inputs for tensor in args])
    assert len(outputs) == len(LAYER_CASES)
    for name, got, want in zip(LAYER_CASES, outputs, model(inputs)):
        assert np.isfinite(got).all(), name
        assert_matches(got, want, name)


def test_deformconv_translation_is_one_standard_node():
    case = BASE.vary(offset_groups=2, groups=2)
    program = export_onnx(FunctionalLayer(case).eval(), layer_inputs(case))
    assert op_types(program) == ["DeformConv"]
    (node,) = program.model_proto.graph.node
    attributes = {a.name: list(a.ints) or a.i for a in node.attribute}
    assert attributes == {
        "dilations": [1, 1],
        "group": 2,
        "kernel_shape": [3, 3],
        "offset_group": 2,
        "pads": [1, 1, 1, 1],
        "strides": [1, 1],
    }
    opset = {o.domain: o.version for o in program.model_proto.opset_import}[""]
    assert opset >= 19


def test_fallback_has_no_deformconv_and_exports_at_opset_16(tmp_path):
    onnx = pytest.importorskip("onnx")
    case = BASE.vary(offset_groups=2)
    model = FunctionalLayer(case).eval()
    inputs = layer_inputs(case)
    path = tmp_path / "layer.onnx"
    program = export_onnx(model, inputs, path, use_deformconv_op=False, opset_version=16)
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    assert {o.domain: o.version for o in proto.opset_import}[""] == 16
    assert "DeformConv" not in op_types(program)
    assert "GridSample" in op_types(program)
    assert_matches(run_onnx(program, *inputs)[0], model(*inputs))


def test_layout_agrees_with_the_onnx_reference_implementation():
    """onnx's own Python DeformConv (independent of onnxruntime) reads our offset/mask layout."""
    reference = pytest.importorskip("onnx.reference")
    case = Case(batch=1, in_channels=2, out_channels=2, size=(4, 5), offset_groups=2, offset_scale=1.0)
    model = FunctionalLayer(case).eval()
    inputs = layer_inputs(case)
    program = export_onnx(model, inputs)
    evaluator = reference.ReferenceEvaluator(program.model_proto)
    names = [value.name for value in program.model_proto.graph.input]
    (got,) = evaluator.run(None, {name: t.numpy() for name, t in zip(names, inputs)})
    assert_matches(got, model(*inputs))


@pytest.mark.parametrize("use_deformconv_op", TRANSLATIONS)
def test_dynamic_batch_and_image_size(use_deformconv_op):
    case = BASE.vary(stride=(2, 2))
    model = FunctionalLayer(case).eval()
    batch, height, width = torch.export.Dim("batch"), torch.export.Dim("height"), torch.export.Dim("width")
    out_h, out_w = torch.export.Dim("out_h"), torch.export.Dim("out_w")
    dynamic_shapes = (
        {0: batch, 2: 2 * height, 3: 2 * width},
        {0: batch, 2: out_h, 3: out_w},
        {0: batch, 2: out_h, 3: out_w},
    )
    # Export at 8x10 (output 4x5), run at 14x6 (output 7x3) with another batch size.
    program = export_onnx(
        model,
        layer_inputs(case.vary(size=(8, 10))),
        use_deformconv_op=use_deformconv_op,
        dynamic_shapes=dynamic_shapes,
    )
    inputs = layer_inputs(case.vary(size=(14, 6), batch=3), seed=5)
    assert_matches(run_onnx(program, *inputs)[0], model(*inputs))


@pytest.mark.parametrize("use_deformconv_op", TRANSLATIONS)
def test_pack_layers_match_pytorch(use_deformconv_op):
    torch.manual_seed(0)
    layers = torch.nn.Sequential(
        DeformConv2dPack(8, 6, 3, stride=2, padding=1, offset_groups=2, bias=True),
        ModulatedDeformConv2dPack(6, 4, 3, padding=2, dilation=2, offset_groups=3),
    )
    layers = randomize_offsets(layers, pixels=2.0).eval()
    input = torch.randn(2, 8, 11, 9)
    program = export_onnx(layers, (input,), use_deformconv_op=use_deformconv_op)
    assert op_types(program).count("DeformConv") == (2 if use_deformconv_op else 0)
    with torch.no_grad():
        assert_matches(run_onnx(program, input)[0], layers(input))


@pytest.mark.parametrize("use_deformconv_op", TRANSLATIONS)
def test_deformable_resnet_matches_pytorch(tmp_path, use_deformconv_op):
    model = deformable_resnet18().eval()
    images = torch.randn(2, 3, 64, 64)
    path = tmp_path / "resnet.onnx"
    # The graph optimiser's passes are covered by the layer tests; skipping them here halves the time.
    program = export_onnx(model, (images,), path, use_deformconv_op=use_deformconv_op, optimize=False)
    deformable_layers = 6  # the first 3x3 of each of the 2 blocks of stages 2, 3 and 4
    assert op_types(program).count("DeformConv") == (deformable_layers if use_deformconv_op else 0)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: images.numpy()})
    with torch.no_grad():
        assert_matches(logits, model(images))


def test_an_opset_pytorch_cannot_reach_is_reported():
    """Global average pooling cannot be converted below opset 18 by PyTorch 2.13's exporter."""
    model = torch.nn.Sequential(DeformConv2dPack(4, 4, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1)).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        program = export_onnx(model, (torch.randn(1, 4, 6, 6),), use_deformconv_op=False, opset_version=16)
    produced = program.model.opset_imports[""]
    reported = [w for w in caught if f"has ONNX opset {produced}, not opset_version=16" in str(w.message)]
    assert produced == 16 or reported


def test_opset_below_19_with_deformconv_is_refused():
    with pytest.raises(ValueError, match="opset_version must be >= 19 for the DeformConv translation"):
        export_onnx(FunctionalLayer(BASE), layer_inputs(BASE), opset_version=18)
