"""The README's training-loop snippets for PyTorch and JAX run as written, and train."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def snippet(name: str) -> str:
    """The Python block that follows ``<!-- readme-test: name -->`` in the README."""
    match = re.search(
        rf"<!-- readme-test: {name} -->\s*```python\n(.*?)```", README.read_text(), re.DOTALL
    )
    assert match is not None, f"README has no snippet marked readme-test: {name}"
    return match.group(1)


@pytest.mark.parametrize("name", ["torch", "jax"])
def test_training_loop_snippet_runs_and_learns(name: str, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip(name, reason=f"{name} is in the 'frameworks' and 'test' extras")
    exec(compile(snippet(name), f"README.md ({name} snippet)", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out
    final = float(re.search(r"L1 after training: ([0-9.]+)", printed).group(1))
    assert final < 0.15  # the noise level is 0.08: the loop learned the linear map
