"""The command line: ``python -m l1backends {info,example,warmup,check,bench}``."""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import sys
from collections.abc import Sequence

import l1backends as l1

_LIBRARIES = (
    "numpy",
    "array-api-compat",
    "numba",
    "numba-cuda",
    "cuda-bindings",
    "cupy-cuda12x",
    "cupy-cuda13x",
    "dask",
    "distributed",
    "array-api-strict",
    "torch",
    "jax",
)


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _runtime_details(name: str) -> str | None:
    """Threading layer or devices of an available backend, where relevant."""
    if name == "numba-cpu":
        import numba

        threads = numba.get_num_threads()
        return f"{threads} threads (Python threads over nogil kernels; no numba threading layer)"
    if name == "numba-cuda":
        import numba
        from numba import cuda

        if getattr(numba.config, "ENABLE_CUDASIM", 0):
            return "CUDA simulator (NUMBA_ENABLE_CUDASIM=1)"
        return ", ".join(str(device.name) for device in cuda.gpus) or "no devices"
    if name == "cupy":
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
        return f"{count} device(s)"
    return None


def info() -> int:
    """Print the registry: backends, the types they serve, availability, versions."""
    print(f"l1backends {l1.__version__} on Python {platform.python_version()} ({sys.platform})")
    print("libraries: " + ", ".join(f"{lib} {_version(lib) or '-'}" for lib in _LIBRARIES))
    default, problem = l1.default_backend()
    print(f"default backend ({l1.BACKEND_ENV_VAR}): {default or 'dispatch by type'}")
    if problem:
        print(f"  WARNING: {problem}")
    print()
    for row in l1.backends():
        status = "available" if row.available else "unavailable"
        print(f"{row.name}: {status}")
        print(f"  serves: {', '.join(row.array_types + row.spec.protocols) or '-'}")
        if row.reason:
            print(f"  reason: {row.reason}")
        else:
            try:
                details = _runtime_details(row.name)
            except Exception as error:  # info must report, never crash
                details = f"details unavailable: {type(error).__name__}: {error}"
            if details:
                print(f"  runtime: {details}")
        caps = row.capabilities
        bounds = ", ".join(f"{dtype} {caps.ulps[dtype]:g}" for dtype in caps.dtypes)
        print(f"  dtypes (ulp bound): {bounds}; deterministic: {caps.deterministic}")
    return 0


def example() -> int:
    """Run a small worked example and show which backend served it."""
    import logging

    import numpy as np

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("  [dispatch] %(message)s"))
    dispatch_log = logging.getLogger("l1backends.dispatch")
    dispatch_log.addHandler(handler)
    dispatch_log.setLevel(logging.DEBUG)
    try:
        prediction = np.array([[0.5, 2.0], [1.0, -1.0], [3.0, 3.0]], dtype=np.float32)
        target = np.array([[1.0, 2.0], [0.0, 1.0], [2.5, 3.0]], dtype=np.float32)
        print(f"prediction =\n{prediction}\ntarget =\n{target}")
        print("l1_loss(prediction, target):")
        print(f"  = {l1.l1_loss(prediction, target)!r}")
        print("l1_loss(prediction, target, 'mean', axis=0):  # per output column")
        print(f"  = {l1.l1_loss(prediction, target, 'mean', axis=0)!r}")
        print("l1_loss_and_grad(prediction, target, 'sum'):")
        loss, grad = l1.l1_loss_and_grad(prediction, target, "sum")
        print(f"  loss = {loss!r}\n  grad =\n{grad}")
    finally:
        dispatch_log.removeHandler(handler)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="l1backends", description="L1 loss backends: registry, examples, tests, benchmarks."
    )
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("info", help="show the backends, what they serve and whether they run here")
    commands.add_parser("example", help="run a worked example")
    commands.add_parser(
        "warmup",
        help="compile every numba-cpu kernel into numba's disk cache, in parallel processes",
    )
    check = commands.add_parser(
        "check",
        help="run the conformance suite against backends (needs the 'test' extra)",
        description="Extra arguments after the options are passed to pytest.",
    )
    check.add_argument(
        "--backend",
        action="append",
        help="backend to check (repeatable); default: every registered backend",
    )
    commands.add_parser(
        "bench", help="run the benchmarks (python -m l1backends bench --help)", add_help=False
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m l1backends`` and the ``l1backends`` script.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments; ``sys.argv[1:]`` by default.

    Returns
    -------
    int
        The exit status.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        from l1backends.bench import main as bench_main

        return bench_main(argv[1:])
    parser = _parser()
    arguments, extra = parser.parse_known_args(argv)
    if arguments.command == "check":
        from l1backends.conformance import run as check

        return check(arguments.backend, extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if arguments.command == "example":
        return example()
    if arguments.command == "warmup":
        from l1backends.warmup import run as warm

        calls, variants, elapsed = warm()
        print(
            f"compiled or loaded {variants} numba-cpu kernel variants for {calls} calls "
            f"in {elapsed:.1f} s"
        )
        return 0
    if arguments.command in (None, "info"):
        return info()
    return 0


if __name__ == "__main__":
    sys.exit(main())
