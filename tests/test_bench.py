"""``deformconv bench``: the table, the JSON output and the argument checks."""

from __future__ import annotations

import json

import pytest
import torch

import deformconv
from deformconv.cli import main
from deformconv.measure import peak_extra_mb


def test_bench_prints_a_table_and_writes_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert main(["bench", "--shapes", "dw", "--repeat", "1", "--warmup", "0", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "| shape | impl | forward ms | x conv2d | fwd+bwd ms | x conv2d | peak extra MiB |" in out
    report = json.loads(path.read_text())
    assert report["environment"]["device"] == "cpu"
    rows = {r["impl"]: r for r in report["results"]}
    available = {n for n, s in deformconv.backends().items() if s["available"] and "cuda" not in s["devices"]}
    assert {"conv2d", *available} <= set(rows)
    assert rows["conv2d"]["forward_ratio"] == 1.0
    for row in rows.values():
        assert row["shape"] == "dw"
        assert row["forward_ms"] > 0 and row["forward_backward_ms"] > 0
        assert row["peak_extra_mb"] > 0
        assert f"| dw | {row['impl']} |" in out


def test_bench_times_only_the_backends_asked_for(capsys):
    assert (
        main(
            ["bench", "--shapes", "r50-c5", "--backends", "reference", "--repeat", "1", "--warmup", "0", "--no-memory"]
        )
        == 0
    )
    impls = [line.split("|")[2].strip() for line in capsys.readouterr().out.splitlines() if line.startswith("| r50")]
    assert impls == ["conv2d", "reference"]


def test_bench_rejects_an_unknown_shape(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--shapes", "r50-c9"])
    assert "unknown shape(s) ['r50-c9']" in capsys.readouterr().err


def test_peak_extra_memory_sees_a_temporary_buffer():
    def fn():
        return torch.ones(1 << 20).sum()  # a 4 MiB temporary

    assert 4.0 <= peak_extra_mb(fn, "cpu") < 4.1
