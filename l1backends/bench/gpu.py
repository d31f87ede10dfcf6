"""GPU benchmark: achieved memory bandwidth of the CUDA backends, timed with CUDA events.

Run as ``l1backends bench --gpu [--n N] [--dtype float32] [--peak-tbs 3.0] [--calls 10]``
(``l1backends.bench.main`` imports this module only when ``--gpu`` is given).
The default size, 2**28 float32 elements (1 GiB per array), is far above an
H100's 50 MB L2, so every pass streams from HBM.

Each figure times ``--calls`` (at least 10) back-to-back calls between one pair of
CUDA events, so the host's work for one call (validation, planning, launches) hides
behind the device's work for the others; the host's time to issue one call is
reported beside it.  Bandwidth counts the bytes a perfect kernel must move: both
inputs for ``mean``, plus the gradient written for ``loss_and_grad``.  On the same
buffers it times the references: a device-to-device copy (the bandwidth one can
reach), ``cupy.mean(cupy.abs(x - y))``, and a CUB-backed ``cupy.sum`` of a
precomputed ``|x - y|`` (a reduction that only reads).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Any

__all__ = ["Timing", "run", "time_calls"]

# Targets from the GPU issue, as fractions of --peak-tbs.
TARGETS = {"mean": 0.85, "loss_and_grad": 0.80}
MIN_CALLS = 10


def _calls(text: str) -> int:
    value = int(text)
    if value < MIN_CALLS:
        raise argparse.ArgumentTypeError(f"--calls must be at least {MIN_CALLS}, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="l1backends bench --gpu", description=__doc__)
    parser.add_argument("--n", type=int, default=2**28, help="elements per array (default 2**28)")
    parser.add_argument("--dtype", default="float32", choices=["float16", "float32", "float64"])
    parser.add_argument(
        "--peak-tbs", type=float, default=3.0, help="reachable peak, TB/s (default 3.0)"
    )
    parser.add_argument(
        "--calls", type=_calls, default=MIN_CALLS,
        help=f"back-to-back calls per event pair (at least {MIN_CALLS})",
    )  # fmt: skip
    parser.add_argument(
        "--repeat", type=int, default=20, help="timed event pairs (median reported)"
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    return parser


@dataclass(frozen=True)
class Timing:
    """Seconds per call: on the device (between events) and on the host (to issue it)."""

    device: float
    host: float


def time_calls(
    cuda: Any, stream: Any, body: Callable[[], object], calls: int, repeat: int, warmup: int
) -> Timing:
    """Median seconds per call of ``body``, ``calls`` calls between each pair of events.

    Parameters
    ----------
    cuda : module
        ``numba.cuda`` (``event()``, ``event_elapsed_time``), or a stand-in.
    stream : stream
        Where the events are recorded (the calls' stream).
    body : callable
        One call.
    calls, repeat, warmup : int
        Calls per event pair, event pairs, and untimed calls first.

    Returns
    -------
    Timing
        Device time per call (event time / calls) and host time to issue one call.
    """
    for _ in range(warmup):
        body()
    stream.synchronize()
    device, host = [], []
    for _ in range(repeat):
        start, stop = cuda.event(), cuda.event()
        start.record(stream)
        began = perf_counter()
        for _ in range(calls):
            body()
        issued = perf_counter()
        stop.record(stream)
        stop.synchronize()
        device.append(cuda.event_elapsed_time(start, stop) / 1e3 / calls)
        host.append((issued - began) / calls)
    return Timing(statistics.median(device), statistics.median(host))


def _row(label: str, timing: Timing, nbytes: int, peak: float, reference: float | None,
         target: float | None) -> str:  # fmt: skip
    achieved = nbytes / timing.device / 1e12
    share = achieved / peak
    versus = "" if reference is None else f" {achieved / reference:6.1%} of copy"
    verdict = ""
    if target is not None:
        verdict = f"  target {target:.0%}: {'met' if share >= target else 'MISSED'}"
    return (
        f"{label:<40} {timing.device * 1e3:9.3f} ms {timing.host * 1e6:8.1f} us "
        f"{achieved:7.3f} TB/s {share:7.1%}{versus}{verdict}"
    )


def _references(cupy: Any, cx: Any, cy: Any, itemsize: int, n: int) -> list[tuple]:
    """The CuPy references on the same buffers: (label, body, bytes moved, target)."""
    out = cupy.empty_like(cx)
    difference = cupy.abs(cx - cy)
    from cupy._core import _accelerator

    def cub_sum() -> object:
        # CuPy sends a full sum to CUB's device reduction when CUB is a routine accelerator.
        previous = _accelerator.get_routine_accelerators()
        _accelerator.set_routine_accelerators(["cub"])
        try:
            return cupy.sum(difference)
        finally:
            _accelerator.set_routine_accelerators(previous)

    return [
        ("copy (cupy.copyto)", lambda: cupy.copyto(out, cx), 2 * n * itemsize, None),
        ("cupy.mean(cupy.abs(x - y))", lambda: cupy.mean(cupy.abs(cx - cy)), 2 * n * itemsize,
         None),
        ("cupy.sum(|x - y|), CUB", cub_sum, n * itemsize, None),
    ]  # fmt: skip


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
    if cuda.config.ENABLE_CUDASIM:  # type: ignore[attr-defined]  # mypy reads simulator stubs
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
    name = device.name.decode() if isinstance(device.name, bytes) else device.name
    print(
        f"device: {name}, compute capability {device.compute_capability}; n = {args.n} "
        f"{args.dtype}; peak {args.peak_tbs} TB/s; {args.calls} calls per event pair"
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
    copy_target = cuda.device_array_like(x, stream=stream)

    def timed(body: Callable[[], object]) -> Timing:
        return time_calls(cuda, stream, body, args.calls, args.repeat, args.warmup)

    peak = args.peak_tbs
    copy = timed(lambda: copy_target.copy_to_device(x, stream=stream))
    reference = 2 * args.n * itemsize / copy.device / 1e12
    print(f"{'case':<40} {'time/call':>12} {'host/call':>11} {'bandwidth':>12} {'of peak':>8}")
    print(_row("copy (device to device)", copy, 2 * args.n * itemsize, peak, None, None))
    rows: list[tuple] = [
        ("numba-cuda mean", lambda: l1.l1_loss(x, y), read_bytes, TARGETS["mean"]),
        ("numba-cuda loss_and_grad (mean)", lambda: l1.l1_loss_and_grad(x, y), grad_bytes,
         TARGETS["loss_and_grad"]),
    ]  # fmt: skip
    for label, body, nbytes, target in rows:
        print(_row(label, timed(body), nbytes, peak, reference, target))
    try:
        import cupy
    except ImportError:
        print("cupy is not installed: no CuPy comparison")
        return 0
    try:
        cx, cy = cupy.asarray(x), cupy.asarray(y)  # zero-copy views of the same buffers
        with cupy.cuda.ExternalStream(stream.handle.value or 0):
            cupy_rows = [
                ("cupy backend mean", lambda: l1.l1_loss(cx, cy), read_bytes, TARGETS["mean"]),
                ("cupy backend loss_and_grad (mean)", lambda: l1.l1_loss_and_grad(cx, cy),
                 grad_bytes, TARGETS["loss_and_grad"]),
                *_references(cupy, cx, cy, itemsize, args.n),
            ]  # fmt: skip
            for label, body, nbytes, target in cupy_rows:
                print(_row(label, timed(body), nbytes, peak, reference, target))
    except Exception as error:  # CuPy present but unusable: report it, keep the numba figures
        print(f"CuPy comparison skipped: {type(error).__name__}: {error}")
    return 0
