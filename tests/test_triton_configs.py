"""Launch configurations of the Triton kernels: every GPU family's tiles give the reference results.

The configurations differ per GPU family (:mod:`deformconv.backends.triton.deform_conv2d.configs`);
:func:`runtime.configured_for` makes the launchers pick a family's tiles in Triton's CPU
interpreter, so each family's loop structure is checked against the reference without its GPU.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from cases import Case
from deformconv.backends.triton import runtime
from deformconv.ops.deform_conv2d.geometry import ConvGeometry
from triton_support import DTYPES, check_backward, check_forward, configs, forward, geometry, tensors

# The interpreter runs sm_80's configurations unless told otherwise: every other test covers them.
FAMILIES = {"sm_75": 75, "sm_90": 90}
# In/out channels per group >= 16: the tl.dot path, with output-channel tiles of 32 (sm_75)
# and 128 (half types on sm_90) that cover the 80 outputs in three tiles and one partial tile.
WIDE = Case(batch=1, size=(3, 4), in_channels=16, out_channels=80)
GROUPED = Case(batch=1, size=(4, 5), in_channels=32, out_channels=32, groups=2, offset_groups=2)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_every_family_configuration_matches_reference(family, dtype):
    case = WIDE
    t = tensors(case, dtype)
    with runtime.configured_for(FAMILIES[family]):
        check_forward(case, dtype, t)
        check_backward(case, dtype, t)


def test_turing_tiles_on_groups_and_offset_groups():
    # float64 and narrow channel runs use the same broadcast-and-sum tiles on every family.
    t = tensors(GROUPED, torch.float16)
    with runtime.configured_for(75):
        check_forward(GROUPED, torch.float16, t)
        check_backward(GROUPED, torch.float16, t)


def test_configurations_are_valid_tiles():
    widths = (1, 4, 16, 24, 512)
    for kernel, dtype, capability, in_width, out_per_group in itertools.product(
        configs.KERNELS, DTYPES, (0, 75, 80, 86, 89, 90, 100), widths, widths
    ):
        cfg = configs.config(kernel, in_width, out_per_group, dtype, capability)
        for size in (cfg.block_p, cfg.block_c, cfg.block_o):
            assert size >= 2 and size & (size - 1) == 0, cfg
        assert cfg.num_warps in (1, 2, 4, 8, 16) and cfg.num_stages >= 1
        dot = kernel in configs.DOT_KERNELS and dtype != torch.float64 and min(in_width, out_per_group) >= 16
        assert cfg.use_dot == dot, cfg
        if dot:
            assert min(cfg.block_p, cfg.block_c, cfg.block_o) >= 16, cfg


def test_half_types_get_wider_output_tiles_than_float32():
    half = configs.config("forward", 256, 256, torch.float16, 90)
    single = configs.config("forward", 256, 256, torch.float32, 90)
    assert half.block_o > single.block_o


def test_a_weight_changed_through_data_changes_the_output():
    # Updates through .data bypass the version counter (EMA updates, gradcheck): nothing may be cached.
    case = Case(batch=1, size=(4, 5), bias=False)
    t = tensors(case, torch.float64)
    args = (t["input"], t["offset"], t["mask"], t["weight"], None, geometry(case, t))
    first = forward.deform_conv2d_forward(*args)
    t["weight"].data.mul_(2)
    torch.testing.assert_close(forward.deform_conv2d_forward(*args), 2 * first)


def test_flat_channel_loops_only_where_no_tile_straddles_offset_groups():
    def geometry(channels, groups, offset_groups):
        x = torch.empty(1, channels, 4, 4)
        offset = torch.empty(1, 2 * offset_groups * 9, 4, 4)
        weight = torch.empty(channels, channels // groups, 3, 3)
        return ConvGeometry.of(x, offset, weight, (1, 1), (1, 1), (1, 1))

    assert configs.flat_channel_tiles(geometry(96, 1, 1), 32)  # one offset group
    assert configs.flat_channel_tiles(geometry(64, 1, 2), 32)  # 32 channels per offset group
    assert not configs.flat_channel_tiles(geometry(96, 1, 2), 32)  # 48 per offset group: tile 2 straddles
    assert not configs.flat_channel_tiles(geometry(12, 2, 3), 4)  # groups of 6 start mid-tile
