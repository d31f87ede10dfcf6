"""The serial/parallel threshold sweep of the numba-CPU backend (``l1backends bench --threshold``).

Below ``PARALLEL_MIN`` elements (``GENERAL_PARALLEL_MIN`` for the general kernel,
``PLAIN_PARALLEL_MIN`` for its plain passes) a call runs in the calling thread
alone; from it on, its chunks are spread over ``numba.get_num_threads()``
threads.  This sweep lowers the thresholds to 0 for its duration, so that every
call asks numba for its thread count, and times float32 calls over sizes 2**12 to
2**22 (the flat kernels' mean, "none" and ``loss_and_grad``, a stepped mean that
the general kernel serves and a stepped "none" that its plain pass serves) with
``numba.set_num_threads(1)`` against all threads, the two alternated
round-robin.  The crossover of an operation is the smallest size from which the
threads are faster at every size measured: the threshold that operation wants.
Writes a table (stdout), a JSON file and a plot of the speed-up against size.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from .cpu import Progress, machine, write_report

__all__ = ["crossover", "run"]

# The flat kernels' operations, a stepped mean that the general kernel serves, and a
# stepped "none" that the general kernel's plain pass serves.
OPERATIONS = ("mean", "none", "loss_and_grad", "mean step 2", "none step 2")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="l1backends bench --threshold",
        description="Sweep the numba-CPU serial/parallel threshold: 1 thread against all.",
    )
    parser.add_argument("--threshold", action="store_true", help="select this benchmark")
    parser.add_argument(
        "--exponents", type=int, nargs="+", default=list(range(12, 23)),
        help="sizes 2**k, float32 (default: k = 12 .. 22)",
    )  # fmt: skip
    parser.add_argument("--repeat", type=int, default=15, help="best of this many timings")
    parser.add_argument("--json", default="bench-threshold.json", help="where to write results")
    parser.add_argument("--plot", default="bench-threshold.png", help="where to draw the plot")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


@contextmanager
def _threshold(value: int) -> Iterator[None]:
    """Set the backend's thresholds (in every module that reads them) for a block."""
    from .._backends.numba_cpu import _backend, _general

    saved = _general.PARALLEL_MIN, _general.GENERAL_PARALLEL_MIN, _general.PLAIN_PARALLEL_MIN
    _general.PARALLEL_MIN = _backend.PARALLEL_MIN = value
    _general.GENERAL_PARALLEL_MIN = _general.PLAIN_PARALLEL_MIN = value
    try:
        yield
    finally:
        _general.PARALLEL_MIN, _general.GENERAL_PARALLEL_MIN, _general.PLAIN_PARALLEL_MIN = saved
        _backend.PARALLEL_MIN = saved[0]


def _calls(x: np.ndarray, y: np.ndarray) -> dict[str, Callable[[], Any]]:
    import l1backends as l1

    stepped_x, stepped_y = np.repeat(x, 2)[::2], np.repeat(y, 2)[::2]
    return {
        "mean": lambda: l1.l1_loss(x, y),
        "none": lambda: l1.l1_loss(x, y, "none"),
        "loss_and_grad": lambda: l1.l1_loss_and_grad(x, y),
        "mean step 2": lambda: l1.l1_loss(stepped_x, stepped_y),
        "none step 2": lambda: l1.l1_loss(stepped_x, stepped_y, "none"),
    }


def _best_pair(call: Callable[[], Any], threads: tuple[int, int], repeat: int) -> list[float]:
    """Best-of-``repeat`` seconds per call with each thread count, alternated round-robin."""
    import numba

    counts = []
    for count in threads:
        numba.set_num_threads(count)
        call()
        start = time.perf_counter()
        call()
        counts.append(max(1, int(2e-3 / max(time.perf_counter() - start, 1e-9))))
    best = [float("inf")] * len(threads)
    for _ in range(max(repeat, 1)):
        for index, (count, number) in enumerate(zip(threads, counts, strict=True)):
            numba.set_num_threads(count)
            start = time.perf_counter()
            for _ in range(number):
                call()
            best[index] = min(best[index], (time.perf_counter() - start) / number)
    return best


def crossover(rows: list[dict[str, Any]]) -> int | None:
    """The smallest size from which the threads win at every larger size, or None.

    Parameters
    ----------
    rows : list of dict
        One operation's results, each with ``n`` and ``speedup`` (serial / parallel).

    Returns
    -------
    int or None
        That size, or None when the threads lose at the largest size.
    """
    found = None
    for row in sorted(rows, key=lambda r: -r["n"]):
        if row["speedup"] <= 1.0:
            break
        found = row["n"]
    return found


def _plot(results: list[dict[str, Any]], current: int, path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, ax = plt.subplots(figsize=(7, 4))
    for operation in OPERATIONS:
        points = sorted((r["n"], r["speedup"]) for r in results if r["operation"] == operation)
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=operation)
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.axvline(current, color="grey", linestyle="--", linewidth=0.8, label="PARALLEL_MIN")
    ax.set(xscale="log", xlabel="float32 elements", ylabel="1 thread / all threads (time)")
    ax.set_title("numba-cpu: serial/parallel crossover")
    ax.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def _table(results: list[dict[str, Any]], crossovers: dict[str, int | None], all_threads: int):
    lines = [
        f"{'n':>9} {'operation':14} {'1 thread':>11} {f'{all_threads} threads':>11} {'speed-up':>9}"
    ]
    for row in results:
        lines.append(
            f"{row['n']:>9} {row['operation']:14} {row['serial_seconds'] * 1e6:9.1f}µs "
            f"{row['parallel_seconds'] * 1e6:9.1f}µs {row['speedup']:9.2f}"
        )
    lines.append("")
    for operation, size in crossovers.items():
        shown = "never (threads lose at the largest size)" if size is None else f"n = {size}"
        lines.append(f"crossover {operation:14} {shown}")
    return "\n".join(lines)


def run(argv: list[str] | None) -> int:
    """Run the threshold sweep with command-line arguments ``argv``; return the exit status.

    Parameters
    ----------
    argv : list of str or None
        The arguments; options of other benchmark modes are ignored.

    Returns
    -------
    int
        0 on success.
    """
    options, _ = _parser().parse_known_args(argv)
    import numba

    from .._backends.numba_cpu import _general

    current, general = _general.PARALLEL_MIN, _general.GENERAL_PARALLEL_MIN
    plain = _general.PLAIN_PARALLEL_MIN
    all_threads = int(getattr(numba.config, "NUMBA_NUM_THREADS", 1))  # set from the environment
    before = numba.get_num_threads()
    sizes = [2**k for k in options.exponents]
    progress = Progress(len(sizes) * len(OPERATIONS), not options.quiet)
    rng = np.random.default_rng(0)
    results: list[dict[str, Any]] = []
    try:
        with _threshold(0):
            for n in sizes:
                x = rng.standard_normal(n, dtype=np.float32)
                y = rng.standard_normal(n, dtype=np.float32)
                for operation, call in _calls(x, y).items():
                    serial, parallel = _best_pair(call, (1, all_threads), options.repeat)
                    results.append(
                        {"operation": operation, "n": n, "serial_seconds": serial,
                         "parallel_seconds": parallel, "speedup": serial / parallel}
                    )  # fmt: skip
                    progress.step(f"n=2**{n.bit_length() - 1} {operation}")
    finally:
        numba.set_num_threads(before)
    crossovers = {
        operation: crossover([r for r in results if r["operation"] == operation])
        for operation in OPERATIONS
    }
    print(_table(results, crossovers, all_threads))
    print(
        f"PARALLEL_MIN (flat kernels) is 2**{current.bit_length() - 1}, "
        f"GENERAL_PARALLEL_MIN (general kernel) is 2**{general.bit_length() - 1}, "
        f"PLAIN_PARALLEL_MIN (its plain passes) is 2**{plain.bit_length() - 1}"
    )
    report = {
        "machine": machine(),
        "dtype": "float32",
        "threads": all_threads,
        "parallel_min": current,
        "general_parallel_min": general,
        "plain_parallel_min": plain,
        "results": results,
        "crossover": crossovers,
    }
    write_report(report, options, lambda: _plot(results, current, options.plot))
    return 0
