"""Graph building of the Dask backend: the L1 loss of dask arrays, lazily and chunk by chunk.

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
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np

from ..._typing import Array
from ...semantics import GradScale, Plan
from .. import out_declined
from ._blocks import (
    cast_block,
    combine_words,
    finish_loss_block,
    finish_sum_back_block,
    grad_block,
    keep_block,
    loss_none_block,
    partials_block,
    real,
    scale_block,
    weight_partials_block,
    word_value_block,
)

__all__ = ["DaskBackend", "backend"]

# Chunks per node of the reduction tree, fixed so that the tree (and so the result's
# bits) does not depend on dask's configuration.
SPLIT_EVERY = 16


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
    for role, array in zip(("input", "target", "weight"), arrays, strict=False):
        if isinstance(array._meta, np.ma.MaskedArray):
            raise TypeError(
                f"{role} is a dask array of masked chunks; l1backends does not apply masks: "
                f"fill them first ({role}.map_blocks(np.ma.filled, value))"
            )
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
    return da.map_blocks(
        real,
        array,
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
        chunk=keep_block,
        combine=combine_words,
        aggregate=combine_words,
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

    def can_run(self, plan: Plan) -> str | None:
        """Every plan but one with ``out=``: dask arrays are built lazily, not written into."""
        return out_declined(plan)

    # ----- protocol -----------------------------------------------------------------------

    def loss(self, plan: Plan, input: Array, target: Array, weight: Array | None) -> Array:
        """Return the loss described by ``plan`` as a lazy dask array."""
        operands = _operands(plan, input, target, weight)
        if plan.elementwise:
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
        if plan.needs_weight_sum and plan.size:
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
        if plan.elementwise:
            return self._loss_none(operands), self._grad(operands, input, grad_output, None)
        words = self._loss_words(operands)
        total = None
        if plan.needs_weight_sum and plan.size:
            total = da.map_blocks(
                word_value_block, words[..., 2:], drop_axis=words.ndim - 1, dtype=np.float64
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
            loss_none_block,
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
            partials_block,
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
        return da.map_blocks(
            finish_loss_block,
            words,
            drop_axis=words.ndim - 1,
            finish=plan.finish,
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
            weight_partials_block,
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
        return da.map_blocks(word_value_block, words, drop_axis=words.ndim - 1, dtype=np.float64)

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
            plan.compute_dtype == "complex64" and plan.grad_scale is not GradScale.PLAIN
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
            "reduction": "none" if plan.elementwise else "sum",
            "reduced_axes": plan.reduced_axes,
            "wide_dtype": wide_dtype,
            "sum_axes": sum_axes,
            "blocks": operands.blocks,
        }
        arrays = [operands.input, index, operands.target, index, *weight_args, *grad_output_args]
        if not sum_axes:
            dtype = wide_dtype or plan.compute_dtype
            gradient = da.blockwise(
                grad_block,
                index,
                *arrays,
                dtype=np.dtype(dtype),
                meta=operands.meta_for(len(plan.shape), dtype),
                **common,
            )
            if wide_dtype is None:
                return gradient
            return da.map_blocks(
                cast_block,
                gradient,
                dtype=np.dtype(plan.compute_dtype),
                meta=operands.meta_for(len(plan.shape), plan.compute_dtype),
                to=plan.compute_dtype,
            )

        n_words = 4 if plan.is_complex else 2
        words = da.blockwise(
            grad_block,
            (*index, words_axis),
            *arrays,
            new_axes={words_axis: n_words},
            adjust_chunks={ax: 1 for ax in sum_axes},
            dtype=np.float64,
            meta=operands.meta_for(words_axis + 1, "float64"),
            **common,
        )
        words = _reduce_words(words, sum_axes, keepdims=True)
        gradient = da.map_blocks(
            finish_sum_back_block,
            words,
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
        if plan.grad_scale is GradScale.PLAIN:
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
        assert scale_index is not None  # weighted, or grad_output is a dask array with an index
        scale = da.blockwise(
            scale_block,
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
