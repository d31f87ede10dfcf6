"""The Dask backend: the L1 loss of ``dask.array`` arrays, lazily and chunk by chunk.

Every call returns dask arrays and computes nothing.  Each chunk is computed by
the registry's backend for that chunk's type (numba-cpu for NumPy chunks, cupy
for CuPy chunks, the generic backend when those are unavailable), so the work on
a chunk is exactly what a single machine would do on it.

Reductions combine exactly: each chunk's backend returns its partial sums
Σ w·|d| and Σ w as unrounded float64 double words (``partials``), and those are
added along a fixed tree (dask's tree reduction with an explicit ``split_every``)
with TwoSum, keeping every rounding error.  The mean is a double-word division,
rounded once.  The result therefore matches the single-machine result to within
one ulp, and its bits depend only on the chunking, never on the scheduler.

Input, target and weight are aligned to one chunking before anything else: the
input's own chunks (so that gradients are chunked like the input), taking the
target's or the weight's chunks only along axes the input is broadcast over.
Mismatched chunks are thus rechunked rather than refused; dask does that lazily
and it leaves the values unchanged.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from l1backends.numerics import compensated_sum, dd_divide, dd_value
from l1backends.registry import registry
from l1backends.semantics import Plan, dtype_name, make_plan

try:
    import dask
    import dask.array as da
except ImportError as error:  # reported by probe(), the backend is then unavailable
    _IMPORT_ERROR: str | None = (
        f"dask.array cannot be imported ({type(error).__name__}: {error}); "
        "install it with pip install 'l1backends[dask]'"
    )
else:
    _IMPORT_ERROR = None

__all__ = ["DaskBackend", "backend", "numba_threads_per_task", "probe"]

Array = Any
# Chunks per node of the reduction tree, fixed so that the tree (and so the result's
# bits) does not depend on dask's configuration.
SPLIT_EVERY = 16
_OPERATION = "dask chunk"


def probe() -> str | None:
    """Return None when dask.array can be used, else why not."""
    return _IMPORT_ERROR


# ----- chunk-level helpers (these run inside dask tasks, on workers) -----------------------


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
        None if reduction == "none" else reduced_axes,
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
    return max(1, numba.config.NUMBA_NUM_THREADS // max(1, min(concurrent, blocks)))


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


def _partials_block(
    x: Array, y: Array, w: Array | None, *, reduced_axes: tuple[int, ...], blocks: int
) -> Array:
    """One chunk's Σ w·|d| (and Σ w) double words, with the reduced axes kept as size 1."""
    implementation = _chunk_backend(x, y, w)
    plan = _chunk_plan(x, y, w, "sum", reduced_axes)
    with _cpu_thread_share(x, blocks):
        high, low, weight_high, weight_low = implementation.partials(plan, x, y, w)
    words = [high, low] if w is None else [high, low, weight_high, weight_low]
    return _stack_words(words, plan.keepdims_shape)


def _weight_partials_block(
    w: Array, *, compute_dtype: str, reduced_axes: tuple[int, ...], blocks: int
) -> Array:
    """One chunk's Σ w double words, computed by the chunk's backend on |0 − 0|."""
    xp = _namespace(w)
    zero = xp.broadcast_to(
        xp.zeros((), dtype=getattr(xp, compute_dtype), device=_device(w)), tuple(w.shape)
    )
    return _partials_block(zero, zero, w, reduced_axes=reduced_axes, blocks=blocks)[..., 2:]


def _combine_words(words: Array, axis: tuple[int, ...], keepdims: bool) -> Array:
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
    summed = []
    for pair in range(0, words.shape[-1], 2):
        summed.extend(compensated_sum(xp, flat[..., pair], flat[..., pair + 1]))
    if keepdims:
        shape = tuple(1 if ax in axis else n for ax, n in enumerate(words.shape[:-1]))
    else:
        shape = tuple(words.shape[ax] for ax in kept)
    return _stack_words(summed, shape)


def _keep_block(words: Array, axis: tuple[int, ...], keepdims: bool) -> Array:
    """The reduction's per-chunk step: partial words already have size 1 on ``axis``."""
    return words


def _finish_loss_block(words: Array, *, reduction: str, count: int, result_dtype: str) -> Array:
    """Round combined double words once: the sum, or the mean by ``count`` or by Σ w."""
    xp = _namespace(words)
    high, low = words[..., 0], words[..., 1]
    with np.errstate(all="ignore"):
        if reduction == "sum":
            value = dd_value(xp, high, low)
        elif words.shape[-1] == 4:
            value = dd_divide(xp, high, low, words[..., 2], words[..., 3], "float64")
        else:
            divisor = xp.asarray(float(count), dtype=xp.float64, device=_device(words))
            value = dd_divide(xp, high, low, divisor, xp.zeros_like(divisor), "float64")
        return xp.astype(value, getattr(xp, result_dtype))  # overflow to inf is the answer


def _word_value_block(words: Array) -> Array:
    """Round double words (one pair, on the last axis) to float64."""
    with np.errstate(all="ignore"):
        return dd_value(_namespace(words), words[..., 0], words[..., 1])


def _loss_none_block(x: Array, y: Array, w: Array | None, *, blocks: int) -> Array:
    implementation = _chunk_backend(x, y, w)
    plan = _chunk_plan(x, y, w, "none", ())
    with _cpu_thread_share(x, blocks):
        return implementation.loss(plan, x, y, w)


def _real(value: Array, result_dtype: str, dtype: str) -> Array:
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


def _scale_block(
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
            scale = _real(grad_output, result_dtype, "float64") / float(count)
            return _real(scale, scale_dtype, scale_dtype)
        shape = tuple(weight.shape)
        if isinstance(grad_output, float):
            scale = grad_output * _real(weight, result_dtype, "float64")
        else:
            upstream = _keepdims(_real(grad_output, result_dtype, "float64"), shape, reduced_axes)
            scale = upstream * _real(weight, result_dtype, "float64")
        scale = scale / _keepdims(total, shape, reduced_axes)
        return _real(scale, scale_dtype, scale_dtype)


def _grad_block(
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
    words = []
    for part in parts:
        moved = xp.reshape(
            xp.permute_dims(part, (*kept, *sum_axes)),
            (*(gradient.shape[ax] for ax in kept), terms),
        )
        words.extend(compensated_sum(xp, moved, xp.zeros_like(moved)))
    shape = tuple(1 if ax in sum_axes else n for ax, n in enumerate(gradient.shape))
    return _stack_words(words, shape)


def _finish_sum_back_block(words: Array, *, compute_dtype: str) -> Array:
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


def _cast_block(array: Array, *, to: str) -> Array:
    xp = _namespace(array)
    with np.errstate(all="ignore"):
        return xp.astype(array, getattr(xp, to))


# ----- graph construction (runs at call time; computes nothing) ----------------------------


@dataclass(frozen=True)
class _Operands:
    """Input, target and weight at the loss shape, all with one chunking."""

    plan: Plan
    input: da.Array
    target: da.Array
    weight: da.Array | None
    meta: Array

    @property
    def chunks(self) -> tuple[tuple[int, ...], ...]:
        return self.input.chunks

    @property
    def blocks(self) -> int:
        return math.prod(self.input.numblocks)

    @property
    def index(self) -> tuple[int, ...]:
        return tuple(range(len(self.plan.shape)))

    @property
    def kept_index(self) -> tuple[int, ...]:
        return self.plan.kept_axes

    def arrays(self) -> list[Any]:
        """input, target and weight with their blockwise indices."""
        weight = (None, None) if self.weight is None else (self.weight, self.index)
        return [self.input, self.index, self.target, self.index, *weight]

    def meta_for(self, ndim: int, dtype: str) -> Array:
        return _meta_like(self.meta, ndim, dtype)


def _meta_like(meta: Array, ndim: int, dtype: str) -> Array:
    """An empty chunk of ``meta``'s array type (NumPy, CuPy, ...) with this ndim and dtype."""
    return np.empty_like(meta, dtype=np.dtype(dtype), shape=(0,) * ndim)


def _loss_chunks(shape: tuple[int, ...], arrays: list[da.Array]) -> tuple[tuple[int, ...], ...]:
    """Per axis of the loss shape, the chunks of the first array not broadcast along it."""
    chunks = []
    for ax, size in enumerate(shape):
        chosen: tuple[int, ...] = (size,)
        for array in arrays:
            own = ax - (len(shape) - array.ndim)
            if own >= 0 and array.shape[own] == size:
                chosen = array.chunks[own]
                break
        chunks.append(chosen)
    return tuple(chunks)


def _align(array: da.Array, shape: tuple[int, ...], chunks: tuple[tuple[int, ...], ...]) -> Any:
    """Rechunk ``array`` to ``chunks`` and broadcast it (lazily, as views) to ``shape``."""
    lead = len(shape) - array.ndim
    own = tuple(
        chunks[lead + ax] if size == shape[lead + ax] else (size,)
        for ax, size in enumerate(array.shape)
    )
    if array.chunks != own:
        array = array.rechunk(own)
    if array.shape != shape:
        array = da.broadcast_to(array, shape, chunks=chunks)
    return array


def _operands(plan: Plan, input: da.Array, target: da.Array, weight: da.Array | None) -> _Operands:
    arrays = [input, target] if weight is None else [input, target, weight]
    chunks = _loss_chunks(plan.shape, arrays)
    return _Operands(
        plan=plan,
        input=_align(input, plan.shape, chunks),
        target=_align(target, plan.shape, chunks),
        weight=None if weight is None else _align(weight, plan.shape, chunks),
        meta=input._meta,
    )


def _wide_real(array: da.Array, result_dtype: str) -> da.Array:
    """``array`` rounded to the result dtype, then held in float64."""
    return array.map_blocks(
        _real,
        result_dtype,
        "float64",
        dtype=np.float64,
        meta=_meta_like(array._meta, array.ndim, "float64"),
    )


def _reduce_words(words: da.Array, axes: tuple[int, ...], keepdims: bool) -> da.Array:
    """Combine per-chunk words over ``axes`` along dask's tree, in a fixed order."""
    if not axes:
        return words
    return da.reduction(
        words,
        chunk=_keep_block,
        combine=_combine_words,
        aggregate=_combine_words,
        axis=axes,
        keepdims=keepdims,
        dtype=np.float64,
        split_every=SPLIT_EVERY,
        concatenate=True,
        meta=words._meta,
    )


class DaskBackend:
    """L1 loss and subgradient of dask arrays, chunk by chunk, combined exactly."""

    name = "dask"

    # ----- protocol -----------------------------------------------------------------------

    def loss(self, plan: Plan, input: Array, target: Array, weight: Array | None) -> Array:
        """Return the loss described by ``plan`` as a lazy dask array."""
        operands = _operands(plan, input, target, weight)
        if plan.reduction == "none":
            return self._loss_none(operands)
        return self._finish_loss(operands, self._loss_words(operands))

    def grad(
        self,
        plan: Plan,
        input: Array,
        target: Array,
        weight: Array | None,
        grad_output: Array | float | None,
    ) -> Array:
        """Return the subgradient with respect to ``input`` as a dask array chunked like it."""
        operands = _operands(plan, input, target, weight)
        total = None
        if plan.reduction == "mean" and weight is not None and plan.size:
            total = self._weight_total(operands)
        return self._grad(operands, input, grad_output, total)

    def loss_and_grad(
        self,
        plan: Plan,
        input: Array,
        target: Array,
        weight: Array | None,
        grad_output: Array | float | None,
    ) -> tuple[Array, Array]:
        """Return ``(loss, grad)``, sharing the alignment and, for a weighted mean, Σ w."""
        operands = _operands(plan, input, target, weight)
        if plan.reduction == "none":
            return self._loss_none(operands), self._grad(operands, input, grad_output, None)
        words = self._loss_words(operands)
        total = None
        if plan.reduction == "mean" and weight is not None and plan.size:
            total = words[..., 2:].map_blocks(
                _word_value_block, drop_axis=words.ndim - 1, dtype=np.float64
            )
        loss = self._finish_loss(operands, words)
        return loss, self._grad(operands, input, grad_output, total)

    def partials(
        self, plan: Plan, input: Array, target: Array, weight: Array | None
    ) -> tuple[Array, Array, Array | None, Array | None]:
        """Σ w·|d| and Σ w over the plan's reduced axes as lazy float64 double words."""
        words = self._loss_words(_operands(plan, input, target, weight))
        pieces = [words[..., index] for index in range(words.shape[-1])]
        return (*pieces, None, None) if weight is None else tuple(pieces)

    # ----- loss ---------------------------------------------------------------------------

    @staticmethod
    def _loss_none(operands: _Operands) -> da.Array:
        plan = operands.plan
        return da.blockwise(
            _loss_none_block,
            operands.index,
            *operands.arrays(),
            blocks=operands.blocks,
            dtype=np.dtype(plan.result_dtype),
            meta=operands.meta_for(len(plan.shape), plan.result_dtype),
        )

    @staticmethod
    def _loss_words(operands: _Operands) -> da.Array:
        """Combined (high, low[, weight high, weight low]) words of shape out_shape + (k,)."""
        plan = operands.plan
        axes = plan.reduced_axes
        n_words = 2 if operands.weight is None else 4
        words_axis = len(plan.shape)
        words = da.blockwise(
            _partials_block,
            (*operands.index, words_axis),
            *operands.arrays(),
            new_axes={words_axis: n_words},
            adjust_chunks={ax: 1 for ax in axes},
            reduced_axes=axes,
            blocks=operands.blocks,
            dtype=np.float64,
            meta=operands.meta_for(words_axis + 1, "float64"),
        )
        if not axes:
            return words
        return _reduce_words(words, axes, keepdims=False)

    @staticmethod
    def _finish_loss(operands: _Operands, words: da.Array) -> da.Array:
        plan = operands.plan
        return words.map_blocks(
            _finish_loss_block,
            drop_axis=words.ndim - 1,
            reduction=plan.reduction,
            count=plan.count,
            result_dtype=plan.result_dtype,
            dtype=np.dtype(plan.result_dtype),
            meta=operands.meta_for(len(plan.out_shape), plan.result_dtype),
        )

    @staticmethod
    def _weight_total(operands: _Operands) -> da.Array:
        """Σ w over the reduced axes, rounded to float64, of shape out_shape."""
        plan = operands.plan
        words_axis = len(plan.shape)
        words = da.blockwise(
            _weight_partials_block,
            (*operands.index, words_axis),
            operands.weight,
            operands.index,
            new_axes={words_axis: 2},
            adjust_chunks={ax: 1 for ax in plan.reduced_axes},
            compute_dtype=plan.compute_dtype,
            reduced_axes=plan.reduced_axes,
            blocks=operands.blocks,
            dtype=np.float64,
            meta=operands.meta_for(words_axis + 1, "float64"),
        )
        words = _reduce_words(words, plan.reduced_axes, keepdims=False)
        return words.map_blocks(_word_value_block, drop_axis=words.ndim - 1, dtype=np.float64)

    # ----- gradient -----------------------------------------------------------------------

    def _grad(
        self,
        operands: _Operands,
        input: da.Array,
        grad_output: Array | float | None,
        total: da.Array | None,
    ) -> da.Array:
        plan = operands.plan
        if plan.size == 0:
            return da.zeros_like(input, dtype=np.dtype(plan.compute_dtype))
        # Pre-rounding a mean's scale to the result dtype is exact for real gradients
        # (sign · scale), but would round complex64 gradients twice, and a sum back over
        # broadcast axes must not add rounded terms: those cases run in float64/complex128.
        wide = plan.input_broadcast or (
            plan.compute_dtype == "complex64" and plan.reduction == "mean"
        )
        wide_dtype = None
        scale_dtype = plan.result_dtype
        if wide:
            wide_dtype = "complex128" if plan.is_complex else "float64"
            scale_dtype = "float64"

        weight, grad_output, grad_output_index = self._scaled(
            operands, grad_output, total, scale_dtype, wide
        )
        sum_axes = plan.input_broadcast_axes
        words_axis = len(plan.shape)
        index = operands.index
        weight_args = (None, None) if weight is None else (weight, index)
        if isinstance(grad_output, da.Array):
            grad_output_args: tuple[Any, Any] = (grad_output, grad_output_index)
        else:
            grad_output_args = (grad_output, None)
        common = {
            "reduction": "none" if plan.reduction == "none" else "sum",
            "reduced_axes": plan.reduced_axes,
            "wide_dtype": wide_dtype,
            "sum_axes": sum_axes,
            "blocks": operands.blocks,
        }
        arrays = [operands.input, index, operands.target, index, *weight_args, *grad_output_args]
        if not sum_axes:
            dtype = wide_dtype or plan.compute_dtype
            gradient = da.blockwise(
                _grad_block,
                index,
                *arrays,
                dtype=np.dtype(dtype),
                meta=operands.meta_for(len(plan.shape), dtype),
                **common,
            )
            if wide_dtype is None:
                return gradient
            return gradient.map_blocks(
                _cast_block,
                dtype=np.dtype(plan.compute_dtype),
                meta=operands.meta_for(len(plan.shape), plan.compute_dtype),
                to=plan.compute_dtype,
            )

        n_words = 4 if plan.is_complex else 2
        words = da.blockwise(
            _grad_block,
            (*index, words_axis),
            *arrays,
            new_axes={words_axis: n_words},
            adjust_chunks={ax: 1 for ax in sum_axes},
            dtype=np.float64,
            meta=operands.meta_for(words_axis + 1, "float64"),
            **common,
        )
        words = _reduce_words(words, sum_axes, keepdims=True)
        gradient = words.map_blocks(
            _finish_sum_back_block,
            drop_axis=words_axis,
            compute_dtype=plan.compute_dtype,
            dtype=np.dtype(plan.compute_dtype),
            meta=operands.meta_for(len(plan.shape), plan.compute_dtype),
        )
        lead = len(plan.shape) - len(plan.input_shape)
        return gradient[(0,) * lead] if lead else gradient

    @staticmethod
    def _scaled(
        operands: _Operands,
        grad_output: Array | float | None,
        total: da.Array | None,
        scale_dtype: str,
        wide: bool,
    ) -> tuple[da.Array | None, Array | float | None, tuple[int, ...] | None]:
        """The weight and grad_output to give each chunk's backend.

        For "sum" and "none" they are the caller's own (made float64 when wide);
        for "mean" the global scale is folded in: ``grad_output / count`` becomes
        the chunks' grad_output, or ``grad_output · w / Σw`` their weight.
        """
        plan = operands.plan
        result = plan.result_dtype
        grad_output_index: tuple[int, ...] | None = None
        if isinstance(grad_output, da.Array):
            if grad_output.ndim:
                grad_output_index = operands.kept_index
                kept_chunks = tuple(operands.chunks[ax] for ax in grad_output_index)
                if grad_output.chunks != kept_chunks:
                    grad_output = grad_output.rechunk(kept_chunks)
            else:
                grad_output_index = ()
        elif grad_output is not None:
            grad_output = float(np.asarray(grad_output, dtype=result))

        weight = operands.weight
        if plan.reduction != "mean":
            if wide and weight is not None:
                weight = _wide_real(weight, result)
            if wide and isinstance(grad_output, da.Array):
                grad_output = _wide_real(grad_output, result)
            return weight, grad_output, grad_output_index

        if weight is None and not isinstance(grad_output, da.Array):
            with np.errstate(all="ignore"):
                unit = 1.0 if grad_output is None else grad_output
                scale = np.float64(unit) / np.float64(plan.count)
            return None, float(np.asarray(scale, dtype=scale_dtype)), None

        if grad_output is None:
            grad_output = 1.0
        scale_args: list[Any] = [None, None] if weight is None else [weight, operands.index]
        if isinstance(grad_output, da.Array):
            scale_args += [grad_output, grad_output_index]
        else:
            scale_args += [grad_output, None]
        scale_args += [None, None] if total is None else [total, operands.kept_index]
        scale_index = operands.index if weight is not None else grad_output_index
        scale = da.blockwise(
            _scale_block,
            scale_index,
            *scale_args,
            reduced_axes=plan.reduced_axes,
            result_dtype=result,
            scale_dtype=scale_dtype,
            count=plan.count,
            dtype=np.dtype(scale_dtype),
            meta=operands.meta_for(len(scale_index), scale_dtype),
        )
        if weight is None:
            return None, scale, grad_output_index
        return scale, None, None


backend = DaskBackend()
