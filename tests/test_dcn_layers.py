"""DCNv3 and DCNv4 layers: official state-dict keys and shapes, official forward, initialisation, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dcn_helpers import DCNCase, dcnv3_grid_sample, pack
from deformconv.nn import DCNv3, DCNv4


def official_dcnv3_state(channels, group, kernel=3, dw_kernel=None, norm="LN", center=False, remove_center=False):
    """A state dict with the official DCNv3 module's keys and shapes, random values."""
    dw_kernel = dw_kernel or kernel
    points = kernel * kernel - int(remove_center)
    shapes = {
        "dw_conv.0.weight": (channels, 1, dw_kernel, dw_kernel),
        "dw_conv.0.bias": (channels,),
        "offset.weight": (group * points * 2, channels),
        "offset.bias": (group * points * 2,),
        "mask.weight": (group * points, channels),
        "mask.bias": (group * points,),
        "input_proj.weight": (channels, channels),
        "input_proj.bias": (channels,),
        "output_proj.weight": (channels, channels),
        "output_proj.bias": (channels,),
    }
    if norm == "LN":
        shapes |= {"dw_conv.1.1.weight": (channels,), "dw_conv.1.1.bias": (channels,)}
    else:
        shapes |= {f"dw_conv.1.0.{k}": (channels,) for k in ("weight", "bias", "running_mean", "running_var")}
    if center:
        shapes |= {"center_feature_scale_proj_weight": (group, channels), "center_feature_scale_proj_bias": (group,)}
    generator = torch.Generator().manual_seed(0)
    state = {k: torch.randn(*s, generator=generator, dtype=torch.float64) * 0.3 for k, s in shapes.items()}
    if norm == "BN":
        state["dw_conv.1.0.running_var"] = state["dw_conv.1.0.running_var"].abs() + 0.5
        state["dw_conv.1.0.num_batches_tracked"] = torch.tensor(3)
    return state


def official_dcnv3_forward(state, x, case: DCNCase, norm="LN", center=False):
    """The official module's forward, written out from its code with the state dict's tensors."""
    n, h, w, c = x.shape
    projected = F.linear(x, state["input_proj.weight"], state["input_proj.bias"])
    dw = state["dw_conv.0.weight"]
    x1 = F.conv2d(x.permute(0, 3, 1, 2), dw, state["dw_conv.0.bias"], padding=(dw.shape[-1] - 1) // 2, groups=c)
    if norm == "LN":
        x1 = F.layer_norm(x1.permute(0, 2, 3, 1), (c,), state["dw_conv.1.1.weight"], state["dw_conv.1.1.bias"], 1e-6)
    else:
        stats = [state[f"dw_conv.1.0.{k}"] for k in ("running_mean", "running_var", "weight", "bias")]
        x1 = F.batch_norm(x1, *stats, training=False, eps=1e-5).permute(0, 2, 3, 1)
    x1 = F.gelu(x1)
    offset = F.linear(x1, state["offset.weight"], state["offset.bias"])
    mask = F.linear(x1, state["mask.weight"], state["mask.bias"]).reshape(n, h, w, case.group, -1).softmax(-1)
    out = dcnv3_grid_sample(projected, offset, mask.reshape(n, h, w, -1), case)
    if center:
        scale = F.linear(x1, state["center_feature_scale_proj_weight"], state["center_feature_scale_proj_bias"])
        scale = scale.sigmoid()[..., None].repeat(1, 1, 1, 1, c // case.group).flatten(-2)
        out = out * (1 - scale) + projected * scale
    return F.linear(out, state["output_proj.weight"], state["output_proj.bias"])


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"norm": "BN", "center": True},
        {"remove_center": True, "dw_kernel": 5},
        {"kernel": 5},
    ],
    ids=["default", "bn-center", "remove-center-dw5", "kernel5"],
)
def test_dcnv3_loads_official_state_dict_and_computes_the_official_forward(options):
    channels, group = 8, 2
    kernel = options.get("kernel", 3)
    state = official_dcnv3_state(channels, group, **options)
    layer = DCNv3(
        channels, kernel_size=kernel, pad=(kernel - 1) // 2, dw_kernel_size=options.get("dw_kernel"), group=group,
        norm_layer=options.get("norm", "LN"), center_feature_scale=options.get("center", False),
        remove_center=options.get("remove_center", False), offset_scale=1.0,
    ).double().eval()  # fmt: skip
    assert {k: tuple(v.shape) for k, v in layer.state_dict().items()} == {k: tuple(v.shape) for k, v in state.items()}
    layer.load_state_dict(state, strict=True)
    x = torch.randn(2, 6, 5, channels, dtype=torch.float64)
    case = DCNCase(2, (6, 5), group, channels // group, (kernel, kernel), padding=((kernel - 1) // 2,) * 2,
                   remove_center=options.get("remove_center", False))  # fmt: skip
    expected = official_dcnv3_forward(state, x, case, options.get("norm", "LN"), options.get("center", False))
    torch.testing.assert_close(layer(x), expected)


def test_dcnv3_initialisation_and_training():
    layer = DCNv3(16, group=4, center_feature_scale=True)
    for name in ("offset", "mask"):
        assert not getattr(layer, name).weight.any() and not getattr(layer, name).bias.any()
    assert layer.input_proj.weight.std() > 0 and not layer.input_proj.bias.any()
    assert not layer.center_feature_scale_proj_weight.any()
    out = layer(torch.randn(2, 7, 7, 16))
    out.square().mean().backward()
    assert all(p.grad is not None for p in layer.parameters())


def test_dcnv3_bad_arguments():
    with pytest.raises(ValueError, match="channels must be divisible by group, got 10 and 4"):
        DCNv3(10, group=4)
    with pytest.raises(ValueError, match="norm_layer must be 'LN' or 'BN'"):
        DCNv3(8, group=2, norm_layer="GN")
    with pytest.raises(ValueError, match="act_layer must be one of"):
        DCNv3(8, group=2, act_layer="Tanh")
    with pytest.raises(ValueError, match="remove_center needs an odd kernel_size"):
        DCNv3(8, group=2, kernel_size=4, remove_center=True)


def official_dcnv4_state(channels, group, dw_kernel=None, center=False, remove_center=False, output_bias=True,
                         without_pointwise=False):  # fmt: skip
    points = 9 - int(remove_center)
    shapes = {
        "offset_mask.weight": (math.ceil(group * points * 3 / 8) * 8, channels),
        "offset_mask.bias": (math.ceil(group * points * 3 / 8) * 8,),
    }
    if dw_kernel is not None:
        shapes |= {"offset_mask_dw.weight": (channels, 1, dw_kernel, dw_kernel), "offset_mask_dw.bias": (channels,)}
    if not without_pointwise:
        shapes |= {"value_proj.weight": (channels, channels), "value_proj.bias": (channels,)}
        shapes |= {"output_proj.weight": (channels, channels)}
        if output_bias:
            shapes |= {"output_proj.bias": (channels,)}
    if center:
        shapes |= {"center_feature_scale_proj_weight": (group, channels), "center_feature_scale_proj_bias": (group,)}
    generator = torch.Generator().manual_seed(1)
    return {k: torch.randn(*s, generator=generator, dtype=torch.float64) * 0.3 for k, s in shapes.items()}


def official_dcnv4_forward(state, x, case: DCNCase, center=False):
    """The official module's forward, from its code: unpack, DCNv3 formulation, optional projections."""
    n, length, c = x.shape
    h, w = case.size
    value = F.linear(x, state["value_proj.weight"], state["value_proj.bias"]) if "value_proj.weight" in state else x
    value = value.reshape(n, h, w, c)
    offset_input = x
    if "offset_mask_dw.weight" in state:
        dw = state["offset_mask_dw.weight"]
        image = x.view(n, h, w, c).permute(0, 3, 1, 2)
        offset_input = F.conv2d(image, dw, state["offset_mask_dw.bias"], padding=(dw.shape[-1] - 1) // 2, groups=c)
        offset_input = offset_input.permute(0, 2, 3, 1).reshape(n, length, c)
    packed = F.linear(offset_input, state["offset_mask.weight"], state["offset_mask.bias"]).reshape(n, h, w, -1)
    group, points = case.group, case.points
    per_group = packed[..., : 3 * group * points].reshape(n, h, w, group, 3 * points)
    offset = per_group[..., : 2 * points].reshape(n, h, w, -1)
    mask = per_group[..., 2 * points :].reshape(n, h, w, -1)
    out = dcnv3_grid_sample(value, offset, mask, case)
    if center:
        scale = F.linear(out, state["center_feature_scale_proj_weight"], state["center_feature_scale_proj_bias"])
        scale = scale.sigmoid()[..., None].repeat(1, 1, 1, 1, c // group).flatten(-2)
        out = out * (1 - scale) + value * scale
    out = out.reshape(n, length, c)
    if "output_proj.weight" in state:
        out = F.linear(out, state["output_proj.weight"], state.get("output_proj.bias"))
    return out


@pytest.mark.parametrize(
    "options",
    [{}, {"dw_kernel": 3, "center": True}, {"remove_center": True, "output_bias": False}, {"without_pointwise": True}],
    ids=["default", "dw-center", "remove-center-no-bias", "without-pointwise"],
)
def test_dcnv4_loads_official_state_dict_and_computes_the_official_forward(options):
    channels, group = 32, 2
    state = official_dcnv4_state(channels, group, **options)
    layer = DCNv4(
        channels, group=group, dw_kernel_size=options.get("dw_kernel"),
        center_feature_scale=options.get("center", False), remove_center=options.get("remove_center", False),
        output_bias=options.get("output_bias", True), without_pointwise=options.get("without_pointwise", False),
        unused_option=1,
    ).double()  # fmt: skip
    assert {k: tuple(v.shape) for k, v in layer.state_dict().items()} == {k: tuple(v.shape) for k, v in state.items()}
    layer.load_state_dict(state, strict=True)
    x = torch.randn(2, 5 * 4, channels, dtype=torch.float64)
    case = DCNCase(2, (5, 4), group, channels // group, remove_center=options.get("remove_center", False))
    expected = official_dcnv4_forward(state, x, case, options.get("center", False))
    torch.testing.assert_close(layer(x, shape=(5, 4)), expected)


def test_dcnv4_square_default_shape_initialisation_and_errors():
    layer = DCNv4(32, group=2)
    assert not layer.offset_mask.weight.any() and layer.offset_mask.out_features == 56
    out = layer(torch.randn(1, 36, 32))
    assert out.shape == (1, 36, 32)
    out.sum().backward()
    assert layer.offset_mask.weight.grad is not None
    with pytest.raises(ValueError, match="channels / group must be a multiple of 16 for DCNv4, got 48 / 4 = 12"):
        DCNv4(48, group=4)


def test_pack_helper_matches_layer_layout():
    """The tests' packing helper agrees with the width the layer's linear layer produces."""
    offset, mask = torch.zeros(1, 1, 1, 2 * 9 * 2), torch.zeros(1, 1, 1, 2 * 9)
    assert pack(offset, mask, 2).shape[-1] == DCNv4(32, group=2).offset_mask.out_features
