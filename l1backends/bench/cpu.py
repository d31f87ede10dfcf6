"""The CPU benchmark: numba-CPU against the bandwidth floor, NumPy, PyTorch and JAX.

Everything is timed in one process, best of ``--repeat`` after a warm-up, so the
ratios compare like with like.  Writes a table (stdout), a JSON file and, when
matplotlib is installed, a PNG of throughput against size.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["Progress", "best_time", "best_times", "machine", "run", "write_report"]

# (operation, implementation) pairs whose ratios the table reports: numerator, denominator.
RATIOS = (
    ("mean", "numba-cpu", "floor read 2"),
    ("mean", "numpy", "numba-cpu"),
    ("mean", "torch", "numba-cpu"),
    ("mean", "jax.jit", "numba-cpu"),
    ("loss_and_grad", "numba-cpu", "floor read 2 write 1"),
    ("loss_and_grad", "numba-cpu", "floor read 2 write new"),
    ("loss_and_grad", "numba-cpu out=", "floor read 2 write 1"),
    ("loss_and_grad", "numpy", "numba-cpu"),
    ("loss_and_grad", "torch fwd+bwd", "numba-cpu"),
    ("loss_and_grad", "jax.value_and_grad", "numba-cpu"),
    ("none", "numba-cpu", "numpy abs(x-y)"),
    ("none", "numba-cpu", "floor read 2 write 1"),
    ("none", "numba-cpu", "floor read 2 write new"),
    ("none", "numba-cpu out=", "floor read 2 write 1"),
)
# First calls in a fresh process with an empty numba cache: (label, setup, call) as code.
COLD_CASES = (
    ("float32 mean, contiguous", "x = np.ones(1000, np.float32); y = x[::-1].copy()",
     "l1.l1_loss(x, y)"),
    ("float16 mean, Fortran-ordered view", "x = np.ones((40, 25), np.float16).T; y = x + 1",
     "l1.l1_loss(x, y)"),
    ("complex64 loss_and_grad, strided", "x = np.ones(2000, np.complex64)[::2]; y = x * 2",
     "l1.l1_loss_and_grad(x, y)"),
    ("int16 input, float64 target, axis=0", "x = np.ones((30, 4), np.int16); y = np.zeros(4)",
     "l1.l1_loss(x, y, axis=0, broadcast=True)"),
    ("float64 weighted grad, big-endian", "x = np.ones(64, '>f8'); y = x[::-1].copy()",
     "l1.l1_loss_grad(x, y, weight=np.ones(64))"),
)  # fmt: skip


class Progress:
    """A one-line progress bar on stderr."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.enabled = max(total, 1), 0, enabled
        self.start = time.perf_counter()

    def step(self, label: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        width = 30
        filled = width * self.done // self.total
        elapsed = time.perf_counter() - self.start
        bar = "#" * filled + "-" * (width - filled)
        sys.stderr.write(f"\r[{bar}] {self.done}/{self.total} {elapsed:6.1f}s {label[:40]:<40}")
        if self.done == self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _loop_count(function: Callable[[], Any]) -> int:
    """Calls per timing after two warm-up calls: enough that one timing lasts about 2 ms."""
    function()
    start = time.perf_counter()
    function()
    single = time.perf_counter() - start
    return max(1, int(2e-3 / max(single, 1e-9)))


def best_times(functions: list[Callable[[], Any]], repeat: int) -> list[float]:
    """Best-of-``repeat`` seconds per call of each function, short calls looped.

    The repeats go round-robin over the functions, so that a slow spell of this
    shared machine hits every implementation alike and the ratios stay fair.
    """
    counts = [_loop_count(function) for function in functions]
    best = [float("inf")] * len(functions)
    for _ in range(max(repeat, 1)):
        for index, (function, number) in enumerate(zip(functions, counts, strict=True)):
            start = time.perf_counter()
            for _ in range(number):
                function()
            best[index] = min(best[index], (time.perf_counter() - start) / number)
    return best


def best_time(function: Callable[[], Any], repeat: int) -> float:
    """Best-of-``repeat`` seconds per call of one function (see :func:`best_times`)."""
    return best_times([function], repeat)[0]


def _floors() -> tuple[Callable, Callable, Callable]:
    """numba kernels that only move the data: read two arrays; read two and write one.

    Writing comes in two floors: into an array allocated once, and into a fresh array
    per call.  A function that returns a new array (every loss and gradient here, and
    NumPy's, torch's and JAX's) pays for the operating system zeroing the new pages on
    first touch, which on this machine costs about as much as the write itself.
    """
    from numba import njit, prange

    # Summing in the input dtype with reassociation lets the loop vectorize fully: this
    # floor does nothing but stream both inputs (~25 GB/s here for float32 and float64).
    @njit(parallel=True, fastmath=True, cache=True)
    def read_two(x, y):  # pragma: no cover - compiled
        total = x.dtype.type(0)
        for i in prange(x.size):
            total += x[i] + y[i]
        return total

    @njit(parallel=True, cache=True)
    def read_two_write_one(x, y, out):  # pragma: no cover - compiled
        for i in prange(x.size):
            out[i] = x[i] - y[i]

    @njit(parallel=True, cache=True)
    def read_two_write_new(x, y):  # pragma: no cover - compiled
        out = np.empty_like(x)
        for i in prange(x.size):
            out[i] = x[i] - y[i]
        return out

    return read_two, read_two_write_one, read_two_write_new


def _implementations(x: np.ndarray, y: np.ndarray, peers: bool) -> list[tuple[str, str, Callable]]:
    """(operation, name, call) for every implementation available here."""
    import l1backends as l1

    read_two, read_two_write_one, read_two_write_new = _floors()
    out = np.empty_like(x)
    mine = np.empty_like(x)  # the buffer l1backends writes into, apart from the floor's

    def numpy_loss_and_grad() -> tuple[Any, Any]:
        difference = x - y
        return np.mean(np.abs(difference)), np.sign(difference) / x.size

    calls: list[tuple[str, str, Callable]] = [
        ("mean", "floor read 2", lambda: read_two(x, y)),
        ("mean", "numba-cpu", lambda: l1.l1_loss(x, y)),
        ("mean", "numpy", lambda: np.mean(np.abs(x - y))),
        ("none", "floor read 2 write 1", lambda: read_two_write_one(x, y, out)),
        ("none", "floor read 2 write new", lambda: read_two_write_new(x, y)),
        ("none", "numba-cpu", lambda: l1.l1_loss(x, y, "none")),
        ("none", "numba-cpu out=", lambda: l1.l1_loss(x, y, "none", out=mine)),
        ("none", "numpy abs(x-y)", lambda: np.abs(x - y)),
        ("loss_and_grad", "floor read 2 write 1", lambda: read_two_write_one(x, y, out)),
        ("loss_and_grad", "floor read 2 write new", lambda: read_two_write_new(x, y)),
        ("loss_and_grad", "numba-cpu", lambda: l1.l1_loss_and_grad(x, y)),
        ("loss_and_grad", "numba-cpu out=", lambda: l1.l1_loss_and_grad(x, y, out=mine)),
        ("loss_and_grad", "numpy", numpy_loss_and_grad),
    ]
    if peers:
        calls += _torch_calls(x, y) + _jax_calls(x, y)
    return calls


def _torch_calls(x: np.ndarray, y: np.ndarray) -> list[tuple[str, str, Callable]]:
    try:
        import torch
        import torch.nn.functional as F  # noqa: N812 (torch's own spelling)
    except ImportError:
        return []
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    leaf = tx.clone().requires_grad_(True)

    def forward_backward() -> None:
        leaf.grad = None
        F.l1_loss(leaf, ty).backward()

    return [
        ("mean", "torch", lambda: F.l1_loss(tx, ty)),
        ("loss_and_grad", "torch fwd+bwd", forward_backward),
    ]


def _jax_calls(x: np.ndarray, y: np.ndarray) -> list[tuple[str, str, Callable]]:
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return []
    if x.dtype == np.float64:
        jax.config.update("jax_enable_x64", True)
    jx, jy = jnp.asarray(x), jnp.asarray(y)

    def loss(a, b):
        return jnp.mean(jnp.abs(a - b))

    mean = jax.jit(loss)
    value_and_grad = jax.jit(jax.value_and_grad(loss))
    return [
        ("mean", "jax.jit", lambda: mean(jx, jy).block_until_ready()),
        (
            "loss_and_grad",
            "jax.value_and_grad",
            lambda: value_and_grad(jx, jy)[1].block_until_ready(),
        ),
    ]


def _dispatch_overhead(repeat: int) -> float:
    """Seconds per registry selection on a cache hit (two NumPy arrays)."""
    from l1backends.registry import registry

    arrays = (np.zeros(3), np.zeros(3))
    registry.select(arrays, None, "l1_loss")
    return best_time(lambda: registry.select(arrays, None, "l1_loss"), repeat)


def cold_starts() -> list[dict[str, Any]]:
    """Seconds to the first result of each of :data:`COLD_CASES`, each in a fresh process
    with an empty numba cache (imports included), as a new user's first call takes."""
    import subprocess
    import tempfile

    timings = []
    for label, setup, call in COLD_CASES:
        script = (
            "import time; start = time.perf_counter(); import numpy as np, l1backends as l1; "
            f"{setup}; {call}; print(time.perf_counter() - start)"
        )
        with tempfile.TemporaryDirectory() as cache:
            environment = dict(os.environ, NUMBA_CACHE_DIR=cache)
            completed = subprocess.run(
                [sys.executable, "-c", script],
                env=environment,
                capture_output=True,
                text=True,
                check=True,
            )
        timings.append({"case": label, "call": call, "seconds": float(completed.stdout)})
    return timings


def _table(results: list[dict[str, Any]], ratios: list[dict[str, Any]], dispatch: float) -> str:
    lines = [
        f"{'dtype':8} {'n':>10} {'operation':14} {'implementation':22} {'time':>11} {'GB/s':>7}"
    ]
    for row in results:
        lines.append(
            f"{row['dtype']:8} {row['n']:>10} {row['operation']:14} {row['implementation']:22} "
            f"{_seconds(row['seconds']):>11} {row['gbps']:7.1f}"
        )
    lines += ["", f"{'dtype':8} {'n':>10} {'ratio':62} {'value':>7}"]
    for ratio in ratios:
        text = f"{ratio['operation']}: {ratio['numerator']} / {ratio['denominator']}"
        lines.append(f"{ratio['dtype']:8} {ratio['n']:>10} {text:62} {ratio['value']:7.2f}")
    lines += ["", f"dispatch overhead (registry select, cache hit): {_seconds(dispatch)}"]
    return "\n".join(lines)


def _seconds(value: float) -> str:
    if value < 1e-3:
        return f"{value * 1e6:.2f} µs"
    return f"{value * 1e3:.3f} ms"


def _plot(results: list[dict[str, Any]], path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    keys = sorted({(r["dtype"], r["operation"]) for r in results})
    figure, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4), squeeze=False)
    for ax, (dtype, operation) in zip(axes[0], keys, strict=True):
        rows = [r for r in results if (r["dtype"], r["operation"]) == (dtype, operation)]
        for name in dict.fromkeys(r["implementation"] for r in rows):
            points = sorted((r["n"], r["gbps"]) for r in rows if r["implementation"] == name)
            ax.plot(*zip(*points, strict=True), marker="o", label=name)
        ax.set(
            xscale="log",
            xlabel="elements",
            ylabel="GB/s of inputs read",
            title=f"{operation} {dtype}",
        )
        ax.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def machine() -> dict[str, Any]:
    """What the benchmarks ran on: platform, processor, CPU count, Python and NumPy versions."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def write_report(report: dict[str, Any], options: Any, draw: Callable[[], bool]) -> None:
    """Write ``report`` to ``options.json`` and, unless ``options.no_plot``, ``draw`` the plot
    into ``options.plot`` (``draw`` says whether matplotlib was there to draw it)."""
    with open(options.json, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
    if not options.no_plot and draw():
        print(f"plot written to {options.plot}")
    print(f"results written to {options.json}")


def run(argv: list[str] | None = None) -> int:
    """Run the CPU benchmark; see ``l1backends.bench.build_parser`` for the options."""
    from . import build_parser

    options = build_parser().parse_args(argv)
    sizes = [int(s) for s in options.sizes]
    rng = np.random.default_rng(0)
    cases = [(dtype, n) for dtype in options.dtypes for n in sizes]
    peers = not options.no_peers
    per_case = len(_implementations(np.zeros(1), np.zeros(1), peers))
    progress = Progress(len(cases) * per_case + 1, not options.quiet)
    results: list[dict[str, Any]] = []
    for dtype, n in cases:
        x = rng.standard_normal(n).astype(dtype)
        y = rng.standard_normal(n).astype(dtype)
        calls = _implementations(x, y, peers)
        seconds = best_times([call for _, _, call in calls], options.repeat)
        for (operation, name, _), elapsed in zip(calls, seconds, strict=True):
            results.append(
                {"dtype": dtype, "n": n, "operation": operation, "implementation": name,
                 "seconds": elapsed, "gbps": 2 * x.nbytes / elapsed / 1e9}
            )  # fmt: skip
            progress.step(f"{dtype} n={n} {operation} {name}")
        del x, y
    dispatch = _dispatch_overhead(options.repeat)
    progress.step("dispatch")
    cold = cold_starts() if options.cold else []

    ratios = []
    times = {
        (r["dtype"], r["n"], r["operation"], r["implementation"]): r["seconds"] for r in results
    }
    for dtype, n in cases:
        for operation, numerator, denominator in RATIOS:
            top = times.get((dtype, n, operation, numerator))
            bottom = times.get((dtype, n, operation, denominator))
            if top is not None and bottom is not None:
                ratios.append(
                    {"dtype": dtype, "n": n, "operation": operation, "numerator": numerator,
                     "denominator": denominator, "value": top / bottom}
                )  # fmt: skip
    print(_table(results, ratios, dispatch))
    for row in cold:
        print(f"cold first call, {row['case']:40} {row['seconds']:6.2f} s")
    report = {
        "machine": machine(),
        "results": results,
        "ratios": ratios,
        "dispatch_seconds": dispatch,
        "cold_first_call": cold,
    }
    write_report(report, options, lambda: _plot(results, options.plot))
    return 0
