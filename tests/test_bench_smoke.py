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
    assert set(data) == {"machine", "results", "ratios", "dispatch_seconds", "cold_first_call"}
    assert data["cold_first_call"] == []  # only with --cold
    operations = {(r["operation"], r["implementation"]) for r in data["results"]}
    assert ("mean", "numba-cpu") in operations and ("loss_and_grad", "numba-cpu") in operations
    assert {("loss_and_grad", "numba-cpu out="), ("none", "numba-cpu out=")} <= operations
    assert all(r["seconds"] > 0 and r["n"] == 1000 for r in data["results"])
    assert {r["denominator"] for r in data["ratios"]} >= {"floor read 2", "numpy abs(x-y)"}
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert not plot.exists()
    else:
        assert plot.stat().st_size > 0


def test_threshold_sweep_smoke(tmp_path, capsys):
    report = tmp_path / "threshold.json"
    plot = tmp_path / "threshold.png"
    status = main(
        ["--threshold", "--exponents", "12", "13", "--repeat", "1", "--quiet",
         "--json", str(report), "--plot", str(plot)]
    )  # fmt: skip
    assert status == 0
    table = capsys.readouterr().out
    assert "crossover mean" in table and "PARALLEL_MIN" in table
    data = json.loads(report.read_text())
    assert set(data) >= {"machine", "threads", "parallel_min", "results", "crossover"}
    assert {(r["operation"], r["n"]) for r in data["results"]} == {
        (operation, n)
        for operation in ("mean", "none", "loss_and_grad", "mean step 2", "none step 2")
        for n in (4096, 8192)
    }
    assert all(r["serial_seconds"] > 0 and r["parallel_seconds"] > 0 for r in data["results"])
    assert all(r["speedup"] == r["serial_seconds"] / r["parallel_seconds"] for r in data["results"])
    assert set(data["crossover"]) == {"mean", "none", "loss_and_grad", "mean step 2", "none step 2"}
    from l1backends._backends.numba_cpu import _backend, _general

    assert _general.PARALLEL_MIN == _backend.PARALLEL_MIN == data["parallel_min"]  # restored
    assert data["general_parallel_min"] == _general.GENERAL_PARALLEL_MIN
    assert data["plain_parallel_min"] == _general.PLAIN_PARALLEL_MIN


def test_threshold_crossover_is_where_the_threads_win_from_on():
    from l1backends.bench.threshold import crossover

    rows = [{"n": n, "speedup": s} for n, s in [(1, 0.5), (2, 1.2), (4, 0.9), (8, 1.1), (16, 1.5)]]
    assert crossover(rows) == 8
    assert crossover([{"n": 1, "speedup": 2.0}, {"n": 2, "speedup": 0.8}]) is None


def test_layouts_smoke(tmp_path, capsys):
    report = tmp_path / "layouts.json"
    plot = tmp_path / "layouts.png"
    status = main(
        ["--layouts", "--elements", "8192", "--repeat", "1", "--quiet", "--no-plot", "--substeps",
         "--json", str(report), "--plot", str(plot)]
    )  # fmt: skip
    assert status == 0
    table = capsys.readouterr().out
    assert "complex64 'none'" in table and "big-endian" in table
    data = json.loads(report.read_text())
    assert set(data) >= {"machine", "target_ratio", "results", "substeps"}
    names = {r["layout"] for r in data["results"]}
    assert {"loss_and_grad 'none'", "grad 'none', grad_output array", "mean, negative stride",
            "mean axis=1, shape (n/2, 2)", "'none', broadcast weight"} <= names  # fmt: skip
    for row in data["results"]:
        assert row["ratio"] > 0 and row["within_target"] == (row["ratio"] <= 3.0)
        assert row["paths"], row  # every call went through a numba-cpu kernel path
    assert not plot.exists()
    parts = {r["part"]: r["ns_per_element"] for r in data["substeps"]}
    assert len(parts) == 3 and all(value > 0 for value in parts.values())


def test_cold_first_call_runs_in_a_fresh_process_with_an_empty_cache(monkeypatch):
    from l1backends.bench import cpu

    case = ("float32 mean", "x = np.ones(8, np.float32)", "l1.l1_loss(x, x)")
    monkeypatch.setattr(cpu, "COLD_CASES", (case,))
    (row,) = cpu.cold_starts()
    assert row["case"] == "float32 mean" and row["call"] == "l1.l1_loss(x, x)"
    assert 0 < row["seconds"] < 120
