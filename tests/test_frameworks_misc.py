"""The torch and jax entries without their libraries, and the frameworks benchmark's outputs."""

from __future__ import annotations

import json
import sys

import pytest

import l1backends as l1
from l1backends._backends import jax as jax_entry
from l1backends._backends import torch as torch_entry


@pytest.mark.parametrize(("entry", "module"), [(torch_entry, "torch"), (jax_entry, "jax")])
def test_probes_give_the_real_reason_when_the_library_is_missing(
    entry, module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # "import torch" now raises ImportError
    reason = entry.probe()
    assert reason is not None and module in reason and "l1backends[frameworks]" in reason


def test_both_entries_are_listed_before_the_generic_backend() -> None:
    names = [row.name for row in l1.backends()]
    assert names.index("torch") < names.index("array-api")
    assert names.index("jax") < names.index("array-api")


def test_frameworks_benchmark_smoke(tmp_path, capsys) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    from l1backends.bench import main

    report = tmp_path / "frameworks.json"
    status = main(
        ["--frameworks", "--sizes", "1000", "--repeat", "1", "--quiet", "--no-plot",
         "--json", str(report)]
    )  # fmt: skip
    assert status == 0
    table = capsys.readouterr().out
    assert "torch fwd+bwd" in table and "jax value_and_grad" in table
    data = json.loads(report.read_text())
    assert set(data) == {"machine", "results", "ratios", "absolute"}
    operations = {(r["operation"], r["implementation"]) for r in data["results"]}
    assert ("torch mean", "F.l1_loss") in operations
    assert ("generic mean numpy", "np.mean(abs)") in operations
    assert {row["operation"] for row in data["absolute"]} == {"torch mean", "torch forward (grad)"}
