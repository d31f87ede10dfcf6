"""The Dask benchmark: the "dask" backend against the single-machine NumPy backend.

``l1backends bench --dask`` times the float32 mean of ``|x - y|`` for n = 5e7
elements split into 8 chunks on dask's threaded scheduler, against the backend
that serves the same NumPy arrays on one machine (numba-cpu), and prints the
ratio (the target is at most 1.5).  A scaling table then times the same data
split into 1, 2, 4, ... chunks.  Each Dask timing covers a whole call as a user
makes it: building the graph, then computing it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Callable
from typing import Any

import numpy as np

from .cpu import best_time

__all__ = ["run"]

TARGET_RATIO = 1.5


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="l1backends bench --dask",
        description="Time the Dask backend against the single-machine NumPy backend.",
    )
    parser.add_argument("--dask", action="store_true", help="select this benchmark")
    parser.add_argument(
        "--sizes", type=float, nargs="+", default=[5e7], help="element counts (default: 5e7)"
    )
    parser.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "float64"])
    parser.add_argument("--chunks", type=int, default=8, help="chunks of the main comparison")
    parser.add_argument(
        "--scaling", type=int, nargs="*", default=[1, 2, 4, 8, 16, 32],
        help="chunk counts of the scaling table (none: skip it)",
    )  # fmt: skip
    parser.add_argument("--repeat", type=int, default=5, help="best of this many timings")
    parser.add_argument("--json", default="bench-dask.json", help="where to write the results")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def run(argv: list[str] | None) -> int:
    """Run the Dask benchmark with command-line arguments ``argv``; return the exit status.

    Parameters
    ----------
    argv : list of str or None
        The arguments (None: ``sys.argv[1:]``); options of other benchmark modes are ignored.

    Returns
    -------
    int
        0 on success.
    """
    options, _ = _parser().parse_known_args(argv)
    import dask
    import dask.array as da

    import l1backends as l1
    from l1backends.registry import registry

    def say(message: str) -> None:
        if not options.quiet:
            print(message, flush=True)

    results = []
    for dtype in options.dtypes:
        for size in options.sizes:
            n = int(size)
            rng = np.random.default_rng(0)
            x = rng.standard_normal(n, dtype=np.float32).astype(dtype, copy=False)
            y = rng.standard_normal(n, dtype=np.float32).astype(dtype, copy=False)
            single_name = registry.select((x, y), None, "bench").name

            def on_numpy(x: np.ndarray = x, y: np.ndarray = y) -> Any:
                return l1.l1_loss(x, y)

            single = best_time(on_numpy, options.repeat)

            def on_dask(chunks: int, x: np.ndarray = x, y: np.ndarray = y) -> Callable[[], Any]:
                size = -(-len(x) // chunks)
                xd, yd = da.from_array(x, chunks=size), da.from_array(y, chunks=size)
                return lambda: l1.l1_loss(xd, yd).compute(scheduler="threads")

            counts = sorted({options.chunks, *options.scaling})
            timings = {}
            for chunks in counts:
                timings[chunks] = best_time(on_dask(chunks), options.repeat)
                say(f"  {dtype} n={n:.0e} chunks={chunks:>3}: {timings[chunks] * 1e3:9.2f} ms")
            results.append(
                {
                    "dtype": dtype,
                    "n": n,
                    "single_machine_backend": single_name,
                    "single_machine_seconds": single,
                    "chunks": options.chunks,
                    "dask_seconds": timings[options.chunks],
                    "ratio": timings[options.chunks] / single,
                    "scaling": [
                        {"chunks": c, "seconds": t, "ratio": t / single} for c, t in timings.items()
                    ],
                }
            )

    print(f"\nDask backend, threaded scheduler ({dask.system.CPU_COUNT} threads), mean of |x-y|")
    for result in results:
        verdict = "meets" if result["ratio"] <= TARGET_RATIO else "misses"
        print(
            f"\n{result['dtype']} n={result['n']:.0e}: {result['single_machine_backend']} "
            f"{result['single_machine_seconds'] * 1e3:.2f} ms; dask in {result['chunks']} chunks "
            f"{result['dask_seconds'] * 1e3:.2f} ms: ratio {result['ratio']:.2f} "
            f"({verdict} the target <= {TARGET_RATIO})"
        )
        print(f"{'chunks':>8} {'ms':>10} {'ratio':>7}")
        for row in result["scaling"]:
            print(f"{row['chunks']:>8} {row['seconds'] * 1e3:>10.2f} {row['ratio']:>7.2f}")

    machine = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "dask": dask.__version__,
        "numpy": np.__version__,
    }
    with open(options.json, "w") as handle:
        json.dump({"machine": machine, "results": results}, handle, indent=2)
    print(f"\nwrote {options.json}")
    return 0
