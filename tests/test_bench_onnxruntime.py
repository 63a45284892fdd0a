"""``deformconv bench --against onnxruntime``: onnxruntime's DeformConv as a forward-only peer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import deformconv
from deformconv import bench
from deformconv.bench_onnxruntime import onnxruntime_peer
from deformconv.cli import main

TINY = bench.Shape("tiny", 2, 4, (5, 6), stride=2, groups=2, offset_groups=2)


@pytest.fixture
def tiny_shape(monkeypatch):
    monkeypatch.setitem(bench.SHAPES, TINY.name, TINY)
    return TINY


def test_onnxruntime_output_matches_deform_conv2d(tiny_shape):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    t = bench.make_inputs(tiny_shape, torch.float32, "cpu")
    peer = onnxruntime_peer(t["input"], t["weight"], t["offset"], t["mask"], stride=2, padding=1)
    assert not isinstance(peer, str), peer
    assert peer.threads == torch.get_num_threads()
    with torch.no_grad():
        want = deformconv.deform_conv2d(t["input"], t["offset"], t["weight"], stride=2, padding=1, mask=t["mask"])
    got = peer()
    assert got.shape == tuple(want.shape)
    scale = max(1.0, want.abs().max().item())
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4 * scale)


def test_bench_adds_the_onnxruntime_column(tiny_shape, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    path = tmp_path / "bench.json"
    argv = ["bench", "--shapes", "tiny", "--against", "onnxruntime", "--repeat", "1", "--warmup", "0"]
    assert main([*argv, "--no-memory", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "| onnxruntime fwd ms | onnxruntime / impl fwd |" in out
    assert "# onnxruntime: onnxruntime " in out
    report = json.loads(path.read_text())
    assert report["environment"]["onnxruntime"].startswith("onnxruntime ")
    for row in report["results"]:
        assert row["onnxruntime_forward_ms"] > 0
        assert row["onnxruntime_ratio"] == pytest.approx(row["onnxruntime_forward_ms"] / row["forward_ms"])
        cells = [c.strip() for c in out.split(f"| tiny | {row['impl']} |")[1].splitlines()[0].split("|")]
        assert cells[-3:-1] == [f"{row['onnxruntime_forward_ms']:.2f}", f"{row['onnxruntime_ratio']:.2f}"]


def test_bench_notes_when_onnxruntime_cannot_run(tiny_shape, tmp_path, capsys):
    path = tmp_path / "bench.json"
    argv = ["bench", "--shapes", "tiny", "--against", "onnxruntime", "--dtype", "bfloat16", "--backends", "cpp"]
    assert main([*argv, "--repeat", "1", "--warmup", "0", "--no-memory", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "# onnxruntime: skipped: " in out
    assert "| tiny | conv2d |" in out and out.count(" - | - |") == len(out.split("| tiny |")) - 1
    report = json.loads(path.read_text())
    assert report["environment"]["onnxruntime"].startswith("skipped: ")
    assert all(row["onnxruntime_forward_ms"] is None for row in report["results"])


def test_bench_rejects_an_unknown_peer(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--against", "tensorrt"])
    assert "unknown peer(s) ['tensorrt']" in capsys.readouterr().err
