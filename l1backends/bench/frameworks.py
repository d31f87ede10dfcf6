"""The frameworks benchmark: l1backends on PyTorch tensors and JAX arrays against their own losses.

``l1backends bench --frameworks`` times, side by side in one process with repeats taken
round-robin (see :func:`.cpu.best_times`):

* ``torch mean``: ``l1_loss(x, y)`` on CPU tensors against ``F.l1_loss``;
* ``torch forward (grad)``: the same on a tensor that requires grad (autograd bookkeeping);
* ``torch fwd+bwd``: ``l1_loss(x, y).backward()`` against ``F.l1_loss(x, y).backward()``;
* ``jax value_and_grad``: ``jax.jit(jax.value_and_grad(l1_loss))`` against the same
  transform of ``jnp.mean(jnp.abs(a - b))``;
* ``generic mean numpy`` and ``generic mean torch``: the generic backend
  (``backend="array-api"``) against the naive ``mean(abs(x - y))`` in the same namespace.

It writes a table with each ratio's target, a JSON file and (with matplotlib) a plot of
throughput against size, like the CPU mode.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .cpu import Progress, _plot, _seconds, write_report

__all__ = ["TARGETS", "run"]

#: (operation, numerator, denominator, size, bound, kind): the issue's targets.  "at least"
#: ratios say how many times faster l1backends is; "at most" ratios bound its cost.
TARGETS = (
    ("torch mean", "F.l1_loss", "l1backends", 5e7, 5.0, "at least"),
    ("torch fwd+bwd", "F.l1_loss", "l1backends", 5e7, 4.0, "at least"),
    ("jax value_and_grad", "jnp.mean(abs)", "l1backends", 5e7, 1.0, "at least"),
    ("generic mean numpy", "l1backends array-api", "np.mean(abs)", 1e7, 3.0, "at most"),
    ("generic mean torch", "l1backends array-api", "torch.mean(abs)", 1e7, 3.0, "at most"),
)
#: (operation, implementation, size, bound in seconds): absolute targets.
TIME_TARGETS = (
    ("torch mean", "l1backends", 1e3, 10e-6),
    ("torch forward (grad)", "l1backends", 1e3, 10e-6),
)


def _loop_count(function: Callable[[], Any]) -> int:
    """Calls per timing: enough for about 5 ms, judged by the fastest of three calls.

    One slow first call (a descheduled thread on this shared machine) must not make
    every timing a single call.
    """
    function()
    fastest = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        function()
        fastest = min(fastest, time.perf_counter() - start)
    return max(1, int(5e-3 / max(fastest, 1e-9)))


def best_times(functions: list[Callable[[], Any]], repeat: int) -> list[float]:
    """Best-of-``repeat`` seconds per call of each function, repeats taken round-robin."""
    counts = [_loop_count(function) for function in functions]
    best = [float("inf")] * len(functions)
    for _ in range(max(repeat, 1)):
        for index, (function, number) in enumerate(zip(functions, counts, strict=True)):
            start = time.perf_counter()
            for _ in range(number):
                function()
            best[index] = min(best[index], (time.perf_counter() - start) / number)
    return best


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="l1backends bench --frameworks",
        description="Time l1backends on torch tensors and JAX arrays against their own losses.",
    )
    parser.add_argument("--frameworks", action="store_true", help="select this benchmark")
    parser.add_argument(
        "--sizes", type=float, nargs="+", default=[1e3, 1e5, 1e7, 5e7],
        help="element counts (default: 1e3 1e5 1e7 5e7)",
    )  # fmt: skip
    parser.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "float64"])
    parser.add_argument("--repeat", type=int, default=7, help="best of this many timings")
    parser.add_argument("--json", default="bench-frameworks.json", help="where to write results")
    parser.add_argument("--plot", default="bench-frameworks.png", help="where to draw the plot")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _torch_calls(x: np.ndarray, y: np.ndarray) -> list[tuple[str, str, Callable[[], Any]]]:
    try:
        import torch
        import torch.nn.functional as F  # noqa: N812 (torch's own spelling)
    except ImportError:
        return []
    import l1backends as l1

    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    ours_leaf = tx.clone().requires_grad_(True)
    their_leaf = tx.clone().requires_grad_(True)

    def ours_backward() -> None:
        ours_leaf.grad = None
        l1.l1_loss(ours_leaf, ty).backward()

    def their_backward() -> None:
        their_leaf.grad = None
        F.l1_loss(their_leaf, ty).backward()

    return [
        ("torch mean", "l1backends", lambda: l1.l1_loss(tx, ty)),
        ("torch mean", "F.l1_loss", lambda: F.l1_loss(tx, ty)),
        ("torch forward (grad)", "l1backends", lambda: l1.l1_loss(ours_leaf, ty)),
        ("torch forward (grad)", "F.l1_loss", lambda: F.l1_loss(their_leaf, ty)),
        ("torch fwd+bwd", "l1backends", ours_backward),
        ("torch fwd+bwd", "F.l1_loss", their_backward),
        ("generic mean torch", "l1backends array-api",
         lambda: l1.l1_loss(tx, ty, backend="array-api")),
        ("generic mean torch", "torch.mean(abs)", lambda: torch.mean(torch.abs(tx - ty))),
    ]  # fmt: skip


def _jax_calls(x: np.ndarray, y: np.ndarray) -> list[tuple[str, str, Callable[[], Any]]]:
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return []
    import l1backends as l1

    if x.dtype == np.float64:
        jax.config.update("jax_enable_x64", True)
    jx, jy = jnp.asarray(x), jnp.asarray(y)
    ours = jax.jit(jax.value_and_grad(lambda a, b: l1.l1_loss(a, b)))
    theirs = jax.jit(jax.value_and_grad(lambda a, b: jnp.mean(jnp.abs(a - b))))
    ours_mean = jax.jit(lambda a, b: l1.l1_loss(a, b))
    their_mean = jax.jit(lambda a, b: jnp.mean(jnp.abs(a - b)))
    return [
        ("jax value_and_grad", "l1backends", lambda: ours(jx, jy)[1].block_until_ready()),
        ("jax value_and_grad", "jnp.mean(abs)", lambda: theirs(jx, jy)[1].block_until_ready()),
        ("jax jit mean", "l1backends", lambda: ours_mean(jx, jy).block_until_ready()),
        ("jax jit mean", "jnp.mean(abs)", lambda: their_mean(jx, jy).block_until_ready()),
    ]


def _implementations(x: np.ndarray, y: np.ndarray) -> list[tuple[str, str, Callable[[], Any]]]:
    import l1backends as l1

    calls: list[tuple[str, str, Callable[[], Any]]] = [
        ("generic mean numpy", "l1backends array-api",
         lambda: l1.l1_loss(x, y, backend="array-api")),
        ("generic mean numpy", "np.mean(abs)", lambda: np.mean(np.abs(x - y))),
    ]  # fmt: skip
    return calls + _torch_calls(x, y) + _jax_calls(x, y)


def _verdicts(results: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    times = {(r["dtype"], r["n"], r["operation"], r["implementation"]): r for r in results}
    ratios = []
    for dtype, n, operation, implementation in sorted({k for k in times}):
        for op, top, bottom, size, bound, kind in TARGETS:
            if (op, top) != (operation, implementation):
                continue
            other = times.get((dtype, n, operation, bottom))
            if other is None:
                continue
            value = times[dtype, n, operation, implementation]["seconds"] / other["seconds"]
            target = None
            if n == int(size):
                met = value >= bound if kind == "at least" else value <= bound
                target = {"bound": bound, "kind": kind, "met": met}
            ratios.append(
                {"dtype": dtype, "n": n, "operation": operation, "numerator": top,
                 "denominator": bottom, "value": value, "target": target}
            )  # fmt: skip
    absolute = []
    for operation, implementation, size, bound in TIME_TARGETS:
        for (dtype, n, op, name), row in times.items():
            if (op, name) == (operation, implementation) and n == int(size):
                absolute.append(
                    {"dtype": dtype, "n": n, "operation": operation, "implementation": name,
                     "seconds": row["seconds"], "bound": bound, "met": row["seconds"] <= bound}
                )  # fmt: skip
    return ratios, absolute


def _table(
    results: list[dict[str, Any]], ratios: list[dict[str, Any]], absolute: list[dict[str, Any]]
) -> str:
    lines = [
        f"{'dtype':8} {'n':>10} {'operation':22} {'implementation':22} {'time':>11} {'GB/s':>7}"
    ]
    for row in results:
        lines.append(
            f"{row['dtype']:8} {row['n']:>10} {row['operation']:22} {row['implementation']:22} "
            f"{_seconds(row['seconds']):>11} {row['gbps']:7.1f}"
        )
    lines += ["", f"{'dtype':8} {'n':>10} {'ratio':62} {'value':>7}  target"]
    for ratio in ratios:
        text = f"{ratio['operation']}: {ratio['numerator']} / {ratio['denominator']}"
        target = ratio["target"]
        verdict = ""
        if target is not None:
            sign = ">=" if target["kind"] == "at least" else "<="
            verdict = f"{sign} {target['bound']:g} {'met' if target['met'] else 'MISSED'}"
        lines.append(
            f"{ratio['dtype']:8} {ratio['n']:>10} {text:62} {ratio['value']:7.2f}  {verdict}"
        )
    for row in absolute:
        text = f"{row['operation']}: {row['implementation']} per call"
        verdict = f"<= {_seconds(row['bound'])} {'met' if row['met'] else 'MISSED'}"
        lines.append(
            f"{row['dtype']:8} {row['n']:>10} {text:62} {_seconds(row['seconds']):>7}  {verdict}"
        )
    return "\n".join(lines)


def run(argv: list[str] | None) -> int:
    """Run the frameworks benchmark with command-line arguments ``argv``; return the status."""
    options, _ = _parser().parse_known_args(argv)
    sizes = [int(s) for s in options.sizes]
    cases = [(dtype, n) for dtype in options.dtypes for n in sizes]
    per_case = len(_implementations(np.zeros(1, np.float32), np.zeros(1, np.float32)))
    progress = Progress(len(cases) * per_case, not options.quiet)
    rng = np.random.default_rng(0)
    results: list[dict[str, Any]] = []
    for dtype, n in cases:
        x = rng.standard_normal(n).astype(dtype)
        y = rng.standard_normal(n).astype(dtype)
        calls = _implementations(x, y)
        seconds = best_times([call for _, _, call in calls], options.repeat)
        for (operation, name, _), elapsed in zip(calls, seconds, strict=True):
            results.append(
                {"dtype": dtype, "n": n, "operation": operation, "implementation": name,
                 "seconds": elapsed, "gbps": 2 * x.nbytes / elapsed / 1e9}
            )  # fmt: skip
            progress.step(f"{dtype} n={n} {operation} {name}")
        del x, y, calls
    ratios, absolute = _verdicts(results)
    print(_table(results, ratios, absolute))
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    for library in ("torch", "jax", "numba"):
        try:
            machine[library] = __import__(library).__version__
        except ImportError:
            machine[library] = None
    report = {"machine": machine, "results": results, "ratios": ratios, "absolute": absolute}
    write_report(report, options, lambda: _plot(results, options.plot))
    return 0
