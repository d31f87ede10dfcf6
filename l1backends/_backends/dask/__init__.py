"""The Dask backend ("dask"): the L1 loss of ``dask.array`` arrays, lazily and chunk by chunk.

The graph is built by :mod:`._graph` and every task runs a block of :mod:`._blocks`
on one chunk, through the registry's backend for that chunk's type.  This module
imports no array library: dask is imported by :func:`probe`, and the
implementation on first use.
"""

from __future__ import annotations

from typing import Any

from ...registry import BackendSpec, Capabilities
from .. import ROUNDED_ONCE_ULPS

__all__ = ["SPEC", "backend", "probe"]

SPEC = BackendSpec(
    name="dask",
    implementation="l1backends._backends.dask:backend",
    probe="l1backends._backends.dask:probe",
    array_types=("dask.array.core:Array",),
    capabilities=Capabilities(ulps=ROUNDED_ONCE_ULPS, deterministic=True),
)


def probe() -> str | None:
    """Return None when dask.array can be used, else why not."""
    try:
        import dask.array  # noqa: F401
    except ImportError as error:
        return (
            f"dask.array cannot be imported ({type(error).__name__}: {error}); "
            "install it with pip install 'l1backends[dask]'"
        )
    return None


def __getattr__(name: str) -> Any:
    if name == "backend":
        from ._graph import backend

        return backend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
