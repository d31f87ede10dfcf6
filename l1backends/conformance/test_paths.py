"""The path matrix: every kernel path a backend declares is visited by an exactly checked call."""

from __future__ import annotations

from ..registry import registry
from .checks import Target
from .matrix import CHECKS, matrix

__all__ = ["test_path_matrix"]


def test_path_matrix(conformance_target: Target) -> None:
    """Every matrix case is exact; with declared paths, each path is visited at least once."""
    implementation = registry.implementation(conformance_target.backend)
    paths = getattr(implementation, "paths", None)
    cases = matrix(conformance_target, paths)
    assert cases, "the matrix built no case for this adapter"
    if paths is None:
        for entry in cases:
            for check in entry.checks:
                CHECKS[check](conformance_target, entry.case)
        return
    with paths.recording() as visited:
        for entry in cases:
            for check in entry.checks:
                CHECKS[check](conformance_target, entry.case)
    missing = sorted(paths.names - visited)
    assert not missing, (
        f"[{conformance_target.id}] the path matrix never visited the declared kernel "
        f"path(s) {missing}: add matrix cases (l1backends/conformance/matrix.py) that reach them"
    )
