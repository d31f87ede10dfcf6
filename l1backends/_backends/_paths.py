"""Kernel paths that a backend declares, and a recorder that sees which ones a call took.

A backend lists every distinct kernel path it has (a specialization, a layout
branch, a serial or parallel driver) in a :class:`KernelPaths` and calls
:meth:`KernelPaths.visit` where it takes each one.  The conformance suite's path
matrix records the visits of its deterministic cases and fails when a declared
path was never visited, so a new path without a case fails a test.  Outside a
recording a visit costs one attribute test.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

__all__ = ["KernelPaths"]


class KernelPaths:
    """The declared kernel paths of one backend, and the visits of the current recording.

    Parameters
    ----------
    names : Iterable of str
        Every path the backend can take.
    """

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(names)
        self._visited: set[str] | None = None
        self._lock = threading.Lock()

    def visit(self, name: str) -> None:
        """Note that the path ``name`` was taken (a declared name, else ``ValueError``)."""
        visited = self._visited
        if visited is None:
            return
        if name not in self.names:
            declared = sorted(self.names)
            raise ValueError(f"kernel path {name!r} is not declared; declared: {declared}")
        with self._lock:
            visited.add(name)

    @contextmanager
    def recording(self) -> Iterator[set[str]]:
        """Collect the paths visited inside the block into the set it yields."""
        visited: set[str] = set()
        previous, self._visited = self._visited, visited
        try:
            yield visited
        finally:
            self._visited = previous
