"""The numba-CPU backend ("numba-cpu"): NumPy arrays, one fused pass at memory bandwidth.

This module imports neither NumPy nor numba: :func:`probe` imports numba, and the
implementation (:mod:`._backend`) is loaded on first use.
"""

from __future__ import annotations

from typing import Any

from ...registry import BackendSpec, Capabilities
from .. import ROUNDED_ONCE_ULPS

__all__ = ["SPEC", "backend", "probe"]

SPEC = BackendSpec(
    name="numba-cpu",
    implementation="l1backends._backends.numba_cpu:backend",
    probe="l1backends._backends.numba_cpu:probe",
    array_types=("numpy:ndarray",),
    # float16 differences, products with weights and their sums are exact in double words,
    # and every result is rounded once: float16 is correctly rounded.
    capabilities=Capabilities(
        ulps={**ROUNDED_ONCE_ULPS, "float16": 0.5},
        deterministic=True,
        correctly_rounded=("float16",),
    ),
)


def probe() -> str | None:
    """Return None when numba can run here, else the reason."""
    try:
        import numba  # noqa: F401
    except Exception as error:  # the import error is the reason shown to users
        return f"numba cannot be imported: {type(error).__name__}: {error}"
    return None


def __getattr__(name: str) -> Any:
    if name == "backend":
        from ._backend import backend

        return backend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
