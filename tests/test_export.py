"""torch.export of models with deformable convolutions: the op stays one node and the program runs."""

from __future__ import annotations

import torch

from deformconv.nn import ModulatedDeformConv2dPack
from deploy_helpers import deformable_resnet18, randomize_offsets

OP = torch.ops.deformconv.deform_conv2d.default


def op_nodes(program: torch.export.ExportedProgram) -> list[torch.fx.Node]:
    return [node for node in program.graph.nodes if node.target is OP]


def test_deformable_resnet_exports_and_matches(tmp_path):
    model = deformable_resnet18().eval()
    images = torch.randn(2, 3, 64, 64)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (images,), dynamic_shapes=({0: batch},))
    # One node per deformable layer (first 3x3 of both blocks of stages 2-4), also after
    # decomposition to core ATen, which is what ONNX export and AOT compilers consume.
    assert len(op_nodes(program)) == 6
    assert len(op_nodes(program.run_decompositions())) == 6

    path = tmp_path / "resnet.pt2"
    torch.export.save(program, path)
    loaded = torch.export.load(path)
    with torch.no_grad():
        for batch_of in (images, torch.randn(3, 3, 64, 64)):
            torch.testing.assert_close(loaded.module()(batch_of), model(batch_of))


def test_pack_layer_with_dynamic_image_size():
    layer = randomize_offsets(ModulatedDeformConv2dPack(4, 6, 3, stride=2, padding=1, offset_groups=2)).eval()
    height, width = torch.export.Dim("height", min=4, max=128), torch.export.Dim("width", min=4, max=128)
    program = torch.export.export(layer, (torch.randn(1, 4, 16, 12),), dynamic_shapes=({2: height, 3: width},))
    (node,) = op_nodes(program)
    assert node.meta["val"].shape[0] == 1 and node.meta["val"].shape[1] == 6
    input = torch.randn(1, 4, 21, 9)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(input), layer(input))
