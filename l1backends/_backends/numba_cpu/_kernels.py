"""numba kernels of the numba-CPU backend: one general strided kernel, and flat fast paths.

**The general kernel** serves every layout, dtype and reduction.  Each operand
travels as one *record* ``(address, mode)``: the address of its first element
and its mode (see :mod:`._scalars`), or None when absent; its byte strides along
the dimensions of the iteration space are a row of the ``strides`` table (zeros
for an absent operand).  Records hold no arrays, so the per-element helpers pass
nothing that numba reference-counts.  The space is ``shape`` (the kept
dimensions, one output row per multi-index, then the reduced ones, merged by
:mod:`.._iteration`).  Work is cut into tasks that depend on the sizes alone:
blocks of whole rows when rows are many, else each row split into chunks whose
partial double words are combined in a fixed order; results are therefore the
same bits for any number of threads, and no temporary is larger than the output
or O(chunks).

What the kernel sums is a runtime setting: the loss terms ``w·|d|`` (and ``w``),
the gradient terms (to sum a broadcast input's gradient back), or the weight
alone (``Σw`` before a weighted mean's gradient).  A pass the host finds *plain*
(elementwise, over native operands of one storage, see ``_general.plain_storage``)
runs a tight loop of typed loads and stores instead of the element by mode.

**The flat kernels** serve contiguous, same-dtype float32 or float64 operands
without weights: a vectorized loop over ``LANES`` independent lanes writing
"none" outputs and gradients and summing the loss.  They are the only kernels
specialized by dtype, where the benchmark shows they pay.

Both families run a range of tasks per call and release the GIL; the backend
spreads the ranges over threads (:mod:`._threads`) and combines the partial
results in a fixed order afterwards.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit, types
from numba.extending import overload

from ...semantics import Finish, GradScale
from ._cache import cached_kernel
from ._scalars import (
    C64,
    C128,
    F64,
    JIT,
    ROUND_F32,
    ROUND_F64,
    dd_add,
    dd_divide,
    load,
    load_native,
    round_dd,
    store,
    store_native,
    two_product,
    two_sum,
)

__all__ = [
    "ACC_GRAD",
    "ACC_LOSS",
    "ACC_WEIGHT",
    "COMPENSATE",
    "COMPLEX",
    "ELEMENT_SCALE",
    "LANES",
    "compiled_entry",
    "flat_finish",
    "flat_tasks",
    "general_combine",
    "general_tasks",
]

LANES = 64

# Bits of the ``flags`` setting: what the general kernel sums and how.
COMPENSATE = 1  #: TwoSum-compensated sums (float16 for exactness, float64 for accuracy)
COMPLEX = 2  #: complex operands: the loss is the modulus
ACC_LOSS = 4  #: sum w·|d| and w per row
ACC_GRAD = 8  #: sum the gradient terms per row (a broadcast input's gradient)
ACC_WEIGHT = 16  #: sum w per row only (x and y are not read)
ELEMENT_SCALE = 32  #: the gradient's scale varies per element ("none", sums back)

# Fields of a record.
_ADDRESS, _MODE = 0, 1
# numba's overload takes its jit options as a TypedDict; the same options, untyped.
_OVERLOAD_JIT: Any = JIT
# Typed (not literal) constants, so that numba compiles each helper once, not per constant.
_RE, _IM, _ZERO = np.int64(0), np.int64(1), np.int64(0)
_ORIGIN = (_ZERO,) * 8  # every operand's offset at its first element
_TO_F32, _TO_F64 = np.int64(ROUND_F32), np.int64(ROUND_F64)
_SMALLEST_NORMAL = 2.0**-1022
_FINISH_COUNT, _FINISH_WEIGHT = Finish.MEAN_BY_COUNT, Finish.MEAN_BY_WEIGHT
_PLAIN, _BY_COUNT, _BY_WEIGHT_SUM = GradScale.PLAIN, GradScale.BY_COUNT, GradScale.BY_WEIGHT_SUM


def compiled_entry(dispatcher: Any, args: tuple[Any, ...]) -> Any:
    """The compiled overload of ``dispatcher`` for ``args``, callable without type dispatch.

    numba keeps each compiled overload's entry point in ``dispatcher.overloads``; this
    is the one place that reaches into it, and it falls back to the dispatcher itself
    when that internal changes.
    """
    try:
        signature = tuple(map(dispatcher.typeof_pyval, args))
        return dispatcher.overloads[signature].entry_point
    except (AttributeError, KeyError, TypeError):
        return dispatcher


# ----- the general kernel -------------------------------------------------------------------


# numba prunes a branch on ``record is None`` only where the record is a function's own
# argument, so every optional operand is touched through one of these helpers.


@njit(**JIT)
def _load_or(record, offset, part, default):
    if record is None:
        return default
    return load(record[_ADDRESS], offset, record[_MODE], part)


@njit(**JIT)
def _write_if(record, offset, high, low):
    if record is None:
        return
    store(record[_ADDRESS], offset, record[_MODE], high, low)


@njit(**JIT)
def _sign_times(difference, scale):
    """sign(difference) · scale: 0 at a tie, NaN where the difference is NaN."""
    if difference > 0.0:
        return scale
    if difference < 0.0:
        return -scale
    if difference == 0.0:
        return 0.0 * scale
    return difference


@njit(**JIT)
def _scale(s, sw, offsets, settings, weight_sum):
    """``grad_output / divisor`` at these offsets as a double word; (0, 0) without a gradient.

    The divisor is 1, the count, or Σw: ``weight_sum`` when the caller summed the row,
    else the precomputed words of ``sw``.
    """
    if s is None:
        return 0.0, 0.0
    g = load(s[_ADDRESS], offsets[3], s[_MODE], _RE)
    kind = settings[7]
    if kind == _PLAIN:
        return g, 0.0
    if kind == _BY_COUNT:
        return dd_divide(g, 0.0, np.float64(settings[2]), 0.0)
    high = _load_or(sw, offsets[4], _RE, weight_sum[0])
    low = _load_or(sw, offsets[4], _IM, weight_sum[1])
    # Σw was summed from weights scaled by w_scale (an exact power of two) if it overflowed.
    return dd_divide(g, 0.0, high, low)


@njit(**JIT)
def _gradient(s, scale, difference, magnitude, wv, flags):
    """The gradient term ``(re, re_low, im)`` of one element: 0s when no gradient is wanted.

    Real: ``sign(d) · scale · w`` with the product kept as a double word; complex:
    ``d / |d| · scale · w``, NaN in both parts where the difference is not finite.
    ``difference`` may be ``d`` times a power of two (its direction is what counts),
    and ``magnitude`` is its modulus.
    """
    if s is None:
        return 0.0, 0.0, 0.0
    high, error = two_product(scale[0], wv)
    error += scale[1] * wv
    if flags & COMPLEX:
        re, im = difference
        if not (math.isfinite(re) and math.isfinite(im)):
            return math.nan, 0.0, math.nan
        unit = magnitude if magnitude != 0.0 else 1.0
        return _part_times(re, unit, high), 0.0, _part_times(im, unit, high)
    re = difference[0]
    return _sign_times(re, high), _sign_times(re, error), 0.0


@njit(**JIT)
def _part_times(part, modulus, scale):
    """``part / modulus · scale``, one part of a complex gradient, rounded as little as it can be.

    The quotient is at most 1 in magnitude; where it falls below float64's normal
    range (it lost bits, or became 0 in front of an infinite scale) the three numbers
    are taken apart into mantissas and exponents, so only the final result can
    underflow or overflow.
    """
    quotient = part / modulus
    product = quotient * scale
    if part == 0.0 or (abs(quotient) >= _SMALLEST_NORMAL and math.isfinite(product)):
        return product
    part_m, part_e = math.frexp(part)
    modulus_m, modulus_e = math.frexp(modulus)
    scale_m, scale_e = math.frexp(scale)
    return math.ldexp(part_m / modulus_m * scale_m, part_e - modulus_e + scale_e)


@njit(**JIT)
def _all_finite(a, b, c, d):
    return math.isfinite(a) and math.isfinite(b) and math.isfinite(c) and math.isfinite(d)


@njit(**JIT)
def _weight(w, offset, w_scale):
    if w is None:
        return 1.0
    return load(w[_ADDRESS], offset, w[_MODE], _RE) * w_scale


@njit(**JIT, inline="always")
def _element(reads, writes, offsets, settings, row_scale):
    """One element: write the requested outputs and return the terms to sum.

    Returns ``(a_high, a_low, b_high, b_low)``: the loss term ``w·|d|`` and the
    weight ``w`` (loss sums), the gradient's real and imaginary parts (gradient
    sums), or the weight alone.  ``row_scale`` is the gradient's scale of the row,
    unless it varies per element (``ELEMENT_SCALE``).
    """
    x, y, w, s, sw = reads
    flags, x_scale = settings[0], settings[3]
    wv = _weight(w, offsets[2], settings[4])
    if flags & ACC_WEIGHT:
        return 0.0, 0.0, wv, 0.0
    xr = _load_or(x, offsets[0], _RE, 0.0) * x_scale
    yr = _load_or(y, offsets[1], _RE, 0.0) * x_scale
    if flags & COMPLEX:
        xi = _load_or(x, offsets[0], _IM, 0.0) * x_scale
        yi = _load_or(y, offsets[1], _IM, 0.0) * x_scale
        re, im = xr - yr, xi - yi
        high, low = math.hypot(re, im), 0.0
        direction, length = (re, im), high
        if math.isinf(high) and _all_finite(xr, yr, xi, yi):
            # d or |d| beyond float64 from finite data: d/4 has the same, finite, direction.
            re4, im4 = xr * 0.25 - yr * 0.25, xi * 0.25 - yi * 0.25
            direction, length = (re4, im4), math.hypot(re4, im4)
    else:
        re, error = two_sum(xr, -yr)
        high, low, im = abs(re), (error if re >= 0.0 else -error), 0.0
        direction, length = (re, im), high
    term_high, term_low = high, low
    if wv != 1.0:
        term_high, product_error = two_product(high, wv)
        term_low = product_error + low * wv
    _write_if(writes[0], offsets[5], term_high, term_low)
    scale = row_scale
    if flags & ELEMENT_SCALE:
        scale = _scale(s, sw, offsets, settings, (0.0, 0.0))
    grad_re, grad_low, grad_im = _gradient(s, scale, direction, length, wv, flags)
    _write_if(writes[1], offsets[6], grad_re, grad_low)
    if flags & COMPLEX:
        _write_if(writes[1], offsets[6] + settings[6], grad_im, 0.0)
    if flags & ACC_GRAD:
        return grad_re, grad_low, grad_im, 0.0
    return term_high, term_low, wv, 0.0


@njit(**JIT)
def _plain_run(reads, writes, offsets, steps, run, storage, imaginary):
    """Elements ``0 .. run - 1`` of a plain pass over inputs of ``storage``.

    A plain pass (chosen by the host, see ``_general.plain_storage``) writes
    ``|x - y|``, ``w·|x - y|`` or ``sign(x - y) · g`` elementwise over native
    operands of one storage, read and written as typed values: each result is
    one rounding of a float64 computation, or (weighted) of the same double
    word the general element forms.  ``imaginary`` is the byte offset of a
    complex value's imaginary part.
    """
    x, y, w, s = reads[0], reads[1], reads[2], reads[3]
    out, gr = writes[0], writes[1]
    wide = storage in (F64, C128)
    if _weighted_run(x, y, w, out, offsets, steps, run, wide):
        return
    if storage in (C64, C128):
        for i in range(run):
            at = _ahead(offsets, steps, i)
            re = _plain_read(x, at[0], wide) - _plain_read(y, at[1], wide)
            im = _plain_read(x, at[0] + imaginary, wide) - _plain_read(y, at[1] + imaginary, wide)
            _plain_write(out, at[5], math.hypot(re, im), wide)
        return
    for i in range(run):
        at = _ahead(offsets, steps, i)
        difference = _plain_read(x, at[0], wide) - _plain_read(y, at[1], wide)
        _plain_write(out, at[5], abs(difference), wide)
        _plain_gradient(s, gr, at[3], at[6], difference, wide)


@njit(**JIT)
def _weighted_run(x, y, w, out, offsets, steps, run, wide):
    """A weighted plain loss run (False, doing nothing, without a weight)."""
    if x is None or y is None or w is None or out is None:
        return False
    rounding = _TO_F64 if wide else _TO_F32
    for i in range(run):
        at = _ahead(offsets, steps, i)
        xv, yv = load_native(x[_ADDRESS], at[0], wide), load_native(y[_ADDRESS], at[1], wide)
        re, error = two_sum(xv, -yv)
        high, low = abs(re), (error if re >= 0.0 else -error)
        wv = load_native(w[_ADDRESS], at[2], wide)
        if wv != 1.0:  # as _element: the product kept as a double word, rounded once
            product, product_error = two_product(high, wv)
            high, low = product, product_error + low * wv
        store_native(out[_ADDRESS], at[5], round_dd(high, low, rounding), wide)
    return True


@njit(**JIT)
def _plain_read(record, offset, wide):
    if record is None:  # passes that read the weight alone are never plain
        return 0.0
    return load_native(record[_ADDRESS], offset, wide)


@njit(**JIT)
def _plain_write(record, offset, value, wide):
    if record is None:
        return
    store_native(record[_ADDRESS], offset, value, wide)


@njit(**JIT)
def _plain_gradient(s, gr, s_offset, gr_offset, difference, wide):
    if s is None or gr is None:
        return
    g = load_native(s[_ADDRESS], s_offset, wide)
    # + 0.0 as the general element's double word (0·g, +0) rounds: a tie is +0 for any g.
    store_native(gr[_ADDRESS], gr_offset, _sign_times(difference, g) + 0.0, wide)


@njit(**JIT)
def _add(acc, terms, compensate):
    """Add the terms (a_high, a_low, b_high, b_low) to the accumulator, compensated or not."""
    if compensate:
        a_high, a_low = dd_add(acc[0], acc[1], terms[0], terms[1])
        b_high, b_low = dd_add(acc[2], acc[3], terms[2], terms[3])
        return a_high, a_low, b_high, b_low
    return acc[0] + terms[0], acc[1] + terms[1], acc[2] + terms[2], acc[3] + terms[3]


@njit(**JIT)
def _moved(offsets, strides, dim, index):
    """``offsets`` moved ``index`` steps along dimension ``dim`` for every operand."""
    return _ahead(offsets, _column(strides, dim), index)


@njit(**JIT)
def _column(strides, dim):
    """Every operand's byte stride along dimension ``dim``, as a tuple of scalars."""
    return (
        strides[0, dim], strides[1, dim], strides[2, dim], strides[3, dim],
        strides[4, dim], strides[5, dim], strides[6, dim], strides[7, dim],
    )  # fmt: skip


@njit(**JIT)
def _ahead(offsets, steps, index):
    """``offsets`` plus ``index`` times ``steps``, operand by operand."""
    return (
        offsets[0] + index * steps[0], offsets[1] + index * steps[1],
        offsets[2] + index * steps[2], offsets[3] + index * steps[3],
        offsets[4] + index * steps[4], offsets[5] + index * steps[5],
        offsets[6] + index * steps[6], offsets[7] + index * steps[7],
    )  # fmt: skip


@njit(**JIT)
def _at(shape, first, last, index, strides, offsets):
    """Offsets of C-order multi-index ``index`` over dimensions ``first .. last - 1``."""
    for dim in range(last - 1, first - 1, -1):
        offsets = _moved(offsets, strides, dim, index % shape[dim])
        index //= shape[dim]
    return offsets


@njit(**JIT)
def _row_elements(
    shape, nkept, strides, reads, writes, settings, row_offsets, span, position, row_scale
):
    """Sum elements ``span[0] .. span[1] - 1`` of one row (an odometer over the reduced dims).

    ``position`` is the task's scratch multi-index, so that no row allocates.  The
    innermost loop touches scalars only: the steps along the last dimension are
    read from ``strides`` once per row.
    """
    ndim = shape.size
    last = ndim - 1
    start, stop = span
    compensate = (settings[0] & COMPENSATE) != 0
    summing = (settings[0] & (ACC_LOSS | ACC_GRAD | ACC_WEIGHT)) != 0
    plain = settings[8]
    acc = (0.0, 0.0, 0.0, 0.0)
    steps = _column(strides, last)
    offsets = row_offsets
    if start == 0:  # a whole row, or its first chunk: no divisions to find the start
        for dim in range(nkept, ndim):
            position[dim] = 0
    else:
        offsets = _at(shape, nkept, ndim, start, strides, row_offsets)
        index = start
        for dim in range(last, nkept - 1, -1):
            position[dim] = index % shape[dim]
            index //= shape[dim]
    done = start
    while done < stop:
        run = min(shape[last] - position[last], stop - done)
        if summing:  # first: a Σw sweep inherits the settings of its (never plain) pass
            for i in range(run):
                terms = _element(reads, writes, _ahead(offsets, steps, i), settings, row_scale)
                acc = _add(acc, terms, compensate)
        elif plain:
            _plain_run(reads, writes, offsets, steps, run, plain, settings[6])
        else:  # elementwise outputs only: no chain of additions to wait on
            for i in range(run):
                _element(reads, writes, _ahead(offsets, steps, i), settings, row_scale)
        done += run
        offsets = _ahead(offsets, steps, run)
        position[last] += run
        dim = last
        while dim > nkept and position[dim] == shape[dim]:
            offsets = _moved(offsets, strides, dim, -shape[dim])
            position[dim] = 0
            dim -= 1
            position[dim] += 1
            offsets = _moved(offsets, strides, dim, 1)
    return acc


@njit(**JIT)
def _row_settings(shape, nkept, strides, reads, writes, settings, offsets, position):
    """The settings and gradient scale of one whole row of a reduction.

    For a weighted mean's gradient Σw is summed first, over the row's weights only
    (again with weights scaled by a power of two if it overflowed), so no Σw array
    is ever needed when rows are not split.
    """
    s, sw = reads[3], reads[4]
    weight_sum = (0.0, 0.0)
    if settings[7] == _BY_WEIGHT_SUM and sw is None and s is not None:
        flags = (settings[0] & COMPENSATE) | ACC_WEIGHT
        # Concatenated, not starred: numba cannot build a tuple from starred parts.
        sweep = (flags,) + settings[1:]  # noqa: RUF005
        span = (_ZERO, _row_length(shape, nkept))
        acc = _row_elements(
            shape, nkept, strides, reads, writes, sweep, offsets, span, position, (0.0, 0.0)
        )
        if math.isinf(acc[2]):
            w_scale = 2.0 ** -(_bit_length(span[1]) + 1)
            settings = settings[:4] + (w_scale,) + settings[5:]  # noqa: RUF005
            sweep = sweep[:4] + (w_scale,) + sweep[5:]  # noqa: RUF005
            acc = _row_elements(
                shape, nkept, strides, reads, writes, sweep, offsets, span, position, (0.0, 0.0)
            )
        weight_sum = (acc[2], acc[3])
    return settings, _scale(s, sw, offsets, settings, weight_sum)


@njit(**JIT)
def _row_length(shape, nkept):
    """Elements per row: the product of the reduced dimensions."""
    count = _ZERO + 1
    for dim in range(nkept, shape.size):
        count *= shape[dim]
    return count


@njit(**JIT)
def _bit_length(value):
    bits = 0
    while value > 0:
        value >>= 1
        bits += 1
    return bits


@njit(**JIT)
def _finish_into(row_out, offset, acc, settings):
    """Write one row's finished loss, or its summed gradient, into ``row_out``."""
    if row_out is None:
        return
    flags, finish, count, out_scale = settings[0], settings[1], settings[2], settings[5]
    if flags & ACC_GRAD:
        store(row_out[_ADDRESS], offset, row_out[_MODE], acc[0], acc[1])
        if flags & COMPLEX:
            store(row_out[_ADDRESS], offset + settings[6], row_out[_MODE], acc[2], acc[3])
        return
    high, low = acc[0], acc[1]
    if finish == _FINISH_COUNT:
        high, low = dd_divide(high, low, np.float64(count), 0.0)
    elif finish == _FINISH_WEIGHT:
        high, low = dd_divide(high, low, acc[2], acc[3])
    store(row_out[_ADDRESS], offset, row_out[_MODE], high * out_scale, low * out_scale)


@njit(**JIT)
def _finish_row(acc, writes, offset, settings, words, row):
    """One row's result: its finished value and/or its raw double words."""
    if words is not None:
        for k in range(4):
            words[row, k] = acc[k]
    _finish_into(writes[2], offset, acc, settings)


@njit(**JIT)
def _row_offset(strides, shape, nkept, row):
    """The byte offset of output row ``row`` in the row output (operand 7)."""
    offset = _ZERO
    for dim in range(nkept - 1, -1, -1):
        offset += (row % shape[dim]) * strides[7, dim]
        row //= shape[dim]
    return offset


@njit(**JIT)
def _general_task(task, shape, strides, reads, writes, settings, layout, partials, words):
    """Task ``task``: rows of one block, elements of one chunk of each (see the module doc)."""
    rows, count, nblocks, nchunks, chunk, nkept = layout
    block, part = task // nchunks, task % nchunks
    first, last = block * rows // nblocks, (block + 1) * rows // nblocks
    span = (part * chunk, min(count, (part + 1) * chunk))
    offsets = _at(shape, _ZERO, nkept, first, strides, _ORIGIN)
    position = np.empty(shape.size, np.int64)  # kept dims: this task's row; reduced: scratch
    index = first
    for dim in range(nkept - 1, -1, -1):
        position[dim] = index % shape[dim]
        index //= shape[dim]
    for row in range(first, last):
        row_settings, row_scale = settings, (0.0, 0.0)
        if not settings[0] & ELEMENT_SCALE:
            row_settings, row_scale = _row_settings(
                shape, nkept, strides, reads, writes, settings, offsets, position
            )
        acc = _row_elements(
            shape, nkept, strides, reads, writes, row_settings, offsets, span, position, row_scale
        )
        if nchunks == 1:
            _finish_row(acc, writes, offsets[7], row_settings, words, row)
        else:
            for k in range(4):
                partials[task, k] = acc[k]
        dim = nkept - 1
        if dim < 0:
            continue
        offsets = _moved(offsets, strides, dim, 1)
        position[dim] += 1
        while dim > 0 and position[dim] == shape[dim]:
            offsets = _moved(offsets, strides, dim, -shape[dim])
            position[dim] = 0
            dim -= 1
            position[dim] += 1
            offsets = _moved(offsets, strides, dim, 1)


@cached_kernel(**JIT)
def general_tasks(first, last, shape, strides, reads, writes, settings, layout, partials, words):
    """Run tasks ``first .. last - 1`` of the general kernel (see the module doc).

    ``strides`` (8, dimensions) holds each operand's byte strides, in the order of
    ``reads`` (x, y, w, s, sw) then ``writes`` (out, gr, row).
    ``settings`` is ``(flags, finish, count, x_scale, w_scale, out_scale, imag_offset,
    grad_scale, plain)``, ``plain`` the inputs' storage in a plain pass, else 0;
    ``layout`` is ``(rows, count, nblocks, nchunks, chunk, nkept)``, ``shape`` holding
    ``nkept`` kept dimensions then the reduced ones; ``partials`` (tasks, 4)
    receives each task's double words when rows are split into chunks; ``words`` (rows,
    4) receives each row's unrounded double words, or is None.
    """
    for task in range(first, last):
        _general_task(task, shape, strides, reads, writes, settings, layout, partials, words)


@cached_kernel(**JIT)
def general_combine(shape, strides, row_out, settings, layout, partials, words):
    """Combine each row's chunk partials in a fixed order and finish the row into ``row_out``."""
    rows, nchunks, nkept = layout[0], layout[3], layout[5]
    for row in range(rows):
        acc = (0.0, 0.0, 0.0, 0.0)
        for part in range(nchunks):
            task = row * nchunks + part
            terms = (partials[task, 0], partials[task, 1], partials[task, 2], partials[task, 3])
            acc = _add(acc, terms, True)  # chunk sums are double words whatever the lanes
        if words is not None:
            for k in range(4):
                words[row, k] = acc[k]
        _finish_into(row_out, _row_offset(strides, shape, nkept, row), acc, settings)


# ----- the flat kernels ---------------------------------------------------------------------


def _lane_add(lanes, j, high, low):
    """Add (high, low) to lane ``j``: compensated for float64 data, plain for float32."""


@overload(_lane_add, jit_options=_OVERLOAD_JIT)
def _lane_add_impl(lanes, j, high, low):
    if lanes.ndim == 2:  # float64 data: (2, LANES) compensated lanes

        def compensated(lanes, j, high, low):
            s, e = two_sum(lanes[0, j], high)
            lanes[0, j] = s
            lanes[1, j] += e + low

        return compensated

    def plain(lanes, j, high, low):
        lanes[j] += high

    return plain


def _new_lanes(like):
    """Zeroed lanes for data like ``like``: (2, LANES) for float64, (LANES,) for float32."""


@overload(_new_lanes, jit_options=_OVERLOAD_JIT)
def _new_lanes_impl(like):
    if like.dtype == types.float64:
        return lambda like: np.zeros((2, LANES))
    return lambda like: np.zeros(LANES)


@njit(**JIT)
def _lane_total(lanes):
    high = low = 0.0
    if lanes.ndim == 2:
        for j in range(LANES):
            high, low = dd_add(high, low, lanes[0, j], lanes[1, j])
    else:
        for j in range(LANES):
            high, low = dd_add(high, low, lanes[j], 0.0)
    return high, low


@njit(**JIT)
def _flat_chunk(x, y, out, gr, scale, start, stop, accumulate):
    """One chunk of contiguous operands: "none" outputs, gradients and the chunk's sum."""
    lanes = _new_lanes(x)
    for base in range(start, stop, LANES):
        width = min(LANES, stop - base)
        for j in range(width):
            # An unsigned index spares numba's negative-index wraparound, which would
            # block vectorization; chunks never start below 0.
            i = np.uint64(base + j)
            if out is not None:
                out[i] = abs(x[i] - y[i])  # one correctly rounded subtraction
            if gr is not None:
                gr[i] = _sign_times(x[i] - y[i], scale)
            if accumulate:
                high, low = two_sum(np.float64(x[i]), -np.float64(y[i]))
                _lane_add(lanes, j, abs(high), low if high >= 0.0 else -low)
    return _lane_total(lanes)


@cached_kernel(**JIT)
def flat_tasks(first, last, x, y, out, gr, scale, layout, partials):
    """Chunks ``first .. last - 1`` of contiguous float32 or float64 operands of one size.

    ``layout`` is ``(nchunks, chunk, finish)``; a ``finish`` of ``Finish.NONE`` sums
    nothing.  Each chunk writes its "none" outputs and gradient elements, and its sum's
    double word into ``partials`` (a zero-row array where no partial is wanted).
    Returns :func:`flat_finish` of the range's sum: the loss itself when the range is
    every chunk, so one call serves a whole serial pass.
    """
    chunk, accumulate = layout[1], layout[2] != 0
    high = low = 0.0
    for part in range(first, last):
        stop = min(x.size, (part + 1) * chunk)
        part_high, part_low = _flat_chunk(x, y, out, gr, scale, part * chunk, stop, accumulate)
        if partials.shape[0]:
            partials[part, 0], partials[part, 1] = part_high, part_low
        high, low = dd_add(high, low, part_high, part_low)
    return _finish_flat(high, low, layout[2], x.size, x.itemsize)


@njit(**JIT)
def _finish_flat(high, low, finish, count, itemsize):
    """``(loss, high, low)``: the loss rounded once to the data's dtype (held in float64),
    and the sum as an unrounded double word."""
    value_high, value_low = high, low
    if finish == _FINISH_COUNT:
        value_high, value_low = dd_divide(high, low, np.float64(count), 0.0)
    rounding = _TO_F64 if itemsize == 8 else _TO_F32
    return round_dd(value_high, value_low, rounding), high, low


@cached_kernel(**JIT)
def flat_finish(partials, finish, count, itemsize):
    """:func:`_finish_flat` of the chunks' partial sums, added in order (parallel passes)."""
    high = low = 0.0
    for part in range(partials.shape[0]):
        high, low = dd_add(high, low, partials[part, 0], partials[part, 1])
    return _finish_flat(high, low, finish, count, itemsize)
