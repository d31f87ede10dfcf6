"""numba's on-disk cache for the numba-CPU kernels, made to survive bad disks.

* A kernel whose cache cannot be written anywhere (no writable package directory,
  ``NUMBA_CACHE_DIR`` or user cache directory) is compiled without caching, and the
  backend warns once, instead of failing to load and leaving NumPy arrays to the
  generic backend.
* A corrupted or truncated cache file (an interrupted write, a full disk) is
  detected when it is read: the kernel is compiled again, the cache rewritten, and
  one warning names the kernel and the error.
* An entry is fresh only while *every* kernel module is unchanged: numba itself
  compares just the stamp of the file defining the cached function, so an edited
  helper in another module would otherwise leave a stale kernel in use.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from numba import njit

__all__ = ["UNCACHED", "cached_kernel"]

#: Why each kernel that could not be cached was not (empty when caching works).
UNCACHED: list[str] = []

# Modification time and size of every module of this package, as numba stamps one file.
_SOURCES_STAMP = tuple(
    (path.name, path.stat().st_mtime, path.stat().st_size)
    for path in sorted(Path(__file__).parent.glob("*.py"))
)


class _ResilientCache:
    """Wraps a dispatcher's cache so that an unreadable entry is recompiled, not raised."""

    def __init__(self, cache: Any, name: str) -> None:
        self._cache = cache
        self._name = name

    def load_overload(self, signature: Any, target_context: Any) -> Any:
        try:
            return self._cache.load_overload(signature, target_context)
        except Exception as error:  # any unreadable entry: pickle, EOF, OS errors
            warnings.warn(
                f"numba's cached {self._name} kernel could not be read "
                f"({type(error).__name__}: {error}); it is compiled again and the cache "
                "rewritten",
                RuntimeWarning,
                stacklevel=2,
            )
            self._cache.flush()
            return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cache, name)


def cached_kernel(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    """``njit(cache=True, **options)``, falling back to no cache, with unreadable entries redone.

    numba keeps a dispatcher's cache in its ``_cache`` attribute; this is the one
    place that reaches into it, and a numba without it is simply left unwrapped.
    """

    def decorate(function: Callable[..., Any]) -> Any:
        try:
            dispatcher = njit(cache=True, **options)(function)
        except RuntimeError as error:  # numba found no writable cache location
            UNCACHED.append(str(error))
            return njit(**options)(function)
        cache = getattr(dispatcher, "_cache", None)
        if cache is not None and hasattr(cache, "load_overload"):
            files = getattr(cache, "_cache_file", None)
            if files is not None and hasattr(files, "_source_stamp"):
                files._source_stamp = _SOURCES_STAMP
            dispatcher._cache = _ResilientCache(cache, function.__name__)
        return dispatcher

    return decorate
