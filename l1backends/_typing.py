"""Type names shared by every floor (the ground below the semantics)."""

from __future__ import annotations

from typing import Any, TypeAlias

__all__ = ["Array"]

#: An array of any library (NumPy, CuPy, torch, JAX, Dask, ...): the floors below the
#: backends never look inside one, so no array type is imported to name it.
Array: TypeAlias = Any
