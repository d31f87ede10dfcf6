"""Spreading a kernel's tasks over threads: a pool of Python threads running nogil kernels.

A parallel launch splits its tasks ``0 .. n - 1`` into contiguous ranges, one per
thread, runs one range in the calling thread and the others in the pool, and
waits.  Which task writes which partial result does not depend on the split, so
the bits of every result are the same for any thread count.

numba's own threading layers are not used: nothing here breaks under ``fork``
(a child starts a fresh pool), and concurrent callers simply share the pool.
The thread count is ``numba.get_num_threads()`` of the calling thread, so
``NUMBA_NUM_THREADS`` and ``numba.set_num_threads`` (which the Dask backend uses to
share cores among chunk tasks) apply.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

__all__ = ["run_tasks"]

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _forget_pool_in_child() -> None:
    """A forked child has none of its parent's threads: it makes its own pool when needed."""
    global _pool, _pool_lock
    _pool = None
    _pool_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                workers = max(1, (os.cpu_count() or 1) - 1)
                _pool = ThreadPoolExecutor(workers, thread_name_prefix="l1backends")
    return _pool


def run_tasks(ntasks: int, threads: int, kernel: Callable[..., Any], *args: Any) -> None:
    """Run ``kernel(first, last, *args)`` over ``0 .. ntasks - 1`` in up to ``threads`` ranges.

    Parameters
    ----------
    ntasks : int
        Number of tasks.
    threads : int
        Threads to use at most (the calling thread included).
    kernel : callable
        A nogil numba function taking a task range first.
    *args
        Its other arguments.
    """
    groups = max(1, min(threads, ntasks))
    bounds = [ntasks * k // groups for k in range(groups + 1)]
    futures: list[Future[Any]] = []
    if groups > 1:
        pool = _executor()
        futures = [pool.submit(kernel, bounds[k], bounds[k + 1], *args) for k in range(1, groups)]
    kernel(bounds[0], bounds[1], *args)
    for future in futures:
        future.result()
