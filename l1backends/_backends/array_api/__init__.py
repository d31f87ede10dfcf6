"""The generic backend ("array-api"): any Array-API namespace, through array-api-compat.

It serves every array that no faster backend claims.  The implementation is
loaded on first use.
"""

from __future__ import annotations

from typing import Any

from ...registry import BackendSpec, Capabilities
from .. import ROUNDED_ONCE_ULPS

__all__ = ["SPEC", "ArrayAPIBackend", "backend"]

SPEC = BackendSpec(
    name="array-api",
    implementation="l1backends._backends.array_api:backend",
    generic=True,
    capabilities=Capabilities(ulps=ROUNDED_ONCE_ULPS, deterministic=True),
)


def __getattr__(name: str) -> Any:
    if name in ("backend", "ArrayAPIBackend"):
        from . import _backend

        return getattr(_backend, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
