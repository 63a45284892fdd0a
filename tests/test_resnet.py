"""Deformable ResNets: torchvision's names and sizes, placement of deformable layers, detection options."""

from __future__ import annotations

import io
import pickle

import pytest
import torch
from torch import nn

from deformconv.models import (
    BasicBlock,
    Bottleneck,
    ResNet,
    load_torchvision_weights,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
)
from deformconv.nn import DeformConv2dPack, DeformConvPackBase, ModulatedDeformConv2dPack

# Parameter counts that torchvision publishes for its ImageNet weights (``num_params``).
TORCHVISION_PARAMS = {
    resnet18: 11_689_512,
    resnet34: 21_797_672,
    resnet50: 25_557_032,
    resnet101: 44_549_160,
    resnet152: 60_192_808,
}
BLOCKS = {
    resnet18: ("basic", [2, 2, 2, 2]),
    resnet34: ("basic", [3, 4, 6, 3]),
    resnet50: ("bottleneck", [3, 4, 6, 3]),
    resnet101: ("bottleneck", [3, 4, 23, 3]),
    resnet152: ("bottleneck", [3, 8, 36, 3]),
}


def torchvision_state_dict(block: str, layers: list[int], num_classes: int = 1000) -> dict[str, torch.Tensor]:
    """A state dict with the keys (in order) and shapes of torchvision's ResNet, written from its architecture.

    Every tensor is filled with its own index, so a value loaded under the wrong name shows.
    """
    state: dict[str, torch.Tensor] = {}

    def add(key: str, *shape: int) -> None:
        state[key] = torch.full(shape, float(len(state)))

    def conv(name: str, out: int, inp: int, k: int) -> None:
        add(f"{name}.weight", out, inp, k, k)

    def bn(name: str, channels: int) -> None:
        for key in ("weight", "bias", "running_mean", "running_var"):
            add(f"{name}.{key}", channels)
        state[f"{name}.num_batches_tracked"] = torch.tensor(len(state))

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    inplanes = 64
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
        for index in range(blocks):
            prefix = f"layer{stage + 1}.{index}"
            if block == "basic":
                out = planes
                conv(f"{prefix}.conv1", planes, inplanes, 3)
                bn(f"{prefix}.bn1", planes)
                conv(f"{prefix}.conv2", planes, planes, 3)
                bn(f"{prefix}.bn2", planes)
            else:
                out = 4 * planes
                conv(f"{prefix}.conv1", planes, inplanes, 1)
                bn(f"{prefix}.bn1", planes)
                conv(f"{prefix}.conv2", planes, planes, 3)
                bn(f"{prefix}.bn2", planes)
                conv(f"{prefix}.conv3", out, planes, 1)
                bn(f"{prefix}.bn3", out)
            if index == 0 and (stage > 0 or inplanes != out):
                conv(f"{prefix}.downsample.0", out, inplanes, 1)
                bn(f"{prefix}.downsample.1", out)
            inplanes = out
    add("fc.weight", num_classes, inplanes)
    add("fc.bias", num_classes)
    return state


def deformable_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, DeformConvPackBase)]


def tiny(**kwargs) -> ResNet:
    """A one-block-per-stage ResNet: fast, with every code path of the large ones."""
    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10, **kwargs)


@pytest.mark.parametrize(
    "factory, deform_stages, modulated, expected_count",
    [
        (resnet18, (True, True, True, True), True, 8),
        (resnet34, (False, 2, True, 1), False, 2 + 6 + 1),
        (resnet50, (False, True, True, True), True, 4 + 6 + 3),
        (resnet101, (0, 0, 0, 3), True, 3),
        (resnet152, (1, False, 0, True), False, 1 + 3),
    ],
    ids=lambda v: v.__name__ if callable(v) else None,
)
def test_torchvision_weights_load_and_leave_only_offsets_missing(factory, deform_stages, modulated, expected_count):
    model = factory(deform_stages=deform_stages, modulated=modulated)
    names = deformable_names(model)
    assert len(names) == expected_count
    layer_type = ModulatedDeformConv2dPack if modulated else DeformConv2dPack
    assert all(type(model.get_submodule(name)) is layer_type for name in names)
    offset_keys = [f"{name}.conv_offset.{p}" for name in names for p in ("weight", "bias")]
    state = model.state_dict()
    weights = torchvision_state_dict(*BLOCKS[factory])
    # Same sizes, names and order as torchvision, plus the offset convolutions.
    offset_numel = sum(state[key].numel() for key in offset_keys)
    assert sum(p.numel() for p in model.parameters()) - offset_numel == TORCHVISION_PARAMS[factory]
    assert [key for key in state if key not in offset_keys] == list(weights)
    assert all(state[key].shape == weights[key].shape for key in weights)

    result = model.load_state_dict(weights, strict=False)  # the plain PyTorch way
    assert sorted(result.missing_keys) == sorted(offset_keys) and result.unexpected_keys == []
    report = load_torchvision_weights(model, weights)
    assert report.complete and list(report.missing_offset_keys) == sorted(offset_keys)
    assert report.missing_keys == () and report.unexpected_keys == ()
    assert len(report.loaded) == len(weights)
    state = model.state_dict()
    assert all(torch.equal(state[key], value) for key, value in weights.items())


def test_deform_stages_place_layers_exactly_where_asked():
    bottleneck_names = deformable_names(resnet101(deform_stages=(0, 0, 0, 3)))
    assert bottleneck_names == ["layer4.0.conv2", "layer4.1.conv2", "layer4.2.conv2"]
    model = resnet50(deform_stages=(False, 1, 2, True))
    assert deformable_names(model) == [
        "layer2.3.conv2",
        "layer3.4.conv2",
        "layer3.5.conv2",
        "layer4.0.conv2",
        "layer4.1.conv2",
        "layer4.2.conv2",
    ]
    # Basic blocks: the first 3x3, with the block's stride.
    model = resnet18(deform_stages=(False, True, False, 1))
    assert deformable_names(model) == ["layer2.0.conv1", "layer2.1.conv1", "layer4.1.conv1"]
    assert model.layer2[0].conv1.stride == (2, 2) and model.layer2[0].conv1.conv_offset.stride == (2, 2)
    assert deformable_names(resnet18()) == []


def test_deformable_options_reach_every_layer():
    model = ResNet(
        Bottleneck,
        [1, 1, 1, 1],
        deform_stages=(True,) * 4,
        offset_groups=4,
        mask_activation="sigmoid",
        groups=4,
        width_per_group=8,
    )
    layers = [model.get_submodule(name) for name in deformable_names(model)]
    assert len(layers) == 4
    for layer in layers:
        assert layer.offset_groups == 4 and layer.mask_activation == "sigmoid" and layer.groups == 4
        assert layer.bias is None and layer.padding == (1, 1)
        assert torch.count_nonzero(layer.conv_offset.weight) == 0  # not reached by the kaiming init


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"deform_stages": (True, True, True)}, "deform_stages must have 4 entries"),
        ({"deform_stages": (0, 0, 0, 3)}, r"deform_stages\[3\] \(layer4, 1 blocks\) must be .* got 3"),
        ({"deform_stages": (0, -1, 0, 0)}, r"deform_stages\[1\] .* got -1"),
        ({"deform_stages": (0, "yes", 0, 0)}, r"deform_stages\[1\] .* got 'yes'"),
        ({"out_indices": (0, 4)}, r"out_indices must be a non-empty sequence of ints in \[0, 3\]"),
        ({"frozen_stages": 5}, r"frozen_stages must be an int in \[-1, 4\], got 5"),
        ({"replace_stride_with_dilation": (True,)}, "replace_stride_with_dilation must have 3 entries"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny(**kwargs)


@pytest.mark.parametrize("block", [BasicBlock, Bottleneck])
def test_deformable_model_equals_the_plain_one_at_initialisation(block):
    torch.manual_seed(0)
    # Bottleneck: a narrow ResNeXt (groups=2, 16 channels per group), to stay fast.
    width = {"groups": 2, "width_per_group": 16} if block is Bottleneck else {}
    plain = ResNet(block, [1, 1, 1, 1], num_classes=10, **width)
    model = ResNet(block, [1, 1, 1, 1], num_classes=10, deform_stages=(True,) * 4, offset_groups=2, **width)
    assert load_torchvision_weights(model, plain.state_dict()).complete
    x = torch.randn(2, 3, 32, 32)
    for mode in (True, False):  # batch statistics, then running statistics
        plain.train(mode)
        model.train(mode)
        torch.testing.assert_close(model(x), plain(x), rtol=1e-4, atol=1e-4)


def test_gradients_reach_every_offset_conv():
    torch.manual_seed(0)
    model = tiny(deform_stages=(True,) * 4)
    # Two different smooth images at 64x64, so that the sampled values change with position and
    # train-mode batch norm sees a spread of values even in the last stage (2x2 maps): with two
    # equal images, or 1x1 maps, its output and the offset gradient there are exactly zero.
    ramp = torch.linspace(-3, 3, 64)
    images = [
        torch.stack([torch.sin(ramp[:, None] * (c + 1) + phase) * torch.cos(ramp[None, :] - phase) for c in range(3)])
        for phase in (0.0, 1.3)
    ]
    nn.functional.cross_entropy(model(torch.stack(images)), torch.tensor([1, 7])).backward()
    for name in deformable_names(model):
        layer = model.get_submodule(name)
        offset_grad, weight_grad = layer.conv_offset.weight.grad, layer.weight.grad
        assert offset_grad is not None, f"{name}: no offset gradient"
        # Far above rounding residue: a real fraction of the convolution weight's gradient.
        ratio = offset_grad[:18].abs().max() / weight_grad.abs().max()
        assert ratio > 1e-3, f"{name}: offset gradient only {ratio:.1e} of the weight gradient"


def test_detection_features_frozen_stages_and_norm_eval():
    model = resnet50(deform_stages=(False, True, True, True), out_indices=(0, 1, 2, 3), frozen_stages=1, norm_eval=True)
    assert not hasattr(model, "fc") and not hasattr(model, "avgpool")
    model.train()
    features = model(torch.randn(1, 3, 32, 64))
    assert [tuple(f.shape) for f in features] == [
        (1, 256, 8, 16),
        (1, 512, 4, 8),
        (1, 1024, 2, 4),
        (1, 2048, 1, 2),
    ]
    frozen = [model.conv1, model.bn1, model.layer1]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for p in model.layer2.parameters())
    assert all(not m.training for m in frozen[0].modules())
    assert not model.layer1.training and model.layer2.training
    batch_norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert batch_norms and all(not m.training for m in batch_norms)

    model = tiny(out_indices=(3, 1), frozen_stages=0).train()
    c5, c3 = model(torch.randn(2, 3, 32, 32))
    assert c5.shape == (2, 512, 1, 1) and c3.shape == (2, 128, 4, 4)
    assert not model.bn1.training and model.layer1[0].bn1.training


def test_replace_stride_with_dilation_keeps_the_resolution():
    model = ResNet(
        Bottleneck,
        [1, 1, 1, 2],
        deform_stages=(0, 0, 0, True),
        out_indices=(3,),
        replace_stride_with_dilation=(False, False, True),
    )
    (c5,) = model(torch.randn(1, 3, 64, 64))
    assert c5.shape == (1, 2048, 4, 4)
    assert model.layer4[0].conv2.dilation == (1, 1) and model.layer4[1].conv2.dilation == (2, 2)
    assert model.layer4[1].conv2.padding == (2, 2)


def test_load_from_a_file_and_strict_checks(tmp_path):
    model = tiny(deform_stages=(0, 0, 0, 1), out_indices=(3,))
    path = tmp_path / "weights.pth"
    torch.save(tiny().state_dict(), path)
    report = load_torchvision_weights(model, path)
    assert report.unexpected_keys == ("fc.bias", "fc.weight") and report.missing_keys == ()
    assert report.missing_offset_keys == ("layer4.0.conv1.conv_offset.bias", "layer4.0.conv1.conv_offset.weight")
    assert "unexpected: fc.bias, fc.weight" in str(report)
    before = model.conv1.weight.clone()
    with pytest.raises(KeyError, match=r"unexpected: \['fc.bias', 'fc.weight'\]"):
        load_torchvision_weights(model, {k: v * 2 for k, v in tiny().state_dict().items()}, strict=True)
    assert torch.equal(model.conv1.weight, before)  # strict checks before loading anything
    with pytest.raises(TypeError, match="weights must be a state dict"):
        load_torchvision_weights(model, [1, 2])


def test_old_checkpoints_without_num_batches_tracked_load_strictly():
    weights = {k: v for k, v in tiny().state_dict().items() if not k.endswith("num_batches_tracked")}
    model = tiny(deform_stages=(1, 0, 0, 0))
    report = load_torchvision_weights(model, weights, strict=True)
    assert report.complete and len(report.loaded) == len(model.state_dict()) - 2
    weights.pop("layer2.0.bn1.weight")
    with pytest.raises(KeyError, match=r"missing \(besides offset convolutions\): \['layer2.0.bn1.weight'\]"):
        load_torchvision_weights(model, weights, strict=True)


def test_state_dict_round_trip_and_pickling():
    torch.manual_seed(0)
    model = tiny(deform_stages=(True,) * 4).eval()
    for name in deformable_names(model):
        nn.init.normal_(model.get_submodule(name).conv_offset.weight, std=0.01)
    x = torch.randn(1, 3, 32, 32)
    expected = model(x)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = tiny(deform_stages=(True,) * 4).eval()
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    torch.testing.assert_close(fresh(x), expected, rtol=0, atol=0)
    clone = pickle.loads(pickle.dumps(model))
    torch.testing.assert_close(clone(x), expected, rtol=0, atol=0)
    assert "(conv1): ModulatedDeformConv2dPack(\n" in repr(model)


def test_torch_compile_traces_the_whole_model():
    torch.manual_seed(0)
    model = tiny(deform_stages=(True,) * 4, offset_groups=2)
    for name in deformable_names(model):
        nn.init.normal_(model.get_submodule(name).conv_offset.weight, std=0.01)
    x = torch.randn(2, 3, 32, 32)
    expected = model(x)
    expected.sum().backward()
    expected_grad = model.layer1[0].conv1.conv_offset.weight.grad.clone()
    model.zero_grad()
    # fullgraph: any graph break fails; aot_eager runs the fake kernels and autograd without codegen.
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    out.sum().backward()
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(model.layer1[0].conv1.conv_offset.weight.grad, expected_grad)
