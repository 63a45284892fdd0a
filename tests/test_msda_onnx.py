"""ONNX export of multi-scale deformable attention (GridSample per level) checked in onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")

import deformconv  # noqa: E402
from deformconv.export import export_onnx  # noqa: E402
from deformconv.nn import MultiScaleDeformableAttention  # noqa: E402

SHAPES = torch.tensor([[6, 7], [3, 4], [1, 2]])
STARTS = torch.tensor([0, 42, 54])
S = 56


class Op(torch.nn.Module):
    def forward(self, value, spatial_shapes, level_start_index, locations, weights):
        return deformconv.multi_scale_deform_attn(value, spatial_shapes, level_start_index, locations, weights)


def run_onnx(program, *inputs):
    session = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {arg.name: tensor.numpy() for arg, tensor in zip(session.get_inputs(), inputs)}
    return session.run(None, feeds)[0]


def assert_matches(got: np.ndarray, want: torch.Tensor) -> None:
    scale = max(1.0, want.abs().max().item())
    error = np.abs(got.astype(np.float64) - want.detach().double().numpy()).max()
    assert error <= 1e-5 * scale, f"max error {error:.3g} (scale {scale:.3g})"


def op_inputs(queries: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    value = torch.randn(2, S, 2, 5, generator=g)
    locations = torch.rand(2, queries, 2, 3, 2, 2, generator=g) * 1.4 - 0.2
    weights = torch.rand(2, queries, 2, 3, 2, generator=g)
    return value, SHAPES, STARTS, locations, weights


def test_op_exports_to_gridsample_with_dynamic_queries():
    queries = torch.export.Dim("queries", min=1, max=1000)
    dynamic = ({}, {}, {}, {1: queries}, {1: queries})
    program = export_onnx(Op().eval(), op_inputs(5), dynamic_shapes=dynamic)
    kinds = {node.op_type for node in program.model_proto.graph.node}
    assert "GridSample" in kinds and not any("deform" in kind.lower() for kind in kinds)
    for count in (5, 9):
        inputs = op_inputs(count, seed=count)
        inputs[3][0, 0, 0, 0, 0] = float("nan")
        inputs[3][1, 1, 1, 1, 1, 0] = float("inf")
        assert_matches(run_onnx(program, *inputs), Op()(*inputs))


def test_layer_exports_with_dynamic_queries():
    torch.manual_seed(0)
    layer = MultiScaleDeformableAttention(embed_dims=16, num_heads=2, num_levels=3, num_points=2, batch_first=True)
    with torch.no_grad():
        layer.sampling_offsets.weight.normal_(0, 0.5)
        layer.attention_weights.weight.normal_(0, 0.5)
    layer.eval()

    class Decoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = layer

        def forward(self, query, value, reference_points, spatial_shapes, level_start_index):
            return self.attention(
                query,
                value=value,
                reference_points=reference_points,
                spatial_shapes=spatial_shapes,
                level_start_index=level_start_index,
            )

    def inputs(queries, boxes=False):
        g = torch.Generator().manual_seed(queries)
        reference = torch.rand(2, queries, 3, 4 if boxes else 2, generator=g)
        return torch.randn(2, queries, 16, generator=g), torch.randn(2, S, 16, generator=g), reference, SHAPES, STARTS

    queries = torch.export.Dim("queries", min=1, max=1000)
    dynamic = ({1: queries}, {}, {1: queries}, {}, {})
    model = Decoder().eval()
    for boxes in (False, True):
        program = export_onnx(model, inputs(4, boxes), dynamic_shapes=dynamic)
        for count in (4, 11):
            example = inputs(count, boxes)
            assert_matches(run_onnx(program, *example), model(*example))
