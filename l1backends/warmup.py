"""Compile the numba-CPU kernels ahead of time, in parallel processes: ``l1backends warmup``.

Kernels compile on first use, once per argument-type signature, and numba caches
them on disk; a process that finds them there loads them in milliseconds.  This
module makes one call of every kind the library and its conformance suite make
(each operation, reduction, layout class, weight, ``grad_output`` kind and
broadcast input; the serial and parallel drivers), split into groups that
compile disjoint kernels, each group in its own process, so that the signatures
are compiled once and in parallel.  The test suite runs it before its workers
start.
"""

from __future__ import annotations

import os
import queue
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

__all__ = ["GROUPS", "calls", "run", "wait_for", "warm_group"]

#: The groups of calls, each compiling its own kernels: losses, and gradients.
GROUPS = ("loss", "grad")
# Large enough for the parallel drivers (PARALLEL_MIN), small enough to take no time.
_PARALLEL = (1 << 20) + 3


def calls(group: str) -> Iterator[tuple[str, Callable[[], Any]]]:
    """``(label, call)`` for every kind of call of ``group`` ("loss" or "grad")."""
    import numpy as np

    import l1backends as l1

    rng = np.random.default_rng(0)
    operations = (
        ("l1_loss",) if group == "loss" else ("l1_loss_grad", "l1_loss_and_grad")
    )  # fmt: skip
    layouts = {
        "contiguous": lambda a: a,
        "strided": lambda a: a[..., ::-1],
    }
    for dtype in ("float32", "float64", "float16", "complex64"):
        # Parallel sizes run the same kernels in threads, except the flat drivers.
        for size in (6, _PARALLEL) if dtype in ("float32", "float64") else (6,):
            x = rng.standard_normal((2, size)).astype(dtype)
            y = rng.standard_normal((2, size)).astype(dtype)
            w = rng.random((2, size))
            for (layout, view), reduction, axis, weighted, operation in _product(
                layouts.items(), ("none", "mean", "sum"), (None, 1), (False, True), operations
            ):
                if reduction == "none" and axis is not None:
                    continue
                if size == _PARALLEL and (weighted or layout != "contiguous" or axis is not None):
                    continue
                kwargs: dict[str, Any] = {"axis": axis}
                if weighted:
                    kwargs["weight"] = view(w)
                function = getattr(l1, operation)
                label = f"{operation} {dtype} {layout} {reduction} axis={axis} w={weighted}"
                yield label, _bind(function, view(x), view(y), reduction, kwargs)
                if operation != "l1_loss":
                    g = 2.0 if reduction != "none" or axis is None else None
                    kwargs["grad_output"] = g if g is not None else np.ones((2, size), dtype)
                    yield (
                        label + " grad_output",
                        _bind(function, view(x), view(y), reduction, kwargs),
                    )
    yield from _special(group, rng)


def _special(group: str, rng: Any) -> Iterator[tuple[str, Callable[[], Any]]]:
    """Broadcast inputs, long split rows, Dask's partials, mixed dtypes, overflow."""
    import numpy as np

    import l1backends as l1
    from l1backends._backends.numba_cpu import backend
    from l1backends.semantics import make_plan

    long = rng.standard_normal((2, 40000))
    if group == "grad":
        column = rng.standard_normal((3, 1))
        wide = rng.standard_normal((3, 5))
        for reduction, weight in _product(("none", "mean", "sum"), (None, rng.random(5))):
            for function in (l1.l1_loss_grad, l1.l1_loss_and_grad):
                options = {"broadcast": True, "weight": weight}
                label = f"broadcast {reduction} w={weight is not None}"
                yield label, _bind(function, column, wide, reduction, options)
        weight = rng.random((2, 40000))
        for function in (l1.l1_loss_grad, l1.l1_loss_and_grad):
            options = {"axis": 1, "weight": weight}
            yield "weighted long rows", _bind(function, long, long[::-1], "mean", options)
        return
    for weight in (None, rng.random((2, 40000))):
        plan = make_plan(
            long.shape,
            "float64",
            long.shape,
            "float64",
            "sum",
            None if weight is None else weight.shape,
            None if weight is None else "float64",
            1,
        )
        yield (
            f"partials weighted={weight is not None}",
            _bind(backend.partials, plan, long, long, {"weight": weight}),
        )
    yield (
        "mixed",
        _bind(l1.l1_loss, np.arange(6, dtype=np.int32), np.ones(6, np.float32), "mean", {}),
    )
    largest = np.finfo(np.float64).max
    yield "overflow", _bind(l1.l1_loss, np.full(3, largest), np.zeros(3), "mean", {})


def _product(*groups: Any) -> Iterator[tuple[Any, ...]]:
    import itertools

    return itertools.product(*groups)


def _bind(function: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    *positional, options = args
    return lambda: function(*positional, **options)


def warm_group(group: str, done: Any = None) -> tuple[int, list[str]]:
    """Make every call of ``group`` in this process; return the calls made and the signatures.

    ``done`` (a queue) receives one item per call, for the caller's progress bar.
    """
    from l1backends._backends.numba_cpu import _kernels as kernels

    count = 0
    for _, call in calls(group):
        call()
        count += 1
        if done is not None:
            done.put(1)
    signatures = [
        f"{name}{signature}"
        for name in kernels.__all__
        if hasattr(getattr(kernels, name), "signatures")
        for signature in getattr(kernels, name).signatures
    ]
    return count, signatures


def run(processes: int | None = None, progress: bool = True) -> tuple[int, int, float]:
    """Compile every kernel the library's calls need into numba's disk cache.

    Parameters
    ----------
    processes : int, optional
        Parallel processes (default: as many as :data:`GROUPS`, at most the CPU count).
    progress : bool
        Draw a progress bar on stderr.

    Returns
    -------
    tuple of (int, int, float)
        Calls made, distinct kernel signatures compiled or loaded, seconds taken.
    """
    import multiprocessing

    start = time.perf_counter()
    total = sum(1 for group in GROUPS for _ in calls(group))
    workers = processes or max(1, min(len(GROUPS), os.cpu_count() or 1))
    context = multiprocessing.get_context("spawn")  # no fork of a process that ran kernels
    with context.Manager() as manager, ProcessPoolExecutor(workers, mp_context=context) as pool:
        done = manager.Queue()
        futures = [pool.submit(warm_group, group, done) for group in GROUPS]
        results = wait_for(futures, done, total, progress, start)
    signatures = {name for _, names in results for name in names}
    return sum(count for count, _ in results), len(signatures), time.perf_counter() - start


def wait_for(
    futures: list[Future], done: Any, total: int, progress: bool, start: float
) -> list[Any]:
    """The futures' results, drawing progress as ``done`` receives the ``total`` calls.

    A worker that fails sends no more progress: its error is raised as soon as it is
    known, instead of waiting for calls that will never come.
    """
    finished = 0
    while finished < total:
        try:
            done.get(timeout=0.2)
        except queue.Empty:
            for future in futures:
                if future.done() and future.exception() is not None:
                    future.result()  # raises the worker's error
            if all(future.done() for future in futures):
                break
            continue
        finished += 1
        if progress:
            _bar(finished, total, time.perf_counter() - start)
    return [future.result() for future in futures]


def _bar(done: int, total: int, elapsed: float) -> None:
    width = 30
    filled = width * done // total
    if filled == width * (done - 1) // total and done != total:
        return  # redraw only when the bar grows
    bar = "#" * filled + "-" * (width - filled)
    end = "\n" if done == total else ""
    print(f"\r[{bar}] {done}/{total} calls {elapsed:6.1f} s", end=end, file=sys.stderr, flush=True)
