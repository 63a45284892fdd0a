"""convert_to_deformable: which convolutions it replaces, and that the model computes the same at first."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deformconv.models import load_torchvision_weights, resnet18
from deformconv.nn import (
    DeformConv2dPack,
    DeformConvPackBase,
    ModulatedDeformConv2dPack,
    convert_to_deformable,
)


class Net(nn.Module):
    """A small user model: nested containers, a shared conv, 1x1, 5x5, strided and grouped 3x3 convs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 5, padding=2), nn.BatchNorm2d(8), nn.ReLU())
        self.body = nn.ModuleDict(
            {
                "down": nn.Conv2d(8, 16, 3, stride=2, padding=1),
                "grouped": nn.Conv2d(16, 16, 3, padding=1, groups=4, bias=False),
                "point": nn.Conv2d(16, 16, 1),
            }
        )
        self.shared = nn.Conv2d(16, 16, 3, padding=1)
        self.blocks = nn.ModuleList([self.shared, nn.ReLU(), self.shared])
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for name in ("down", "grouped", "point"):
            x = torch.relu(self.body[name](x))
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean((2, 3)))


def deformable_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, DeformConvPackBase)]


def test_default_converts_every_3x3_and_keeps_the_function():
    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(2, 3, 12, 12)
    expected = model(x)
    weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    converted = convert_to_deformable(model)
    assert converted is model
    assert deformable_names(model) == ["body.down", "body.grouped", "shared"]
    assert isinstance(model.blocks[0], ModulatedDeformConv2dPack)
    assert model.blocks[0] is model.blocks[2] is model.shared  # still one shared layer
    assert isinstance(model.body["point"], nn.Conv2d) and isinstance(model.stem[0], nn.Conv2d)
    state = model.state_dict()
    assert all(torch.equal(state[name], tensor) for name, tensor in weights.items())
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


def test_names_and_predicates_choose_the_layers():
    model = convert_to_deformable(Net(), ["body.grouped"], modulated=False)
    assert deformable_names(model) == ["body.grouped"]
    assert isinstance(model.body["grouped"], DeformConv2dPack)

    model = convert_to_deformable(Net(), lambda name, conv: conv.stride == (2, 2), offset_groups=2)
    assert deformable_names(model) == ["body.down"]
    assert model.body["down"].offset_groups == 2

    model = convert_to_deformable(Net(), "stem.0")  # a 5x5 conv, asked for by name
    assert deformable_names(model) == ["stem.0"]
    assert model.stem[0].kernel_size == (5, 5) and model.stem[0].padding == (2, 2)


def test_converting_twice_leaves_offset_convs_alone():
    model = convert_to_deformable(convert_to_deformable(Net()))
    assert deformable_names(model) == ["body.down", "body.grouped", "shared"]
    assert all(
        isinstance(module.conv_offset, nn.Conv2d)
        for module in model.modules()
        if isinstance(module, DeformConvPackBase)
    )


def test_unknown_names_are_reported():
    with pytest.raises(ValueError, match=r"not nn.Conv2d layers of the model: \['head', 'nothing'\]"):
        convert_to_deformable(Net(), ["head", "nothing", "shared"])


def test_layers_that_cannot_be_deformable():
    model = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect"))
    assert convert_to_deformable(model)[0].__class__ is nn.Conv2d  # skipped by default
    with pytest.raises(ValueError, match="cannot make '0' deformable: only convolutions with padding_mode"):
        convert_to_deformable(model, ["0"])
    with pytest.raises(ValueError, match=r"cannot make 'body.down' deformable: .*offset_groups \(3\)"):
        convert_to_deformable(Net(), ["body.down"], offset_groups=3)


def test_a_bare_convolution_is_converted_and_returned():
    conv = nn.Conv2d(4, 4, 3, padding=1)
    layer = convert_to_deformable(conv)
    assert isinstance(layer, ModulatedDeformConv2dPack)
    x = torch.randn(1, 4, 5, 5)
    torch.testing.assert_close(layer(x), conv(x), rtol=1e-5, atol=1e-5)
    assert convert_to_deformable(nn.Conv2d(4, 4, 1)).__class__ is nn.Conv2d


def test_converted_resnet_equals_the_plain_one_and_loads_its_weights():
    torch.manual_seed(0)
    plain = resnet18(num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    expected = plain(x)
    in_layer4 = lambda name, conv: name.startswith("layer4") and conv.kernel_size == (3, 3)  # noqa: E731
    model = convert_to_deformable(resnet18(num_classes=10), in_layer4)
    assert deformable_names(model) == [f"layer4.{b}.conv{c}" for b in (0, 1) for c in (1, 2)]
    report = load_torchvision_weights(model, plain.state_dict(), strict=True)
    assert report.missing_offset_keys == tuple(
        sorted(f"layer4.{b}.conv{c}.conv_offset.{p}" for b in (0, 1) for c in (1, 2) for p in ("weight", "bias"))
    )
    torch.testing.assert_close(model.eval()(x), expected, rtol=1e-4, atol=1e-4)
