"""The backends' implementations, one module or subpackage each, loaded lazily by the registry.

Each backend's package declares its ``SPEC`` (a :class:`~l1backends.registry.BackendSpec`)
and its ``probe`` in a light ``__init__`` that imports no array library; the
implementation itself is loaded on first use.  The subpackage is private: the
public list of backends is :func:`l1backends.backends`.
"""

from __future__ import annotations

from ..semantics import SUPPORTED_DTYPES, Plan

__all__ = ["ROUNDED_ONCE_ULPS", "out_declined"]

#: The accuracy every built-in backend declares: results rounded once from float64 (or
#: double-word) sums, so 0.6 ulp below float64 and 2 ulp for float64 results.
ROUNDED_ONCE_ULPS = {
    name: 2.0 if name in ("float64", "complex128") else 0.6 for name in SUPPORTED_DTYPES
}


def out_declined(plan: Plan) -> str | None:
    """The reason a backend that writes only fresh arrays gives for a plan with ``out=``."""
    if plan.writes_out:
        return "it writes fresh arrays and takes no out= buffer"
    return None
