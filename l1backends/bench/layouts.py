"""Every general-layout path against NumPy on the same arrays (``l1backends bench --layouts``).

Issue 13 asks that each layout the numba-CPU backend serves outside its flat
kernels run within 3x NumPy's elementwise time on the same layout.  This mode
times, at about 4M float32 elements, l1backends against NumPy's natural
expression for the same call, round-robin, best of ``--repeat``, and prints the
ratio with a mark (3x or less) and the kernel path the call took.  With
``--substeps`` it also times the parts of the general kernel's per-element work
in isolation, to show where a slow path spends its time.  Writes a table
(stdout), a JSON file and a bar plot of the ratios.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .cpu import Progress, best_times, machine, write_report

__all__ = ["TARGET_RATIO", "Layout", "layouts", "run"]

TARGET_RATIO = 3.0


@dataclass
class Layout:
    """One call on one memory layout, and NumPy's expression for it on the same arrays."""

    name: str
    ours: Callable[[], Any]
    numpy: Callable[[], Any]
    expression: str


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="l1backends bench --layouts",
        description="Time the numba-CPU general-layout paths against NumPy on the same arrays.",
    )
    parser.add_argument("--layouts", action="store_true", help="select this benchmark")
    parser.add_argument(
        "--elements", type=float, default=2**22, help="float32 elements (default 2**22)"
    )
    parser.add_argument("--repeat", type=int, default=7, help="best of this many timings")
    parser.add_argument("--substeps", action="store_true", help="time the kernel's parts too")
    parser.add_argument("--json", default="bench-layouts.json", help="where to write results")
    parser.add_argument("--plot", default="bench-layouts.png", help="where to draw the plot")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def layouts(n: int, seed: int = 0) -> list[Layout]:
    """The general-layout calls of issue 13 (and three more), on about ``n`` float32 elements."""
    import l1backends as l1

    rng = np.random.default_rng(seed)
    columns = 1024 if n >= 4096 else 2
    rows = max(1, n // columns)
    n = rows * columns
    x = rng.standard_normal(n, dtype=np.float32)
    y = rng.standard_normal(n, dtype=np.float32)
    g = rng.standard_normal(n, dtype=np.float32)
    x2, y2 = x.reshape(rows, columns), y.reshape(rows, columns)
    zero_stride = np.broadcast_to(y2[:1], x2.shape)
    weight = rng.random((1, columns), dtype=np.float32)
    zx = (x + 1j * y).astype(np.complex64)
    zy = (y + 1j * g).astype(np.complex64)
    pairs_x, pairs_y = x.reshape(n // 2, 2), y.reshape(n // 2, 2)
    halves = (2, rows // 2, columns) if rows % 2 == 0 else (1, rows, columns)
    permuted_x = x.reshape(halves).transpose(1, 0, 2)
    permuted_y = y.reshape(halves).transpose(1, 0, 2)
    big_x, big_y = x.astype(">f4"), y.astype(">f4")
    wide = rng.standard_normal(2 * n, dtype=np.float32)
    step_x, step_y = wide[::2], rng.standard_normal(2 * n, dtype=np.float32)[::2]

    def both_none() -> Any:
        d = x - y
        return np.abs(d), np.sign(d)

    return [
        Layout("loss_and_grad 'none'", lambda: l1.l1_loss_and_grad(x, y, "none"), both_none,
               "d = x - y; abs(d), sign(d)"),
        Layout("grad 'none', grad_output array",
               lambda: l1.l1_loss_grad(x, y, "none", grad_output=g),
               lambda: np.sign(x - y) * g, "sign(x - y) * g"),
        Layout("'none', zero-stride target", lambda: l1.l1_loss(x2, zero_stride, "none"),
               lambda: np.abs(x2 - zero_stride), "abs(x - y0)"),
        Layout("'none', broadcast weight", lambda: l1.l1_loss(x2, y2, "none", weight=weight),
               lambda: np.abs(x2 - y2) * weight, "abs(x - y) * w"),
        Layout("complex64 'none'", lambda: l1.l1_loss(zx, zy, "none"),
               lambda: np.abs(zx - zy), "abs(zx - zy)"),
        Layout("mean axis=1, shape (n/2, 2)", lambda: l1.l1_loss(pairs_x, pairs_y, axis=1),
               lambda: np.abs(pairs_x - pairs_y).mean(axis=1), "abs(x - y).mean(axis=1)"),
        Layout("mean, transposed (2-D .T)", lambda: l1.l1_loss(x2.T, y2.T),
               lambda: np.abs(x2.T - y2.T).mean(), "abs(x.T - y.T).mean()"),
        Layout("mean, permuted 3-D axes", lambda: l1.l1_loss(permuted_x, permuted_y),
               lambda: np.abs(permuted_x - permuted_y).mean(), "abs(x - y).mean()"),
        Layout("mean, negative stride", lambda: l1.l1_loss(x[::-1], y[::-1]),
               lambda: np.abs(x[::-1] - y[::-1]).mean(), "abs(x[::-1] - y[::-1]).mean()"),
        Layout("mean, step 2", lambda: l1.l1_loss(step_x, step_y),
               lambda: np.abs(step_x - step_y).mean(), "abs(x[::2] - y[::2]).mean()"),
        Layout("mean, big-endian", lambda: l1.l1_loss(big_x, big_y),
               lambda: np.abs(big_x - big_y).mean(), "abs(xb - yb).mean()"),
    ]  # fmt: skip


def _paths(call: Callable[[], Any]) -> list[str]:
    """The numba-CPU kernel paths one call takes."""
    from .._backends.numba_cpu._backend import PATHS

    with PATHS.recording() as visited:
        call()
    return sorted(visited)


def _substeps(n: int, repeat: int) -> list[dict[str, Any]]:
    """Nanoseconds per element of the general kernel's per-element work, part by part.

    Each part is a numba loop over ``n`` float32 elements, in one thread: a typed
    read; the kernel's byte load by mode (unaligned, byte order, rounding) at an
    address; and the kernel's whole element (``_element``, loss of two operands,
    offsets stepped as the kernel steps them).
    """
    from numba import njit

    from .._backends.numba_cpu import _kernels as kern
    from .._backends.numba_cpu import _scalars as scalars
    from .._backends.numba_cpu._operands import mode

    @njit(nogil=True, cache=True)
    def typed_read(x):  # pragma: no cover - compiled
        total = 0.0
        for i in range(x.size):
            total += abs(np.float64(x[i]))
        return total

    @njit(nogil=True, cache=True)
    def mode_load(address, stride, how, count):  # pragma: no cover - compiled
        total = 0.0
        for i in range(count):
            total += abs(scalars.load(address, i * stride, how, 0))
        return total

    @njit(nogil=True, cache=True)
    def whole_element(reads, writes, steps, settings, count):  # pragma: no cover - compiled
        origin = (0, 0, 0, 0, 0, 0, 0, 0)
        acc = (0.0, 0.0, 0.0, 0.0)
        for i in range(count):
            offsets = kern._ahead(origin, steps, i)
            terms = kern._element(reads, writes, offsets, settings, (0.0, 0.0))
            acc = kern._add(acc, terms, False)
        return acc

    x = np.random.default_rng(1).standard_normal(n, dtype=np.float32)
    record = (x.__array_interface__["data"][0], mode(x.dtype, "float32"))
    reads, writes = (record, record, None, None, None), (None, None, None)
    steps = (x.itemsize, x.itemsize, 0, 0, 0, 0, 0, 0)
    settings = (kern.ACC_LOSS, 2, n, 1.0, 1.0, 1.0, 2, 0)
    parts = [
        ("typed read x[i]", lambda: typed_read(x)),
        ("byte load by mode (_scalars.load)", lambda: mode_load(record[0], 4, record[1], n)),
        ("whole general-kernel element", lambda: whole_element(reads, writes, steps, settings, n)),
    ]
    seconds = best_times([call for _, call in parts], repeat)
    return [
        {"part": name, "ns_per_element": elapsed / n * 1e9}
        for (name, _), elapsed in zip(parts, seconds, strict=True)
    ]


def _plot(results: list[dict[str, Any]], path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, ax = plt.subplots(figsize=(8, 0.45 * len(results) + 1.2))
    names = [r["layout"] for r in results][::-1]
    ratios = [r["ratio"] for r in results][::-1]
    colours = ["tab:green" if r <= TARGET_RATIO else "tab:red" for r in ratios]
    ax.barh(names, ratios, color=colours)
    ax.axvline(TARGET_RATIO, color="grey", linestyle="--", linewidth=0.8)
    ax.set(xscale="log", xlabel="time / NumPy's expression on the same arrays")
    ax.set_title(f"numba-cpu layouts (target: {TARGET_RATIO:g}x or less)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def _table(results: list[dict[str, Any]], substeps: list[dict[str, Any]]) -> str:
    lines = [f"{'layout':34} {'ratio':>8}  {'≤ 3x':4} {'NumPy expression':32} kernel paths"]
    for row in results:
        mark = "✔" if row["within_target"] else "✘"
        lines.append(
            f"{row['layout']:34} {row['ratio']:7.2f}x  {mark:4} {row['numpy_expression']:32} "
            + ", ".join(row["paths"])
        )
    if substeps:
        lines += ["", "general kernel, per element, in isolation:"]
        lines += [f"  {row['part']:40} {row['ns_per_element']:8.2f} ns" for row in substeps]
    return "\n".join(lines)


def run(argv: list[str] | None) -> int:
    """Run the layouts benchmark with command-line arguments ``argv``; return the exit status.

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
    n = int(options.elements)
    cases = layouts(n)
    progress = Progress(len(cases) + options.substeps, not options.quiet)
    results = []
    for case in cases:
        paths = _paths(case.ours)
        ours, numpy = best_times([case.ours, case.numpy], options.repeat)
        results.append(
            {"layout": case.name, "n": n, "numpy_expression": case.expression,
             "ratio": ours / numpy, "within_target": ours / numpy <= TARGET_RATIO, "paths": paths}
        )  # fmt: skip
        progress.step(case.name)
    substeps = []
    if options.substeps:
        substeps = _substeps(n, options.repeat)
        progress.step("general kernel parts")
    print(_table(results, substeps))
    report = {
        "machine": machine(),
        "dtype": "float32",
        "target_ratio": TARGET_RATIO,
        "results": results,
        "substeps": substeps,
    }
    write_report(report, options, lambda: _plot(results, options.plot))
    return 0
