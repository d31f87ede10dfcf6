"""Worker-side blocks of the Dask backend: the functions dask tasks run on one chunk each.

Each chunk is computed by the registry's backend for that chunk's type (numba-cpu
for NumPy chunks, cupy for CuPy chunks), through its ``partials``, ``loss`` and
``grad``; the double words those return are combined here with TwoSum, and the
result is rounded once.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dask
import numpy as np

from ..._typing import Array
from ...numerics import compensated_sum, dd_quotient, dd_value, round_words
from ...registry import registry
from ...semantics import Finish, Plan, dtype_name, make_plan

__all__ = [
    "cast_block",
    "combine_words",
    "finish_loss_block",
    "finish_sum_back_block",
    "grad_block",
    "keep_block",
    "loss_none_block",
    "numba_threads_per_task",
    "partials_block",
    "real",
    "scale_block",
    "weight_partials_block",
    "word_value_block",
]

_OPERATION = "dask chunk"
_REDUCING = ("mean", "sum")


def _namespace(array: Array) -> Any:
    import array_api_compat

    return array_api_compat.array_namespace(array)


def _device(array: Array) -> Any:
    import array_api_compat

    return array_api_compat.device(array)


def _shape_dtype(array: Array | None) -> tuple[tuple[int, ...] | None, str | None]:
    if array is None:
        return None, None
    return tuple(array.shape), dtype_name(array.dtype)


def _grad_output_meta(grad_output: Array | float | None) -> tuple[Any, str | None]:
    if grad_output is None:
        return None, None
    if isinstance(grad_output, float):
        return (), None
    return tuple(grad_output.shape), dtype_name(grad_output.dtype)


def _chunk_plan(
    x: Array,
    y: Array,
    w: Array | None,
    reduction: str,
    reduced_axes: tuple[int, ...],
    grad_output: Array | float | None = None,
) -> Plan:
    """The plan of one chunk: same shapes for all three, reduced over ``reduced_axes``."""
    weight_shape, weight_dtype = _shape_dtype(w)
    grad_output_shape, grad_output_dtype = _grad_output_meta(grad_output)
    return make_plan(
        tuple(x.shape),
        dtype_name(x.dtype),
        tuple(y.shape),
        dtype_name(y.dtype),
        reduction,
        weight_shape,
        weight_dtype,
        reduced_axes if reduction in _REDUCING else None,
        False,
        grad_output_shape,
        grad_output_dtype,
    )


def _chunk_backend(x: Array, y: Array, w: Array | None) -> Any:
    """The registry's backend for this chunk's array types."""
    arrays = (x, y) if w is None else (x, y, w)
    return registry.select(arrays, None, _OPERATION)


def numba_threads_per_task(blocks: int) -> int:
    """How many numba threads one chunk task may use without oversubscribing the cores.

    Dask already runs chunk tasks in parallel, so the cores numba may use
    (``NUMBA_NUM_THREADS``, all of them unless set) are shared among the tasks
    that can run at once in this process: the worker's threads on
    dask.distributed, or the local thread pool, and never more than the graph's
    ``blocks``.  With several worker processes on one machine, set
    ``NUMBA_NUM_THREADS`` in the workers' environment to each one's share of the
    cores.

    Parameters
    ----------
    blocks : int
        Number of chunk tasks in the graph.

    Returns
    -------
    int
        At least 1.
    """
    import numba

    concurrent = _task_slots()
    cores = int(getattr(numba.config, "NUMBA_NUM_THREADS", 1))
    return max(1, cores // max(1, min(concurrent, blocks)))


def _task_slots() -> int:
    """Tasks that may run at once in this process."""
    if "distributed" in sys.modules:
        from distributed import get_worker

        try:
            return get_worker().state.nthreads
        except ValueError:  # not inside a worker: a local scheduler
            pass
    from dask.system import CPU_COUNT

    return dask.config.get("num_workers", None) or CPU_COUNT


@contextmanager
def _cpu_thread_share(x: Array, blocks: int) -> Iterator[None]:
    """Limit numba's threads (thread-local in numba) while this task computes a CPU chunk."""
    numba = sys.modules.get("numba")
    if numba is None or not isinstance(x, np.ndarray):
        yield
        return
    share = numba_threads_per_task(blocks)
    previous = numba.get_num_threads()
    if share >= previous:
        yield
        return
    numba.set_num_threads(share)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def _stack_words(words: list[Array], keepdims_shape: tuple[int, ...]) -> Array:
    """Stack double words on a new last axis, shaped to ``keepdims_shape + (len(words),)``."""
    xp = _namespace(words[0])
    stacked = xp.stack([xp.asarray(word) for word in words], axis=-1)
    return xp.reshape(stacked, (*keepdims_shape, len(words)))


def partials_block(
    x: Array, y: Array, w: Array | None, *, reduced_axes: tuple[int, ...], blocks: int
) -> Array:
    """One chunk's Σ w·|d| (and Σ w) double words, with the reduced axes kept as size 1."""
    implementation = _chunk_backend(x, y, w)
    plan = _chunk_plan(x, y, w, "sum", reduced_axes)
    with _cpu_thread_share(x, blocks):
        high, low, weight_high, weight_low = implementation.partials(plan, x, y, w)
    words = [high, low] if w is None else [high, low, weight_high, weight_low]
    return _stack_words(words, plan.keepdims_shape)


def weight_partials_block(
    w: Array, *, compute_dtype: str, reduced_axes: tuple[int, ...], blocks: int
) -> Array:
    """One chunk's Σ w double words, computed by the chunk's backend on |0 − 0|."""
    xp = _namespace(w)
    zero = xp.broadcast_to(
        xp.zeros((), dtype=getattr(xp, compute_dtype), device=_device(w)), tuple(w.shape)
    )
    return partials_block(zero, zero, w, reduced_axes=reduced_axes, blocks=blocks)[..., 2:]


def combine_words(words: Array, axis: tuple[int, ...], keepdims: bool) -> Array:
    """Add double words (pairs along the last axis) over ``axis`` with a pairwise TwoSum tree."""
    xp = _namespace(words)
    ndim = words.ndim - 1
    with np.errstate(all="ignore"):  # non-finite words: the high word stands alone
        return _combined(xp, words, axis, keepdims, ndim)


def _combined(xp: Any, words: Array, axis: tuple[int, ...], keepdims: bool, ndim: int) -> Array:
    axis = tuple(sorted(ax % words.ndim for ax in axis))
    kept = tuple(ax for ax in range(ndim) if ax not in axis)
    moved = xp.permute_dims(words, (*kept, *axis, ndim))
    terms = math.prod(words.shape[ax] for ax in axis)
    flat = xp.reshape(moved, (*(words.shape[ax] for ax in kept), terms, words.shape[-1]))
    summed: list[Array] = []
    for pair in range(0, words.shape[-1], 2):
        summed.extend(compensated_sum(xp, flat[..., pair], flat[..., pair + 1]))
    if keepdims:
        shape = tuple(1 if ax in axis else n for ax, n in enumerate(words.shape[:-1]))
    else:
        shape = tuple(words.shape[ax] for ax in kept)
    return _stack_words(summed, shape)


def keep_block(words: Array, axis: tuple[int, ...], keepdims: bool) -> Array:
    """The reduction's per-chunk step: partial words already have size 1 on ``axis``."""
    return words


def finish_loss_block(words: Array, *, finish: Finish, count: int, result_dtype: str) -> Array:
    """Round combined double words once: the sum, or the mean by ``count`` or by Σ w."""
    xp = _namespace(words)
    high, low = words[..., 0], words[..., 1]
    with np.errstate(all="ignore"):  # overflow to inf is the answer
        if finish is Finish.MEAN_BY_WEIGHT:
            high, low = dd_quotient(xp, high, low, words[..., 2], words[..., 3], "float64")
        elif finish is Finish.MEAN_BY_COUNT:
            divisor = xp.asarray(float(count), dtype=xp.float64, device=_device(words))
            high, low = dd_quotient(xp, high, low, divisor, xp.zeros_like(divisor), "float64")
        return round_words(xp, high, low, result_dtype)


def word_value_block(words: Array) -> Array:
    """Round double words (one pair, on the last axis) to float64."""
    with np.errstate(all="ignore"):
        return dd_value(_namespace(words), words[..., 0], words[..., 1])


def loss_none_block(x: Array, y: Array, w: Array | None, *, blocks: int) -> Array:
    implementation = _chunk_backend(x, y, w)
    plan = _chunk_plan(x, y, w, "none", ())
    with _cpu_thread_share(x, blocks):
        return implementation.loss(plan, x, y, w)


def real(value: Array, result_dtype: str, dtype: str) -> Array:
    """Round ``value`` to the result dtype as the spec says, then cast it to ``dtype``."""
    xp = _namespace(value)
    with np.errstate(all="ignore"):  # overflow to inf is the rounding the spec asks for
        return xp.astype(xp.astype(value, getattr(xp, result_dtype)), getattr(xp, dtype))


def _keepdims(value: Array, shape: tuple[int, ...], reduced_axes: tuple[int, ...]) -> Array:
    """Reshape a reduced-shape chunk to broadcast against a full chunk of ``shape``."""
    if value.ndim == 0:
        return value
    xp = _namespace(value)
    return xp.reshape(value, tuple(1 if ax in reduced_axes else n for ax, n in enumerate(shape)))


def scale_block(
    weight: Array | None,
    grad_output: Array | float,
    total: Array | None,
    *,
    reduced_axes: tuple[int, ...],
    result_dtype: str,
    scale_dtype: str,
    count: int,
) -> Array:
    """The mean's gradient scale: ``grad_output / count``, or ``grad_output · w / Σw``.

    Computed in float64 from the values rounded to the result dtype, then rounded
    once to ``scale_dtype``.
    """
    with np.errstate(all="ignore"):
        if weight is None:
            scale = real(grad_output, result_dtype, "float64") / float(count)
            return real(scale, scale_dtype, scale_dtype)
        shape = tuple(weight.shape)
        if isinstance(grad_output, float):
            scale = grad_output * real(weight, result_dtype, "float64")
        else:
            upstream = _keepdims(real(grad_output, result_dtype, "float64"), shape, reduced_axes)
            scale = upstream * real(weight, result_dtype, "float64")
        scale = scale / _keepdims(total, shape, reduced_axes)
        return real(scale, scale_dtype, scale_dtype)


def grad_block(
    x: Array,
    y: Array,
    w: Array | None,
    grad_output: Array | float | None,
    *,
    reduction: str,
    reduced_axes: tuple[int, ...],
    wide_dtype: str | None,
    sum_axes: tuple[int, ...],
    blocks: int,
) -> Array:
    """One chunk's gradient by its backend.

    With ``wide_dtype`` the chunk is computed in float64/complex128 (input and
    target cast exactly), and with ``sum_axes`` it is then summed over those axes
    into double words (real and, for complex, imaginary pairs) for the caller to
    combine across chunks and round once.
    """
    if wide_dtype is not None:
        xp = _namespace(x)
        x = xp.astype(x, getattr(xp, wide_dtype))
        y = xp.astype(y, getattr(xp, wide_dtype))
    implementation = _chunk_backend(x, y, w)
    plan = _chunk_plan(x, y, w, reduction, reduced_axes, grad_output)
    with _cpu_thread_share(x, blocks):
        gradient = implementation.grad(plan, x, y, w, grad_output)
    if not sum_axes:
        return gradient
    with np.errstate(all="ignore"):
        return _sum_back_words(gradient, sum_axes, plan.is_complex)


def _sum_back_words(gradient: Array, sum_axes: tuple[int, ...], is_complex: bool) -> Array:
    """Sum a chunk's gradient over ``sum_axes`` into (real and imaginary) double words."""
    xp = _namespace(gradient)
    parts = [xp.real(gradient), xp.imag(gradient)] if is_complex else [gradient]
    kept = tuple(ax for ax in range(gradient.ndim) if ax not in sum_axes)
    terms = math.prod(gradient.shape[ax] for ax in sum_axes)
    words: list[Array] = []
    for part in parts:
        moved = xp.reshape(
            xp.permute_dims(part, (*kept, *sum_axes)),
            (*(gradient.shape[ax] for ax in kept), terms),
        )
        words.extend(compensated_sum(xp, moved, xp.zeros_like(moved)))
    shape = tuple(1 if ax in sum_axes else n for ax, n in enumerate(gradient.shape))
    return _stack_words(words, shape)


def finish_sum_back_block(words: Array, *, compute_dtype: str) -> Array:
    """Round summed-back gradient words once to the gradient's dtype."""
    xp = _namespace(words)
    with np.errstate(all="ignore"):
        real = dd_value(xp, words[..., 0], words[..., 1])
        if words.shape[-1] == 2:
            return xp.astype(real, getattr(xp, compute_dtype))
        imaginary = dd_value(xp, words[..., 2], words[..., 3])
        result_dtype = getattr(xp, "float32" if compute_dtype == "complex64" else "float64")
        complex_dtype = getattr(xp, compute_dtype)
        real = xp.astype(xp.astype(real, result_dtype), complex_dtype)
        imaginary = xp.astype(xp.astype(imaginary, result_dtype), complex_dtype)
        return real + imaginary * xp.asarray(1j, dtype=complex_dtype)


def cast_block(array: Array, *, to: str) -> Array:
    xp = _namespace(array)
    with np.errstate(all="ignore"):
        return xp.astype(array, getattr(xp, to))
