"""The path matrix: deterministic cases that visit every kernel path of a backend.

Random drawing alone misses paths (a weighted mean's gradient on one contiguous,
aligned array was once never drawn, and hid a wrong Σw offset).  The matrix is a
fixed list of calls that crosses, for every declared dtype, each layout the
adapter can build with the reductions and axes, weighted and unweighted, every
kind of ``grad_output``, and the three operations; plus broadcast inputs (their
gradients are summed back), mixed dtypes, long rows split into chunks, many short
rows, arrays large enough for the parallel drivers, and float64 sums that
overflow.  Every call is checked against the exact references.

A backend that declares its kernel paths (a ``paths`` attribute, see
``l1backends._backends._paths.KernelPaths``) must see each of them visited, so a
new path without a case fails the suite.
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..semantics import promote_dtypes
from .adapters import ArrayAdapter
from .checks import Target, check_grad, check_loss, check_loss_and_grad
from .strategies import Case

__all__ = ["CHECKS", "MatrixCase", "matrix"]

CHECKS = {"loss": check_loss, "grad": check_grad, "loss_and_grad": check_loss_and_grad}
_ALL = ("loss", "grad", "loss_and_grad")
_REDUCTIONS = (("none", None), ("mean", None), ("sum", None), ("mean", 0), ("sum", -1))
_INTEGERS = ("int32", "uint8", "int64")


@dataclass(frozen=True)
class MatrixCase:
    """One call of the matrix and the checks to run on it."""

    label: str
    case: Case
    checks: tuple[str, ...] = _ALL


def _values(label: str, dtype: str, shape: tuple[int, ...], scale: float = 4.0) -> np.ndarray:
    """Deterministic values of ``dtype``: seeded by the case's label, a quarter exact ties apart."""
    rng = np.random.default_rng(zlib.crc32(label.encode()))
    if np.dtype(dtype).kind in "iu":
        return rng.integers(0, 100, shape).astype(dtype)
    values = rng.standard_normal(shape) * scale
    if np.dtype(dtype).kind == "c":
        values = values + 1j * rng.standard_normal(shape) * scale
    return values.astype(dtype)


def _case(
    label: str,
    dtypes: tuple[str, str],
    shapes: tuple[tuple[int, ...], tuple[int, ...]],
    reduction: tuple[str, Any],
    layout: tuple[Any, ...] = ("C",),
    weight: str = "none",
    grad_output: str = "none",
) -> Case:
    """A case whose target ties the input in every third column (same shapes and dtypes)."""
    x = _constant_where_broadcast(_values(label + "/x", dtypes[0], shapes[0]), layout)
    y = _constant_where_broadcast(_values(label + "/y", dtypes[1], shapes[1]), layout)
    if shapes[0] == shapes[1] and dtypes[0] == dtypes[1] and x.ndim:
        y[..., ::3] = x[..., ::3]  # whole columns: a broadcast layout stays constant
    case = Case(
        input=x,
        target=y,
        reduction=reduction[0],
        axis=reduction[1],
        broadcast=shapes[0] != shapes[1],
        layouts={"input": layout, "target": layout},
    )
    plan = case.plan()
    real = plan.result_dtype
    if weight != "none":
        weight_shape = plan.shape if weight == "full" else plan.shape[-1:]
        weight_layout = layout if weight == "full" else ("C",)
        values = np.abs(_values(label + "/w", real, weight_shape, 1.0)) + 0.25
        case.weight = _constant_where_broadcast(values, weight_layout)
        case.layouts["weight"] = weight_layout
    if grad_output == "scalar":
        case.grad_output = -1.5
    elif grad_output == "array":
        case.grad_output = _values(label + "/g", real, plan.out_shape, 1.0)
    return case


def _constant_where_broadcast(values: np.ndarray, layout: tuple[Any, ...]) -> np.ndarray:
    """The values a broadcast layout can hold: constant along the axes it stretches."""
    if layout[0] != "broadcast":
        return values
    small = values[tuple(slice(0, n) for n in layout[1])]
    return np.array(np.broadcast_to(small, values.shape))


def _layout(kind: str, shape: tuple[int, ...]) -> tuple[Any, ...]:
    if kind == "transposed":
        return ("transposed", tuple(reversed(range(len(shape)))))
    if kind == "step":
        return ("step", len(shape) - 1)
    if kind == "broadcast":
        return ("broadcast", (1, *shape[1:]))
    return (kind,)


def _crossed(adapter: ArrayAdapter, dtypes: list[str]) -> Iterator[MatrixCase]:
    """Each dtype with each layout, cycling reductions, weights and grad_outputs alongside."""
    shape = (4, 6)
    for d, dtype in enumerate(dtypes):
        for k, kind in enumerate(adapter.layouts):
            reduction = _REDUCTIONS[(k + d) % len(_REDUCTIONS)]
            weight = ("none", "full", "row")[(k + d) % 3]
            grad_output = ("none", "scalar", "array")[(k + 2 * d) % 3]
            label = f"{dtype}/{kind}/{reduction[0]}-{reduction[1]}/{weight}/{grad_output}"
            yield MatrixCase(
                label,
                _case(label, (dtype, dtype), (shape, shape), reduction, _layout(kind, shape),
                      weight, grad_output),
            )  # fmt: skip


def _per_reduction(dtypes: list[str]) -> Iterator[MatrixCase]:
    """Contiguous operands with every reduction, weighted and not, and broadcast inputs."""
    for dtype, reduction, weight in itertools.product(dtypes, _REDUCTIONS, ("none", "full")):
        label = f"{dtype}/C/{reduction[0]}-{reduction[1]}/{weight}"
        grad_output = "scalar" if weight == "none" else "array"
        yield MatrixCase(label, _case(label, (dtype, dtype), ((3, 5), (3, 5)), reduction,
                                      weight=weight, grad_output=grad_output))  # fmt: skip
        label = f"{dtype}/broadcast-input/{reduction[0]}-{reduction[1]}/{weight}"
        yield MatrixCase(label, _case(label, (dtype, dtype), ((3, 1), (3, 5)), reduction,
                                      weight=weight, grad_output="scalar"))  # fmt: skip


def _mixed(declared: list[str]) -> Iterator[MatrixCase]:
    """Integer and mixed-precision inputs, promoted as the spec says."""
    candidates = [*declared, *_INTEGERS]
    for a, b in itertools.product(candidates, repeat=2):
        if a == b or promote_dtypes(a, b) not in declared:
            continue
        if a in _INTEGERS and b in _INTEGERS and (a, b) != ("int32", "uint8"):
            continue  # one integer pair is enough
        label = f"mixed/{a}-{b}"
        yield MatrixCase(label, _case(label, (a, b), ((4, 3), (4, 3)), ("mean", 1)))


def _sized(adapter: ArrayAdapter, dtypes: list[str], paths: Any) -> Iterator[MatrixCase]:
    """Shapes that reach the drivers: many short rows, long split rows, parallel sizes."""
    dtype = "float32" if "float32" in dtypes else dtypes[0]
    shapes = [
        ("many-rows", (100, 7), ("mean", 1), "full"),
        ("long-rows", (2, 40000), ("mean", 1), "full"),
        ("long-row-sum", (40000,), ("sum", None), "none"),
        ("parallel", ((1 << 17) + 3,), ("mean", None), "none"),
        ("parallel-weighted", (2, (1 << 16) + 5), ("mean", None), "full"),
    ]
    if "flat-parallel" in getattr(paths, "names", ()):
        # numba-cpu's flat kernels take threads from 2**20 elements (memory-bound below);
        # they serve contiguous data only, so no other layout is needed.
        flat = ((1 << 20) + 3,)
        label = f"{dtype}/flat-parallel/C"
        case = _case(label, (dtype, dtype), (flat, flat), ("mean", None), _layout("C", flat))
        yield MatrixCase(label, case, ("loss", "loss_and_grad"))
    if adapter.matrix_size < 40000:  # a slow simulator: the longest row it takes, as chunks
        shapes.append(("adapter-row", (adapter.matrix_size,), ("sum", None), "none"))
    for name, shape, reduction, weight in shapes:
        if math.prod(shape) > adapter.matrix_size:
            continue
        for kind in ("C", "step"):
            if kind not in adapter.layouts:
                continue
            label = f"{dtype}/{name}/{kind}"
            checks = ("loss", "loss_and_grad") if math.prod(shape) > 4096 else _ALL
            yield MatrixCase(
                label,
                _case(label, (dtype, dtype), (shape, shape), reduction, _layout(kind, shape),
                      weight, "none"),
                checks,
            )  # fmt: skip


def _overflow(dtypes: list[str], paths: Any) -> Iterator[MatrixCase]:
    """float64 sums beyond range whose exact results are finite, for backends that rescale.

    Only backends that declare an ``overflow-rescale`` path take these: the CUDA backends
    would need a device synchronization to see the overflow, and return inf instead.
    """
    if "float64" not in dtypes or "overflow-rescale" not in getattr(paths, "names", ()):
        return
    largest = float(np.finfo(np.float64).max)
    big = np.array([largest, largest, 1.0])
    yield MatrixCase("float64/overflow/mean", Case(input=big, target=np.zeros(3)), ("loss",))
    yield MatrixCase(
        "float64/overflow/strided-sum",
        Case(input=big, target=-big, reduction="sum", layouts={"input": ("negative",)}),
        ("loss",),
    )
    weights = Case(input=np.ones(3), target=np.zeros(3), weight=np.array([1e308, 1e308, 0.0]))
    yield MatrixCase("float64/overflow/weights", weights, ("loss", "grad"))


def matrix(target: Target, paths: Any = None) -> list[MatrixCase]:
    """The path matrix of ``target``: its declared dtypes the adapter can hold.

    Parameters
    ----------
    target : Target
        The backend, the adapter feeding it and its capabilities.
    paths : KernelPaths, optional
        The backend's declared kernel paths, which add the cases some paths need.

    Returns
    -------
    list of MatrixCase
        Deterministic cases, each with the checks to run.
    """
    adapter = target.adapter
    dtypes = [d for d in target.capabilities.dtypes if d not in adapter.unsupported_dtypes]
    cases = [
        *_crossed(adapter, dtypes),
        *_per_reduction(dtypes if adapter.matrix_full else dtypes[:1]),
        *_mixed(dtypes),
        *_sized(adapter, dtypes, paths),
        *_overflow(dtypes, paths),
    ]
    cases = [c for c in cases if c.case.input.size <= adapter.matrix_size]
    if adapter.matrix_full:
        return cases
    return [  # one check per case, in turn
        MatrixCase(c.label, c.case, (c.checks[k % len(c.checks)],)) for k, c in enumerate(cases)
    ]
