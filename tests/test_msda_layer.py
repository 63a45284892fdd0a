"""MultiScaleDeformableAttention: mmcv's constructor, initialisation, forward and state-dict keys."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from deformconv.bench_msda import grid_sample_attention
from deformconv.nn import MultiScaleDeformableAttention
from helpers import TOLERANCE, assert_close_to_scale

SHAPES = [(6, 7), (3, 4)]
SPATIAL = torch.tensor(SHAPES)
S = sum(h * w for h, w in SHAPES)
C, M, L, P = 16, 2, 2, 3


def layer(**kwargs) -> MultiScaleDeformableAttention:
    torch.manual_seed(0)
    options = dict(embed_dims=C, num_heads=M, num_levels=L, num_points=P, dropout=0.0)
    module = MultiScaleDeformableAttention(**{**options, **kwargs}).double()
    # Non-trivial offsets and weights, so the test sees every parameter at work.
    with torch.no_grad():
        for linear in (module.sampling_offsets, module.attention_weights):
            linear.weight.normal_(0, 0.3)
            linear.bias.add_(torch.randn_like(linear.bias) * 0.3)
    return module


def expected(module, query, value, identity, query_pos, mask, reference):
    """mmcv's forward, written out for batch-first tensors with grid_sample."""
    q = query + query_pos
    v = F.linear(value, module.value_proj.weight, module.value_proj.bias)
    v = v.masked_fill(mask[..., None], 0.0).view(2, S, M, -1)
    offsets = F.linear(q, module.sampling_offsets.weight, module.sampling_offsets.bias).view(2, -1, M, L, P, 2)
    weights = F.linear(q, module.attention_weights.weight, module.attention_weights.bias)
    weights = weights.view(2, -1, M, L * P).softmax(-1).view(2, -1, M, L, P)
    if reference.shape[-1] == 2:
        wh = torch.tensor([[w, h] for h, w in SHAPES], dtype=query.dtype)
        locations = reference[:, :, None, :, None, :] + offsets / wh[:, None, :]
    else:
        locations = reference[:, :, None, :, None, :2] + offsets / P * reference[:, :, None, :, None, 2:] / 2
    sampled = grid_sample_attention(v, SHAPES, locations, weights)
    return F.linear(sampled, module.output_proj.weight, module.output_proj.bias) + identity


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("boxes", [False, True])
def test_forward_matches_mmcv_formula(batch_first, boxes):
    module = layer(batch_first=batch_first)
    g = torch.Generator().manual_seed(1)
    query, query_pos, identity = (torch.randn(2, 5, C, generator=g, dtype=torch.float64) for _ in range(3))
    value = torch.randn(2, S, C, generator=g, dtype=torch.float64)
    mask = torch.rand(2, S, generator=g) < 0.2
    reference = torch.rand(2, 5, L, 4 if boxes else 2, generator=g, dtype=torch.float64)
    if boxes:
        reference[..., 2:] *= 0.5
    want = expected(module, query, value, identity, query_pos, mask, reference)

    def layout(t):
        return t if batch_first else t.transpose(0, 1)

    got = module(
        layout(query),
        value=layout(value),
        identity=layout(identity),
        query_pos=layout(query_pos),
        key_padding_mask=mask,
        reference_points=reference,
        spatial_shapes=SPATIAL,
        level_start_index=torch.tensor([0, 42]),
    )
    assert_close_to_scale(layout(got), want, TOLERANCE[torch.float64])


def test_defaults_value_and_identity_to_query_and_computes_start_index():
    module = layer(batch_first=True)
    query = torch.randn(2, S, C, dtype=torch.float64)
    reference = torch.rand(2, S, L, 2, dtype=torch.float64)
    got = module(query, reference_points=reference, spatial_shapes=SPATIAL)
    none = torch.zeros(2, S, dtype=torch.bool)
    want = expected(module, query, query, query, torch.zeros_like(query), none, reference)
    assert_close_to_scale(got, want, TOLERANCE[torch.float64])


def test_gradients_reach_every_parameter_and_dropout_applies_in_training():
    module = layer(batch_first=True, dropout=0.5).float()
    query = torch.randn(2, 4, C)
    value = torch.randn(2, S, C)
    kwargs = dict(value=value, reference_points=torch.rand(2, 4, L, 2), spatial_shapes=SPATIAL)
    module(query, **kwargs).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    module.eval()
    assert torch.equal(module(query, **kwargs), module(query, **kwargs))


def test_init_weights_is_mmcvs():
    module = MultiScaleDeformableAttention(embed_dims=32, num_heads=8, num_levels=3, num_points=2)
    bias = module.sampling_offsets.bias.view(8, 3, 2, 2)
    for m in range(8):
        angle = 2 * math.pi * m / 8
        direction = torch.tensor([math.cos(angle), math.sin(angle)])
        direction = direction / direction.abs().max()
        for p in range(2):
            assert torch.allclose(bias[m, :, p], (p + 1) * direction.expand(3, 2), atol=1e-6)
    assert (module.sampling_offsets.weight == 0).all()
    assert (module.attention_weights.weight == 0).all() and (module.attention_weights.bias == 0).all()
    for projection in (module.value_proj, module.output_proj):
        fan_in, fan_out = projection.weight.shape[1], projection.weight.shape[0]
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert projection.weight.abs().max() <= bound and projection.weight.std() > bound / 4
        assert (projection.bias == 0).all()


def _checkpoint(embed_dims, heads, levels, points, value_dims=None):
    """A state dict with the keys and shapes that mmcv's and Deformable DETR's modules save."""
    value_dims = value_dims or embed_dims
    sizes = {
        "sampling_offsets": (heads * levels * points * 2, embed_dims),
        "attention_weights": (heads * levels * points, embed_dims),
        "value_proj": (value_dims, embed_dims),
        "output_proj": (embed_dims, value_dims),
    }
    state = {}
    for name, (rows, cols) in sizes.items():
        state[f"{name}.weight"] = torch.randn(rows, cols)
        state[f"{name}.bias"] = torch.randn(rows)
    return state


@pytest.mark.parametrize(
    ("kwargs", "checkpoint"),
    [
        # mmcv MultiScaleDeformableAttention defaults.
        (dict(), _checkpoint(256, 8, 4, 4)),
        # Deformable DETR MSDeformAttn(d_model=256, n_levels=4, n_heads=8, n_points=4), and a
        # DINO-style decoder with value_proj_ratio 0.5.
        (dict(value_proj_ratio=0.5, num_points=2), _checkpoint(256, 8, 4, 2, value_dims=128)),
    ],
)
def test_loads_mmcv_and_deformable_detr_checkpoints(kwargs, checkpoint):
    module = MultiScaleDeformableAttention(**kwargs)
    assert set(module.state_dict()) == set(checkpoint)
    module.load_state_dict(checkpoint, strict=True)
    assert torch.equal(module.value_proj.weight, checkpoint["value_proj.weight"])


def test_bad_arguments():
    with pytest.raises(ValueError, match="embed_dims must be divisible by num_heads, got 30 and 8"):
        MultiScaleDeformableAttention(embed_dims=30)
    with pytest.raises(ValueError, match="num_points must be a positive int, got 0"):
        MultiScaleDeformableAttention(num_points=0)
    with pytest.warns(UserWarning, match="not a power of 2"):
        MultiScaleDeformableAttention(embed_dims=48, num_heads=8)
    module = layer(batch_first=True)
    query = torch.randn(1, 3, C, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"reference_points must end in 2 \(points\) or 4 \(boxes\), got shape"):
        module(query, value=torch.randn(1, S, C, dtype=torch.float64), reference_points=torch.rand(1, 3, L, 3),
               spatial_shapes=SPATIAL)  # fmt: skip
    with pytest.raises(ValueError, match="reference_points and spatial_shapes are required"):
        module(query)
    with pytest.raises(ValueError, match=r"spatial_shapes must cover value's S = 40"):
        module(query, value=torch.randn(1, 40, C, dtype=torch.float64), reference_points=torch.rand(1, 3, L, 2),
               spatial_shapes=SPATIAL)  # fmt: skip
