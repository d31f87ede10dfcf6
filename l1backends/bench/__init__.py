"""Benchmarks of l1backends: ``python benchmarks/bench.py`` or ``l1backends bench``.

The default mode times the numba-CPU backend against the memory-bandwidth floor,
NumPy, PyTorch and JAX in one process; ``--gpu``, ``--dask`` and ``--frameworks``
run the GPU, Dask and PyTorch/JAX benchmarks instead, ``--threshold`` sweeps the
numba-CPU serial/parallel threshold, and ``--layouts`` times every general-layout
path against NumPy.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The command-line options shared by every benchmark mode."""
    parser = argparse.ArgumentParser(
        prog="l1backends bench", description="Time the L1 loss against its peers."
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--gpu", action="store_true", help="run the GPU benchmark")
    mode.add_argument("--dask", action="store_true", help="run the Dask benchmark")
    mode.add_argument(
        "--frameworks",
        action="store_true",
        help="run the PyTorch/JAX benchmark (l1backends on tensors and JAX arrays)",
    )
    mode.add_argument(
        "--threshold", action="store_true", help="sweep the numba-cpu serial/parallel threshold"
    )
    mode.add_argument(
        "--layouts", action="store_true", help="time the general-layout paths against NumPy"
    )
    parser.add_argument(
        "--sizes", type=float, nargs="+", default=[1e3, 1e4, 1e5, 1e6, 1e7, 5e7],
        help="element counts (default: 1e3 to 5e7)",
    )  # fmt: skip
    parser.add_argument(
        "--dtypes", nargs="+", default=["float32", "float64"], choices=["float32", "float64"]
    )
    parser.add_argument("--repeat", type=int, default=7, help="best of this many timings")
    parser.add_argument("--json", default="bench-cpu.json", help="where to write the results")
    parser.add_argument("--plot", default="bench-cpu.png", help="where to draw the plot")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    parser.add_argument("--no-peers", action="store_true", help="skip PyTorch and JAX")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="also time first calls in fresh processes with an empty numba cache",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark selected by ``argv`` and return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    options, _ = build_parser().parse_known_args(argv)
    # The other modes take their own options: everything but the mode flag.
    rest = [argument for argument in argv if argument not in ("--gpu", "--dask", "--frameworks")]
    if options.gpu:
        from . import gpu

        return gpu.run(rest)
    if options.dask:
        from . import dask

        return dask.run(rest)
    if options.frameworks:
        from . import frameworks

        return frameworks.run(rest)
    if options.threshold:
        from . import threshold

        return threshold.run(argv)
    if options.layouts:
        from . import layouts

        return layouts.run(argv)
    from . import cpu

    return cpu.run(argv)
