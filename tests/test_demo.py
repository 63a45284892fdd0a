"""Tests of ``deformconv demo``: data, models, sampling trace, training helpers, and the command end to end."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch

from deformconv.demo.data import Geometry, load_source_digits, make_test_sets, render, training_epoch
from deformconv.demo.model import DigitNet, count_parameters, make_deformable
from deformconv.demo.sampling import centre_unit, regular_spread, spread, trace
from deformconv.demo.train import ProgressBar, schedule

GEOMETRY = Geometry(size=(9, 13), angle=(0, 15))


def test_source_digits_are_split_once_and_scaled():
    train, test = load_source_digits()
    assert len(train.labels) + len(test.labels) == 1797
    assert 500 < len(test.labels) < 600
    assert train.images.shape[1:] == (1, 8, 8)
    assert float(train.images.min()) == 0.0 and float(train.images.max()) == 1.0
    assert set(test.labels.tolist()) == set(range(10))


def test_render_is_deterministic_and_follows_the_geometry():
    digits = load_source_digits()[0].images[:64]
    first = render(digits, GEOMETRY, 24, torch.Generator().manual_seed(3))
    again = render(digits, GEOMETRY, 24, torch.Generator().manual_seed(3))
    other = render(digits, GEOMETRY, 24, torch.Generator().manual_seed(4))
    assert first.shape == (64, 1, 24, 24)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0
    # Ink grows with the area of the digit: about (16/8)**2 = 4 times more for twice the size.
    small = render(digits, Geometry((8, 8), (0, 0)), 24, torch.Generator().manual_seed(0)).sum()
    large = render(digits, Geometry((16, 16), (0, 0)), 24, torch.Generator().manual_seed(0)).sum()
    assert 3.0 < float(large / small) < 5.0


def test_render_places_an_unrotated_digit_where_the_geometry_says():
    # A full 8x8 square drawn at 8 px, no rotation, on an 8 px canvas covers the whole canvas.
    square = torch.ones(1, 1, 8, 8)
    image = render(square, Geometry((8, 8), (0, 0)), 8, torch.Generator().manual_seed(0))
    assert float(image[0, 0, 2:6, 2:6].min()) > 0.99


def test_test_sets_do_not_depend_on_the_training_seed_and_training_epochs_do():
    train, test = load_source_digits()
    conditions = {"a": GEOMETRY, "b": Geometry((15, 19), (0, 15))}
    first = make_test_sets(test, conditions, 24, copies=2)
    second = make_test_sets(test, conditions, 24, copies=2)
    assert torch.equal(first["a"][0], second["a"][0])
    assert first["a"][0].shape == (2 * len(test.labels), 1, 24, 24)
    assert torch.equal(first["b"][1], test.labels.repeat(2))
    epoch_0 = training_epoch(train, GEOMETRY, 24, seed=0, epoch=0)
    assert torch.equal(epoch_0[0], training_epoch(train, GEOMETRY, 24, seed=0, epoch=0)[0])
    assert not torch.equal(epoch_0[0], training_epoch(train, GEOMETRY, 24, seed=0, epoch=1)[0])
    assert not torch.equal(epoch_0[0], training_epoch(train, GEOMETRY, 24, seed=1, epoch=0)[0])
    assert sorted(epoch_0[1].tolist()) == sorted(train.labels.tolist())


@pytest.mark.parametrize("modulated", [True, False])
def test_deformable_twin_starts_equal_to_the_plain_network(modulated):
    torch.manual_seed(0)
    plain = DigitNet(width=4, depth=3).eval()
    twin = make_deformable(plain, 2, modulated).eval()
    images = torch.rand(3, 1, 16, 16)
    torch.testing.assert_close(twin(images), plain(images))
    assert len(twin.deformable_layers()) == 2 and plain.deformable_layers() == []
    offset_channels = (3 if modulated else 2) * 9
    extra = 2 * (offset_channels * 8 * 9 + offset_channels)
    assert count_parameters(twin) == count_parameters(plain) + extra


def test_make_deformable_rejects_a_bad_layer_count():
    with pytest.raises(ValueError, match="deformable layers must be in 1..3"):
        make_deformable(DigitNet(width=4, depth=3), 4, True)


def _constant_offsets(layer, dy: float, dx: float, mask_logit: float = 0.0) -> None:
    """Makes ``layer`` shift every kernel point by (dy, dx), whatever its input."""
    with torch.no_grad():
        layer.conv_offset.weight.zero_()
        bias = layer.conv_offset.bias
        bias[0:18:2], bias[1:18:2] = dy, dx
        if bias.numel() > 18:
            bias[18:] = mask_logit


def test_trace_follows_constant_offsets_through_stacked_layers():
    torch.manual_seed(0)
    model = make_deformable(DigitNet(width=4, depth=2), 2, modulated=True)
    for layer in model.deformable_layers():
        _constant_offsets(layer, 0.5, -0.25, mask_logit=1.0)
    tree = trace(model, model.deformable_layers(), torch.rand(1, 1, 24, 24), unit=(6, 5))
    assert tree.points.shape == (81, 2) and tree.regular.shape == (81, 2)
    # Two 3x3 layers without offsets reach a 5x5 neighbourhood of the unit.
    assert tree.regular.unique(dim=0).shape == (25, 2)
    assert float(tree.regular[:, 0].min()) == 4 and float(tree.regular[:, 1].max()) == 7
    # Every point moved by both layers' offsets; interior points read the constant field exactly.
    torch.testing.assert_close(tree.points - tree.regular, torch.tensor([[1.0, -0.5]]).expand(81, 2))
    mask = 2 * torch.sigmoid(torch.tensor(1.0))
    torch.testing.assert_close(tree.weights, (mask * mask).expand(81))
    # Spread of the regular grid matches the closed form; a uniform shift of (1, -0.5) adds its length.
    assert spread(tree.regular, torch.ones(81), tree.unit) * 2 == pytest.approx(regular_spread(2, stride=2))
    expected = math.sqrt(regular_spread(2, stride=1) ** 2 + 1.0**2 + 0.5**2)
    assert spread(tree.points, tree.weights, tree.unit) == pytest.approx(expected)


def test_trace_without_mask_weighs_every_point_one_and_rejects_strides():
    model = make_deformable(DigitNet(width=4, depth=1), 1, modulated=False)
    tree = trace(model, model.deformable_layers(), torch.rand(1, 1, 16, 16), unit=(3, 3))
    assert torch.equal(tree.weights, torch.ones(9))
    torch.testing.assert_close(tree.points, tree.regular)
    with pytest.raises(ValueError, match="stride 1"):
        trace(model, [model.stem[1].conv], torch.rand(1, 1, 16, 16), unit=(3, 3))


def test_centre_unit_is_under_the_centre_of_mass():
    image = torch.zeros(24, 24)
    image[14:18, 4:8] = 1  # centre (15.5, 5.5) -> grid (7.75, 2.75) -> (8, 3)
    assert centre_unit(image, stride=2) == (8, 3)


def test_schedule_warms_up_then_decays_to_zero():
    assert schedule(0, 100, 10) == pytest.approx(0.1)
    assert schedule(9, 100, 10) == pytest.approx(1.0)
    assert schedule(10, 100, 10) == pytest.approx(1.0)
    assert schedule(55, 100, 10) == pytest.approx(0.5)
    assert schedule(100, 100, 10) == pytest.approx(0.0, abs=1e-12)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_redraws_on_a_terminal_and_prints_final_lines_on_a_pipe():
    terminal, pipe = _Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        bar = ProgressBar(stream)
        for done in range(1, 5):
            bar.update("seed 1/1 plain", done, 4, f"step {done}")
        bar.finish("seed 1/1 plain", "3 s")
    shown = terminal.getvalue()
    assert shown.count("\r") == 5 and " 50% step 2" in shown
    assert shown.endswith("|" + "#" * ProgressBar.WIDTH + "| 100% 3 s\x1b[K\n")
    assert pipe.getvalue() == "seed 1/1 plain 3 s\n"


def _png_pixels(path):
    import matplotlib.image

    return matplotlib.image.imread(path)


def test_quick_demo_end_to_end(tmp_path, capsys):
    from deformconv.cli import main

    out = tmp_path / "report"
    # One epoch is enough to check the whole pipeline and report; `--quick` alone takes 4.
    assert main(["demo", "--quick", "--epochs", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for text in ("wide plain", "deformable", "in range (%)", "rotated (%)", "gain over plain", "sampling spread"):
        assert text in printed
    assert str(out / "index.md") in printed

    data = json.loads((out / "results.json").read_text())
    models = ("plain", "wide plain", "deformable")
    conditions = {"in range", "larger", "smaller", "rotated"}
    assert data["config"]["seeds"] == [0, 1]
    assert set(data["summary"]) == set(models) and set(data["conditions"]) == conditions
    params = {model: data["summary"][model]["params"] for model in models}
    assert params["plain"] < params["deformable"] <= params["wide plain"]
    for model in models:
        runs = data["runs"][model]
        assert [run["seed"] for run in runs] == [0, 1]
        for run in runs:
            assert set(run["accuracy"]) == conditions
            assert all(0.0 <= value <= 1.0 for value in run["accuracy"].values())
            assert len(run["history"]["loss"]) == data["config"]["train"]["epochs"]
            assert all(math.isfinite(value) for value in run["history"]["loss"])
            assert run["train_seconds"] > 0
        for condition, summary in data["summary"][model]["accuracy"].items():
            values = [run["accuracy"][condition] for run in runs]
            assert summary["mean"] == pytest.approx(sum(values) / len(values))
            assert summary["min"] <= summary["mean"] <= summary["max"]
    for baseline in ("plain", "wide plain"):
        for condition, gain in data["gain"][f"deformable - {baseline}"].items():
            differences = [
                d["accuracy"][condition] - b["accuracy"][condition]
                for b, d in zip(data["runs"][baseline], data["runs"]["deformable"])
            ]
            assert gain["mean"] == pytest.approx(sum(differences) / 2)
            assert gain["seeds_better"] == sum(v > 0 for v in differences)
    spread = data["spread_px"]
    assert spread["regular_grid"] == pytest.approx(4.0)
    assert set(spread["deformable"]) == conditions
    assert all(0 < value["mean"] < 24 for value in spread["deformable"].values())
    assert data["environment"]["backend"] in ("reference", "cpp", "triton")

    for name in data["figures"].values():
        pixels = _png_pixels(out / name)
        assert pixels.shape[0] >= 300 and pixels.shape[1] >= 600
        assert float(pixels[..., :3].std()) > 0.05  # a drawing, not a blank canvas

    page = (out / "index.md").read_text()
    for name in data["figures"].values():
        assert f"]({name})" in page
    for model in models:
        assert f"| {model} | {params[model]:,} |" in page
    assert "| gain over wide plain |" in page and "| sampling spread (px) |" in page


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        (["--epochs", "0"], "--epochs: must be a positive integer, got 0"),
        (["--seeds", "-1"], "--seeds: must be a positive integer, got -1"),
        (["--offset-lr-scale", "nan"], "--offset-lr-scale: must be a number >= 0, got nan"),
        (["--deformable-layers", "4"], "--deformable-layers: invalid choice: 4"),
    ],
)
def test_demo_rejects_bad_numbers(argument, message, tmp_path, capsys):
    from deformconv.cli import main

    with pytest.raises(SystemExit):
        main(["demo", "--out", str(tmp_path), *argument])
    assert message in capsys.readouterr().err
