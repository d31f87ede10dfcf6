"""GPU benchmark: achieved memory bandwidth of the CUDA backends, timed with CUDA events.

Run as ``l1backends bench --gpu [--n N] [--dtype float32] [--peak-tbs 3.0]``
(``l1backends.bench.main`` imports this module only when ``--gpu`` is given).
The default size, 2**28 float32 elements (1 GiB per array), is far above an
H100's 50 MB L2, so every pass streams from HBM.  Bandwidth counts the bytes a
perfect kernel must move: both inputs for ``mean``, plus the gradient written
for ``loss_and_grad``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["run"]

# Targets from the numba-cuda issue, as fractions of --peak-tbs.
TARGETS = {"mean": 0.85, "loss_and_grad": 0.80}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="l1backends bench --gpu", description=__doc__)
    parser.add_argument("--n", type=int, default=2**28, help="elements per array (default 2**28)")
    parser.add_argument("--dtype", default="float32", choices=["float16", "float32", "float64"])
    parser.add_argument(
        "--peak-tbs", type=float, default=3.0, help="reachable peak, TB/s (default 3.0)"
    )
    parser.add_argument(
        "--repeat", type=int, default=20, help="timed repetitions (median reported)"
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed repetitions first")
    return parser


def _time(cuda: Any, stream: Any, body: Callable[[], object], warmup: int, repeat: int) -> float:
    """Median seconds of ``body`` between two CUDA events on ``stream``."""
    for _ in range(warmup):
        body()
    stream.synchronize()
    times = []
    for _ in range(repeat):
        start, stop = cuda.event(), cuda.event()
        start.record(stream)
        body()
        stop.record(stream)
        stop.synchronize()
        times.append(cuda.event_elapsed_time(start, stop) / 1e3)
    times.sort()
    return times[len(times) // 2]


def _row(label: str, seconds: float, nbytes: int, peak: float, target: float | None) -> str:
    achieved = nbytes / seconds / 1e12
    share = achieved / peak
    verdict = ""
    if target is not None:
        verdict = f"  target {target:.0%}: {'met' if share >= target else 'MISSED'}"
    return f"{label:<44} {seconds * 1e3:9.3f} ms {achieved:7.3f} TB/s {share:7.1%}{verdict}"


def run(argv: list[str]) -> int:
    """Run the GPU benchmark; return the process exit status.

    Parameters
    ----------
    argv : list of str
        Command-line arguments after ``--gpu``.

    Returns
    -------
    int
        0 on success, 2 when no GPU is usable (the reason is printed).
    """
    args = _parser().parse_args(argv)
    try:
        from numba import cuda
    except ImportError as error:
        print(f"GPU benchmark skipped: numba-cuda is not installed ({error})", file=sys.stderr)
        return 2
    if cuda.config.ENABLE_CUDASIM:
        print(
            "GPU benchmark skipped: NUMBA_ENABLE_CUDASIM=1 selects the CPU simulator",
            file=sys.stderr,
        )
        return 2
    from .._backends.numba_cuda import probe

    reason = probe()
    if reason is not None:
        print(f"GPU benchmark skipped: {reason}", file=sys.stderr)
        return 2

    import numpy as np

    import l1backends as l1

    device = cuda.get_current_device()
    print(
        f"device: {device.name.decode() if isinstance(device.name, bytes) else device.name}, "
        f"compute capability {device.compute_capability}; n = {args.n} {args.dtype}; "
        f"peak {args.peak_tbs} TB/s"
    )
    itemsize = np.dtype(args.dtype).itemsize
    read_bytes = 2 * args.n * itemsize
    grad_bytes = 3 * args.n * itemsize
    stream = cuda.default_stream()
    rng = np.random.default_rng(0)
    host_x = rng.standard_normal(args.n, dtype=np.float32).astype(args.dtype)
    host_y = rng.standard_normal(args.n, dtype=np.float32).astype(args.dtype)
    x, y = cuda.to_device(host_x, stream=stream), cuda.to_device(host_y, stream=stream)
    del host_x, host_y

    def timed(body: Callable[[], object]) -> float:
        return _time(cuda, stream, body, args.warmup, args.repeat)

    peak = args.peak_tbs
    print(f"{'case':<44} {'time':>12} {'bandwidth':>12} {'of peak':>8}")
    print(
        _row("numba-cuda mean", timed(lambda: l1.l1_loss(x, y)), read_bytes, peak, TARGETS["mean"])
    )
    print(_row(
        "numba-cuda loss_and_grad (mean)",
        timed(lambda: l1.l1_loss_and_grad(x, y)), grad_bytes, peak, TARGETS["loss_and_grad"],
    ))  # fmt: skip
    try:
        import cupy
    except ImportError:
        print("cupy is not installed: no CuPy comparison")
        return 0
    try:
        cx, cy = cupy.asarray(x), cupy.asarray(y)  # zero-copy views of the same buffers
        cupy_stream = cupy.cuda.ExternalStream(stream.handle.value or 0)
        with cupy_stream:
            rows = [
                ("cupy backend mean", lambda: l1.l1_loss(cx, cy), read_bytes, TARGETS["mean"]),
                ("cupy backend loss_and_grad (mean)", lambda: l1.l1_loss_and_grad(cx, cy),
                 grad_bytes, TARGETS["loss_and_grad"]),
                ("cupy.mean(cupy.abs(x - y))", lambda: cupy.mean(cupy.abs(cx - cy)),
                 read_bytes, None),
            ]  # fmt: skip
            for label, body, nbytes, target in rows:
                print(_row(label, timed(body), nbytes, peak, target))
    except Exception as error:  # CuPy present but unusable: report it, keep the numba figures
        print(f"CuPy comparison skipped: {type(error).__name__}: {error}")
    return 0
