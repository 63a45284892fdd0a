"""Layers of deformconv.nn: against the functional op, equal to a plain conv at initialisation, mmcv keys."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from deformconv import deform_conv2d
from deformconv.nn import (
    DeformConv2d,
    DeformConv2dPack,
    ModulatedDeformConv2d,
    ModulatedDeformConv2dPack,
    offset_param_groups,
    offset_parameters,
)
from deploy_helpers import randomize_offsets
from oracle import deform_conv2d_oracle

PACKS = [DeformConv2dPack, ModulatedDeformConv2dPack]

# (in, out, kernel, stride, padding, dilation, groups, offset_groups)
GEOMETRIES = [
    (4, 6, 3, 1, 1, 1, 1, 1),
    (4, 6, 3, 2, 1, 1, 2, 2),
    (6, 4, (3, 2), (2, 1), (1, 0), (2, 1), 1, 3),
    (4, 4, 1, 1, 0, 1, 4, 4),
]


def digits(n: int = 4, size: int = 12) -> torch.Tensor:
    """Real images: scikit-learn's 8x8 digits, upsampled, Tensor[n, 1, size, size]."""
    images = torch.tensor(load_digits().images[:n], dtype=torch.float32).unsqueeze(1) / 16
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("with_mask", [False, True])
def test_deform_conv2d_layer_matches_functional_op(geometry, with_mask):
    cin, cout, kernel, stride, padding, dilation, groups, offset_groups = geometry
    torch.manual_seed(0)
    layer = DeformConv2d(cin, cout, kernel, stride, padding, dilation, groups)
    kh, kw = layer.kernel_size
    x = torch.randn(2, cin, 7, 8)
    out_h = (7 + 2 * layer.padding[0] - layer.dilation[0] * (kh - 1) - 1) // layer.stride[0] + 1
    out_w = (8 + 2 * layer.padding[1] - layer.dilation[1] * (kw - 1) - 1) // layer.stride[1] + 1
    offset = torch.randn(2, 2 * offset_groups * kh * kw, out_h, out_w)
    mask = torch.rand(2, offset_groups * kh * kw, out_h, out_w) if with_mask else None
    expected = deform_conv2d(x, offset, layer.weight, layer.bias, stride, padding, dilation, mask)
    torch.testing.assert_close(layer(x, offset, mask), expected, rtol=0, atol=0)


def test_layers_match_the_float64_oracle():
    torch.manual_seed(0)
    layer = ModulatedDeformConv2d(4, 2, 3, stride=2, padding=1, groups=2).double()
    x = torch.randn(1, 4, 5, 6, dtype=torch.float64)
    offset = 2 * torch.randn(1, 2 * 2 * 9, 3, 3, dtype=torch.float64)
    mask = torch.rand(1, 2 * 9, 3, 3, dtype=torch.float64)
    expected = deform_conv2d_oracle(x, offset, layer.weight, layer.bias, 2, 1, 1, mask)
    torch.testing.assert_close(layer(x, offset, mask), expected)


def test_deform_conv2d_initialisation_and_keys_are_torchvision_s():
    # torchvision's DeformConv2d initialises exactly as nn.Conv2d does (same calls, same order).
    torch.manual_seed(3)
    conv = nn.Conv2d(6, 8, 3, groups=2)
    torch.manual_seed(3)
    layer = DeformConv2d(6, 8, 3, groups=2)
    assert torch.equal(layer.weight, conv.weight) and torch.equal(layer.bias, conv.bias)
    assert list(layer.state_dict()) == ["weight", "bias"]
    assert layer.weight.shape == (8, 3, 3, 3)
    assert list(DeformConv2d(6, 8, 3, bias=False).state_dict()) == ["weight"]
    attributes = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups")
    assert [getattr(layer, a) for a in attributes] == [6, 8, (3, 3), (1, 1), (0, 0), (1, 1), 2]


def test_modulated_layer_requires_a_mask():
    layer = ModulatedDeformConv2d(2, 2, 3, padding=1)
    with pytest.raises(TypeError, match="mask must be a Tensor"):
        layer(torch.randn(1, 2, 4, 4), torch.zeros(1, 18, 4, 4), None)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: DeformConv2d(6, 4, 3, groups=4), r"in_channels \(6\) must be divisible by groups \(4\)"),
        (lambda: DeformConv2d(4, 6, 3, groups=4), r"out_channels \(6\) must be divisible by groups \(4\)"),
        (lambda: DeformConv2d(0, 4, 3), "in_channels must be a positive int, got 0"),
        (lambda: DeformConv2d(4, 4, (3, 0)), r"kernel_size must be >= 1 in both dimensions, got \(3, 0\)"),
        (lambda: DeformConv2d(4, 4, 3, stride=0), r"stride must be >= 1 in both dimensions, got \(0, 0\)"),
        (lambda: DeformConv2d(4, 4, 3, padding=-1), r"padding must be >= 0"),
        (lambda: DeformConv2dPack(6, 4, 3, offset_groups=4), r"divisible by offset_groups \(4\)"),
        (lambda: DeformConv2dPack(4, 4, 3, offset_groups=0), "offset_groups must be a positive int, got 0"),
        (lambda: DeformConv2dPack(4, 4, 3, offset_groups=2, deform_groups=4), "disagree"),
        (lambda: ModulatedDeformConv2dPack(4, 4, 3, mask_activation="tanh"), "mask_activation must be one of"),
    ],
)
def test_bad_constructor_arguments_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_kernel_size_of_wrong_type_is_named():
    with pytest.raises(TypeError, match="kernel_size must be an int or a pair of ints, got 'big'"):
        DeformConv2d(4, 4, "big")


@pytest.mark.parametrize("pack", PACKS)
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_pack_is_exactly_a_convolution_at_initialisation(pack, geometry):
    cin, cout, kernel, stride, padding, dilation, groups, offset_groups = geometry
    torch.manual_seed(0)
    layer = pack(cin, cout, kernel, stride, padding, dilation, groups, offset_groups, bias=True)
    x = torch.randn(2, cin, 9, 8)
    offset, mask = layer.offsets_and_mask(x)
    assert torch.count_nonzero(offset) == 0
    kh, kw = layer.kernel_size
    assert offset.shape[1] == 2 * offset_groups * kh * kw
    if pack is ModulatedDeformConv2dPack:
        assert mask.shape[1] == offset_groups * kh * kw
        assert torch.equal(mask, torch.ones_like(mask))
    else:
        assert mask is None
    expected = F.conv2d(x, layer.weight, layer.bias, stride, padding, dilation, groups)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_sigmoid_mask_activation_starts_at_one_half():
    layer = ModulatedDeformConv2dPack(3, 5, 3, padding=1, mask_activation="sigmoid")
    x = torch.randn(1, 3, 6, 6)
    _, mask = layer.offsets_and_mask(x)
    assert torch.equal(mask, torch.full_like(mask, 0.5))
    # The mask scales the sampled input, not the bias.
    expected = F.conv2d(x, layer.weight, padding=1) / 2 + layer.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("activation, scale", [("sigmoid", 1.0), ("2sigmoid", 2.0)])
def test_modulated_pack_splits_conv_offset_like_mmcv(activation, scale):
    layer = ModulatedDeformConv2dPack(4, 6, 3, padding=1, offset_groups=2, mask_activation=activation)
    randomize_offsets(layer, seed=1)
    x = torch.randn(2, 4, 7, 7)
    raw = layer.conv_offset(x)
    o1, o2, logits = torch.chunk(raw, 3, dim=1)  # mmcv's ModulatedDeformConv2dPack.forward
    offset, mask = torch.cat((o1, o2), dim=1), scale * torch.sigmoid(logits)
    got_offset, got_mask = layer.offsets_and_mask(x)
    torch.testing.assert_close(got_offset, offset, rtol=0, atol=0)
    torch.testing.assert_close(got_mask, mask, rtol=0, atol=0)
    expected = deform_conv2d(x, offset, layer.weight, layer.bias, padding=1, mask=mask)
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=0)


def test_v1_pack_uses_conv_offset_output_as_offsets():
    layer = DeformConv2dPack(4, 6, 3, stride=2, padding=1, offset_groups=2)
    randomize_offsets(layer, seed=1)
    x = torch.randn(2, 4, 7, 7)
    offset = layer.conv_offset(x)
    expected = deform_conv2d(x, offset, layer.weight, None, stride=2, padding=1)
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=0)


def test_mmcv_checkpoints_load_strictly():
    # Keys and shapes of mmcv's ModulatedDeformConv2dPack(16, 32, 3, deform_groups=2) and
    # DeformConv2dPack(16, 32, 3, deform_groups=2) (mmcv's v1 layer has no bias).
    v2 = {
        "weight": torch.randn(32, 16, 3, 3),
        "bias": torch.randn(32),
        "conv_offset.weight": torch.randn(3 * 2 * 9, 16, 3, 3),
        "conv_offset.bias": torch.randn(3 * 2 * 9),
    }
    layer = ModulatedDeformConv2dPack(16, 32, 3, padding=1, deform_groups=2, mask_activation="sigmoid")
    layer.load_state_dict(v2)
    assert layer.offset_groups == layer.deform_groups == 2
    assert torch.equal(layer.conv_offset.weight, v2["conv_offset.weight"])
    v1 = {
        "weight": torch.randn(32, 16, 3, 3),
        "conv_offset.weight": torch.randn(2 * 2 * 9, 16, 3, 3),
        "conv_offset.bias": torch.randn(2 * 2 * 9),
    }
    DeformConv2dPack(16, 32, 3, padding=1, deform_groups=2).load_state_dict(v1)


def test_pack_bias_defaults_follow_mmcv():
    assert DeformConv2dPack(4, 4, 3).bias is None
    assert ModulatedDeformConv2dPack(4, 4, 3).bias is not None


@pytest.mark.parametrize("pack", PACKS)
def test_from_conv_computes_what_the_conv_computes(pack):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2)
    conv.bias.requires_grad_(False)
    layer = pack.from_conv(conv, offset_groups=2)
    assert (layer.stride, layer.padding, layer.dilation, layer.groups) == ((2, 2), (2, 2), (2, 2), 2)
    assert torch.equal(layer.weight, conv.weight) and torch.equal(layer.bias, conv.bias)
    assert layer.weight is not conv.weight  # a copy: training one leaves the other alone
    assert layer.weight.requires_grad and not layer.bias.requires_grad
    x = torch.randn(2, 4, 9, 9)
    torch.testing.assert_close(layer(x), conv(x), rtol=1e-5, atol=1e-5)


def test_from_conv_handles_string_padding_and_float64():
    conv = nn.Conv2d(3, 3, 3, padding="same", dilation=2, bias=False).double()
    layer = ModulatedDeformConv2dPack.from_conv(conv)
    assert layer.padding == (2, 2) and layer.bias is None and layer.weight.dtype == torch.float64
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(layer(x), conv(x))
    assert DeformConv2dPack.from_conv(nn.Conv2d(3, 3, 3, padding="valid")).padding == (0, 0)


@pytest.mark.parametrize(
    "conv, kwargs, message",
    [
        (nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect"), {}, "padding_mode='zeros'"),
        (nn.Conv2d(3, 3, 2, padding="same"), {}, "pads asymmetrically"),
        (nn.Conv2d(3, 3, 3), {"mask_activation": "sigmoid"}, "needs mask_activation='2sigmoid'"),
        (nn.Conv2d(3, 3, 3), {"offset_groups": 2}, r"divisible by offset_groups \(2\)"),
    ],
)
def test_from_conv_refuses_what_it_cannot_reproduce(conv, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModulatedDeformConv2dPack.from_conv(conv, **kwargs)


def test_from_conv_needs_a_conv2d():
    with pytest.raises(TypeError, match="conv must be an nn.Conv2d, got Linear"):
        DeformConv2dPack.from_conv(nn.Linear(3, 3))


@pytest.mark.parametrize("pack", PACKS)
def test_gradients_reach_conv_offset_on_real_images(pack):
    torch.manual_seed(0)
    layer = pack(1, 4, 3, padding=1)
    layer(digits()).square().mean().backward()
    offset_channels = 2 * 9
    grad = layer.conv_offset.weight.grad
    assert grad is not None
    # Far above rounding residue: a real fraction of the convolution weight's gradient.
    scale = layer.weight.grad.abs().max()
    assert grad[:offset_channels].abs().max() > 1e-3 * scale, "no gradient reached the offset channels"
    assert layer.conv_offset.bias.grad[:offset_channels].abs().max() > 1e-3 * scale
    if pack is ModulatedDeformConv2dPack:
        assert grad[offset_channels:].abs().max() > 1e-3 * scale, "no gradient reached the mask channels"


def test_reset_parameters_zeroes_conv_offset_again():
    layer = ModulatedDeformConv2dPack(4, 4, 3)
    randomize_offsets(layer, seed=1)
    layer.reset_parameters()
    assert torch.count_nonzero(layer.conv_offset.weight) == 0
    assert torch.count_nonzero(layer.conv_offset.bias) == 0
    assert torch.count_nonzero(layer.weight) > 0


def test_channels_last_and_non_contiguous_inputs():
    torch.manual_seed(0)
    layer = ModulatedDeformConv2dPack(4, 6, 3, padding=1)
    randomize_offsets(layer, pixels=0.5, seed=1)
    x = torch.randn(2, 4, 8, 10)
    expected = layer(x)
    torch.testing.assert_close(layer(x.to(memory_format=torch.channels_last)), expected)
    wide = torch.randn(2, 4, 8, 20)[..., ::2]
    torch.testing.assert_close(layer(wide), layer(wide.contiguous()))


def test_repr_names_the_hyper_parameters():
    text = repr(ModulatedDeformConv2dPack(8, 16, 3, 2, 1, offset_groups=2, mask_activation="sigmoid"))
    assert text.startswith(
        "ModulatedDeformConv2dPack(\n  8, 16, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), "
        "offset_groups=2, mask_activation='sigmoid'\n  (conv_offset): Conv2d(8, 54, kernel_size=(3, 3)"
    )
    assert repr(DeformConv2d(8, 16, 3, groups=2, bias=False)) == (
        "DeformConv2d(8, 16, kernel_size=(3, 3), stride=(1, 1), groups=2, bias=False)"
    )


@pytest.mark.parametrize("pack", PACKS)
def test_state_dict_round_trip_pickling_and_deepcopy(pack):
    torch.manual_seed(0)
    layer = pack(4, 6, 3, padding=1, offset_groups=2)
    randomize_offsets(layer, seed=1)
    x = torch.randn(1, 4, 6, 6)
    expected = layer(x)

    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    fresh = pack(4, 6, 3, padding=1, offset_groups=2)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    torch.testing.assert_close(fresh(x), expected, rtol=0, atol=0)

    for clone in (pickle.loads(pickle.dumps(layer)), copy.deepcopy(layer)):
        assert repr(clone) == repr(layer)
        torch.testing.assert_close(clone(x), expected, rtol=0, atol=0)


def test_offset_param_groups_scale_only_the_offset_convs():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), ModulatedDeformConv2dPack(4, 4, 3), DeformConv2dPack(4, 4, 3))
    groups = offset_param_groups(model, lr=0.1, offset_lr_mult=0.01, weight_decay=1e-4)
    offset = {id(p) for p in offset_parameters(model)}
    assert offset == {id(p) for m in model[1:] for p in m.conv_offset.parameters()}
    assert [g["lr"] for g in groups] == [0.1, pytest.approx(0.001)]
    assert all(g["weight_decay"] == 1e-4 for g in groups)
    assert {id(p) for p in groups[1]["params"]} == offset
    every = [id(p) for g in groups for p in g["params"]]
    assert sorted(every) == sorted(id(p) for p in model.parameters())  # each exactly once
    torch.optim.SGD(groups, lr=0.1)  # accepted as is


def test_offset_param_groups_without_deformable_layers_and_bad_options():
    model = nn.Conv2d(3, 3, 3)
    groups = offset_param_groups(model, lr=0.1)
    assert len(groups) == 1 and len(groups[0]["params"]) == 2
    with pytest.raises(ValueError, match="options must not set 'params'"):
        offset_param_groups(model, 0.1, params=[])
    with pytest.raises(ValueError, match="must be >= 0"):
        offset_param_groups(model, lr=-1.0)
