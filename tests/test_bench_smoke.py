"""The CPU benchmark runs end to end on tiny sizes (untimed: only its outputs are checked)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("numba", reason="numba is not installed")

from l1backends.bench import main


def test_cpu_benchmark_smoke(tmp_path, capsys):
    report = tmp_path / "bench.json"
    plot = tmp_path / "bench.png"
    status = main(
        ["--sizes", "1000", "--dtypes", "float32", "--repeat", "1", "--no-peers", "--quiet",
         "--json", str(report), "--plot", str(plot)]
    )  # fmt: skip
    assert status == 0
    table = capsys.readouterr().out
    assert "numba-cpu" in table and "floor read 2" in table and "dispatch overhead" in table
    data = json.loads(report.read_text())
    assert set(data) == {"machine", "results", "ratios", "dispatch_seconds"}
    operations = {(r["operation"], r["implementation"]) for r in data["results"]}
    assert ("mean", "numba-cpu") in operations and ("loss_and_grad", "numba-cpu") in operations
    assert all(r["seconds"] > 0 and r["n"] == 1000 for r in data["results"])
    assert {r["denominator"] for r in data["ratios"]} >= {"floor read 2", "numpy abs(x-y)"}
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert not plot.exists()
    else:
        assert plot.stat().st_size > 0
