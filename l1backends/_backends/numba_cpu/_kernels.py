"""numba kernels of the numba-CPU backend.

Every kernel makes one pass over its operands.  The work is cut into a number of
tasks that depends on the problem size alone (``outputs x chunks``); each task
sums its elements in ``LANES`` independent compensated lanes (TwoSum), so the
inner loop vectorizes without ``fastmath`` reassociation, and the task partials
are combined in a fixed order.  The bits of every result are therefore the same
for any number of threads.

Operands are flat 1-D views of the arrays' memory, addressed by element offsets
and strides, so no layout is ever copied.  How a stored value becomes a float64
is chosen at compile time by the *type* of a "mode" token passed beside it:

==============  ===========================================================
token type      conversion of the stored value
==============  ===========================================================
``float64``     exact widening (float32, float64, or integers to float64)
``float32``     round to float32 first (integers, weights cast to float32)
``uint16``      the value holds float16 bits: decode them exactly
``int16``       round to float16 first (integers or weights cast to float16)
==============  ===========================================================

Optional operands are passed as None; numba prunes the code that uses them.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

LANES = 64
# Where partial results live: one row per task.
_SUM, _SUM_LOW, _WSUM, _WSUM_LOW = 0, 1, 2, 3
# How a reduction is finished: a plain (rounded) sum, divided by the count, or by Σw.
FINISH_SUM, FINISH_COUNT, FINISH_WEIGHT = 0, 1, 2

_jit = {"error_model": "numpy", "nogil": True}
_TWO_1008 = 2.0**1008
_U = np.uint64


@intrinsic
def _f64_from_bits(typingctx, bits):
    if bits != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.uint64), codegen


@intrinsic
def _bits_from_f64(typingctx, value):
    if value != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.uint64(types.float64), codegen


@njit(**_jit)
def half_to_f64(h):
    """Decode float16 bits exactly (numba has no CPU float16 type)."""
    bits = _U(h)
    magnitude = bits & _U(0x7FFF)
    shifted = (magnitude << _U(42)) | ((bits & _U(0x8000)) << _U(48))
    # Shifting the exponent and mantissa into float64's place scales finite values by 2**-1008.
    finite = _f64_from_bits(shifted) * _TWO_1008
    special = _f64_from_bits(shifted | _U(0x7FF0000000000000))
    return special if magnitude >= _U(0x7C00) else finite


@njit(**_jit)
def f64_to_half(value):
    """Round a float64 to float16 bits, to nearest with ties to even."""
    bits = _bits_from_f64(value)
    sign = (bits >> _U(48)) & _U(0x8000)
    magnitude = abs(value)
    exponent = max(np.int64((bits >> _U(52)) & _U(0x7FF)) - 1023, -14)
    # Scaling by a power of two is exact; rint then rounds to the float16 spacing.
    scale = _f64_from_bits(_U(1033 - exponent) << _U(52))
    quantum = np.rint(magnitude * scale)
    encoded = _U((exponent + 14) << 10) + _U(np.int64(quantum) if magnitude < 65520.0 else 0)
    if magnitude != magnitude:
        encoded = _U(0x7E00)
    elif magnitude >= 65520.0:
        encoded = _U(0x7C00)
    return np.uint16(sign | encoded)


def widen(value, mode):
    """Convert a stored value to float64 as its mode token says (compile-time dispatch)."""


@overload(widen, jit_options=_jit)
def _widen_impl(value, mode):
    if mode == types.float64:
        return lambda value, mode: np.float64(value)
    if mode == types.float32:
        return lambda value, mode: np.float64(np.float32(value))
    if mode == types.uint16:
        return lambda value, mode: half_to_f64(value)
    if mode == types.int16:
        return lambda value, mode: half_to_f64(f64_to_half(np.float64(value)))
    return None


def store(array, index, value):
    """Round a float64 into ``array[index]`` (float16 arrays are viewed as uint16)."""


@overload(store, jit_options=_jit)
def _store_impl(array, index, value):
    if array.dtype == types.float64:

        def impl(array, index, value):
            array[index] = value

        return impl
    if array.dtype == types.float32:

        def impl(array, index, value):
            array[index] = np.float32(value)

        return impl
    if array.dtype == types.uint16:

        def impl(array, index, value):
            array[index] = f64_to_half(value)

        return impl
    return None


@njit(**_jit)
def two_sum(a, b):
    """Knuth's TwoSum: s + e == a + b exactly."""
    s = a + b
    virtual = s - a
    return s, (a - (s - virtual)) + (b - virtual)


@njit(**_jit)
def dd_add(high, low, other_high, other_low):
    """Add two double words (the rounding error of the high words is kept)."""
    s, e = two_sum(high, other_high)
    return s, low + (e + other_low)


@njit(**_jit)
def _two_product(a, b):
    splitter = 134217729.0
    product = a * b
    scaled = splitter * a
    a_high = scaled - (scaled - a)
    a_low = a - a_high
    scaled = splitter * b
    b_high = scaled - (scaled - b)
    b_low = b - b_high
    error = ((a_high * b_high - product) + a_high * b_low + a_low * b_high) + a_low * b_low
    return product, error


@njit(**_jit)
def dd_value(high, low):
    """Round a double word once; a non-finite high word stands alone."""
    return high + low if math.isfinite(high) else high


@njit(**_jit)
def dd_divide(high, low, divisor_high, divisor_low):
    """Double-word division, rounded once (as ``l1backends.numerics.dd_divide``)."""
    quotient = high / divisor_high
    product, product_error = _two_product(quotient, divisor_high)
    remainder = (((high - product) - product_error) + low) - quotient * divisor_low
    correction = remainder / divisor_high
    return quotient + correction if math.isfinite(correction) else quotient


@njit(**_jit)
def finish(high, low, weight_high, weight_low, how, count):
    """Turn one output's double-word sums into the float64 loss value."""
    if how == FINISH_SUM:
        return dd_value(high, low)
    if how == FINISH_COUNT:
        return dd_divide(high, low, np.float64(count), 0.0)
    return dd_divide(high, low, weight_high, weight_low)


# The operands travel as separate arguments, not a tuple: numba prunes the code of an
# optional operand only when the argument itself is typed None.


@njit(**_jit)
def _at(offset):
    # Unsigned indices spare numba's negative-index wraparound, which blocks vectorization;
    # every offset is non-negative because flat views start at the lowest address.
    return np.uint64(offset)


@njit(**_jit)
def _element(
    i,
    x,
    ox,
    sx,
    xm,
    xim,
    y,
    oy,
    sy,
    ym,
    yim,
    w,
    ow,
    sw,
    wm,
    g,
    og,
    sg,
    gm,
    out,
    oo,
    so,
    gr,
    orr,
    sr,
    sc,
    accumulate,
):
    """Process element ``i`` of a segment: write requested outputs, return its loss term.

    Returns ``(term_high, term_low, weight)``: w·|d| as a double word, and w (0 when
    unweighted, so that the weight lanes fold away).
    """
    xr = widen(x[_at(ox + i * sx)], xm)
    if y is None:  # weight-only pass: x holds the weight, whose sum is wanted
        return xr, 0.0, 0.0
    wv = 1.0
    if w is not None:
        wv = widen(w[_at(ow + i * sw)], wm)
    yr = widen(y[_at(oy + i * sy)], ym)
    if xim is None and yim is None:
        dh, dl = two_sum(xr, -yr)
        mag = abs(dh)
        mag_low = dl if dh >= 0.0 else -dl
        di = 0.0
    else:
        xi = 0.0
        yi = 0.0
        if xim is not None:
            xi = widen(x[_at(ox + i * sx + 1)], xm)
        if yim is not None:
            yi = widen(y[_at(oy + i * sy + 1)], ym)
        dh = xr - yr
        di = xi - yi
        mag = math.hypot(dh, di)
        mag_low = 0.0
    if out is not None:
        store(out, _at(oo + i * so), mag * wv)
    if gr is not None:
        scale = sc * wv
        if g is not None:
            scale = scale * widen(g[_at(og + i * sg)], gm)
        if xim is None and yim is None:
            sign = 1.0 if dh > 0.0 else (-1.0 if dh < 0.0 else 0.0)
            if dh != dh:
                sign = dh
            store(gr, _at(orr + i * sr), sign * scale)
        else:
            safe = mag if mag != 0.0 else 1.0
            unit_re = dh / safe
            unit_im = di / safe
            if not math.isfinite(dh) or not math.isfinite(di):
                unit_re = math.nan
                unit_im = math.nan
            store(gr, _at(orr + i * sr), unit_re * scale)
            store(gr, _at(orr + i * sr + 1), unit_im * scale)
    if accumulate is None:
        return 0.0, 0.0, 0.0
    if w is None:
        return mag, mag_low, 0.0
    return mag * wv, mag_low * wv, wv


def add_term(lanes, row, j, high, low, accumulate):
    """Add the term (high, low) to lane ``j`` of rows ``row`` and ``row + 1`` of ``lanes``."""


@overload(add_term, jit_options=_jit)
def _add_term_impl(lanes, row, j, high, low, accumulate):
    if accumulate == types.float64:  # float64 data: compensated (TwoSum) lanes

        def impl(lanes, row, j, high, low, accumulate):
            s, e = two_sum(lanes[row, j], high)
            lanes[row, j] = s
            lanes[row + 1, j] += e + low

        return impl
    if accumulate == types.float32:
        # float16/float32 data: a float64 lane holds each difference exactly and sums
        # ~1e4 terms per lane, far below a float32 ulp, at half the work.
        def impl(lanes, row, j, high, low, accumulate):
            lanes[row, j] += high

        return impl
    return None


@njit(**_jit)
def _step(
    lanes,
    j,
    i,
    x,
    ox,
    sx,
    xm,
    xim,
    y,
    oy,
    sy,
    ym,
    yim,
    w,
    ow,
    sw,
    wm,
    g,
    og,
    sg,
    gm,
    out,
    oo,
    so,
    gr,
    orr,
    sr,
    sc,
    accumulate,
):
    th, tl, wv = _element(
        i,
        x,
        ox,
        sx,
        xm,
        xim,
        y,
        oy,
        sy,
        ym,
        yim,
        w,
        ow,
        sw,
        wm,
        g,
        og,
        sg,
        gm,
        out,
        oo,
        so,
        gr,
        orr,
        sr,
        sc,
        accumulate,
    )
    if accumulate is not None:
        add_term(lanes, _SUM, j, th, tl, accumulate)
        if w is not None:
            add_term(lanes, _WSUM, j, wv, 0.0, accumulate)


@njit(**_jit)
def segment(
    m,
    lanes,
    x,
    ox,
    sx,
    xm,
    xim,
    y,
    oy,
    sy,
    ym,
    yim,
    w,
    ow,
    sw,
    wm,
    g,
    og,
    sg,
    gm,
    out,
    oo,
    so,
    gr,
    orr,
    sr,
    sc,
    accumulate,
):
    """Process ``m`` elements, element ``i`` into lane ``i % LANES`` of ``lanes``.

    ``lanes`` (shape ``(4, LANES)``) holds the running compensated sums of the loss
    term and the weight.  numba does not run LLVM's SLP vectorizer, so the lanes live
    in memory and the loop over them is a plain map that the loop vectorizer takes.
    """
    unit = sx == 1 and sy == 1 and so == 1 and sr == 1
    for base in range(0, m, LANES):
        k = min(LANES, m - base)
        # The unit-stride copy has its strides as constants: contiguous vector loads.
        if unit:
            for j in range(k):
                _step(
                    lanes,
                    j,
                    base + j,
                    x,
                    ox,
                    1,
                    xm,
                    xim,
                    y,
                    oy,
                    1,
                    ym,
                    yim,
                    w,
                    ow,
                    sw,
                    wm,
                    g,
                    og,
                    sg,
                    gm,
                    out,
                    oo,
                    1,
                    gr,
                    orr,
                    1,
                    sc,
                    accumulate,
                )
        else:
            for j in range(k):
                _step(
                    lanes,
                    j,
                    base + j,
                    x,
                    ox,
                    sx,
                    xm,
                    xim,
                    y,
                    oy,
                    sy,
                    ym,
                    yim,
                    w,
                    ow,
                    sw,
                    wm,
                    g,
                    og,
                    sg,
                    gm,
                    out,
                    oo,
                    so,
                    gr,
                    orr,
                    sr,
                    sc,
                    accumulate,
                )


@njit(**_jit)
def merge_lanes(lanes):
    """Sum the lanes in a fixed order; returns (sum_high, sum_low, wsum_high, wsum_low)."""
    s = c = ws = wc = 0.0
    for j in range(LANES):
        s, c = dd_add(s, c, lanes[_SUM, j], lanes[_SUM_LOW, j])
        ws, wc = dd_add(ws, wc, lanes[_WSUM, j], lanes[_WSUM_LOW, j])
    return s, c, ws, wc


@njit(**_jit)
def _flat_task(t, chunk, x, xm, y, ym, w, wm, out, gr, sc, accumulate, partial):
    start = t * chunk
    stop = min(start + chunk, x.size)
    lanes = np.zeros((4, LANES))
    segment(
        stop - start,
        lanes,
        x,
        start,
        1,
        xm,
        None,
        y,
        start,
        1,
        ym,
        None,
        w,
        start,
        1,
        wm,
        None,
        0,
        0,
        xm,
        out,
        start,
        1,
        gr,
        start,
        1,
        sc,
        accumulate,
    )
    if accumulate is not None:
        partial[t, _SUM], partial[t, _SUM_LOW], partial[t, _WSUM], partial[t, _WSUM_LOW] = (
            merge_lanes(lanes)
        )


@njit(**_jit)
def _combine(partial, first, stop):
    s = c = ws = wc = 0.0
    for t in range(first, stop):
        s, c = dd_add(s, c, partial[t, _SUM], partial[t, _SUM_LOW])
        ws, wc = dd_add(ws, wc, partial[t, _WSUM], partial[t, _WSUM_LOW])
    return s, c, ws, wc


@njit(**_jit)
def _flat_finish(partial, ntasks, accumulate, how, count):
    if accumulate is None:
        return 0.0
    s, c, ws, wc = _combine(partial, 0, ntasks)
    return finish(s, c, ws, wc, how, count)


# The serial and parallel drivers are distinct functions (not one function compiled twice)
# because numba's on-disk cache keys entries by function, not by compile flags.
@njit(cache=True, **_jit)
def flat_serial(ntasks, chunk, x, xm, y, ym, w, wm, out, gr, sc, how, accumulate):
    """Contiguous 1-D operands of equal size; returns the finished float64 loss value."""
    partial = np.empty((ntasks, 4))
    for t in range(ntasks):
        _flat_task(t, chunk, x, xm, y, ym, w, wm, out, gr, sc, accumulate, partial)
    return _flat_finish(partial, ntasks, accumulate, how, x.size)


@njit(cache=True, parallel=True, **_jit)
def flat_parallel(ntasks, chunk, x, xm, y, ym, w, wm, out, gr, sc, how, accumulate):
    """:func:`flat_serial` with its tasks spread over threads."""
    partial = np.empty((ntasks, 4))
    for t in prange(ntasks):
        _flat_task(t, chunk, x, xm, y, ym, w, wm, out, gr, sc, accumulate, partial)
    return _flat_finish(partial, ntasks, accumulate, how, x.size)


@njit(**_jit)
def _general_task(
    t,
    nchunks,
    chunk,
    count,
    shape,
    nouter,
    geo,
    x,
    xm,
    xim,
    y,
    ym,
    yim,
    w,
    wm,
    g,
    gm,
    out,
    gr,
    scales,
    accumulate,
    partial,
):
    """One task: chunk ``t % nchunks`` of output element ``t // nchunks``.

    ``shape`` lists the kept dimensions (``nouter`` of them) followed by the reduced
    ones; ``geo[r]`` holds operand ``r``'s base offset and then its stride per
    dimension, in elements of its flat view (rows: x, y, w, g, out, gr).
    """
    ndim = shape.size
    last = ndim - 1
    o = t // nchunks
    start = (t - o * nchunks) * chunk
    stop = min(start + chunk, count)
    off = geo[:, 0].copy()
    rem = o
    for d in range(nouter - 1, -1, -1):
        index = rem % shape[d]
        rem //= shape[d]
        for r in range(6):
            off[r] += index * geo[r, d + 1]
    position = np.zeros(ndim, np.int64)
    rem = start
    for d in range(last, nouter - 1, -1):
        position[d] = rem % shape[d]
        rem //= shape[d]
        for r in range(6):
            off[r] += position[d] * geo[r, d + 1]
    sc = scales[o] if scales.size > 1 else scales[0]
    lanes = np.zeros((4, LANES))
    done = start
    while done < stop:
        m = min(shape[last] - position[last], stop - done)
        segment(
            m,
            lanes,
            x,
            off[0],
            geo[0, ndim],
            xm,
            xim,
            y,
            off[1],
            geo[1, ndim],
            ym,
            yim,
            w,
            off[2],
            geo[2, ndim],
            wm,
            g,
            off[3],
            geo[3, ndim],
            gm,
            out,
            off[4],
            geo[4, ndim],
            gr,
            off[5],
            geo[5, ndim],
            sc,
            accumulate,
        )
        done += m
        for r in range(6):
            off[r] += m * geo[r, ndim]
        position[last] += m
        d = last
        while d > nouter and position[d] == shape[d]:
            for r in range(6):
                off[r] += geo[r, d] - shape[d] * geo[r, d + 1]
            position[d] = 0
            d -= 1
            position[d] += 1
    if accumulate is not None:
        partial[t, _SUM], partial[t, _SUM_LOW], partial[t, _WSUM], partial[t, _WSUM_LOW] = (
            merge_lanes(lanes)
        )


@njit(**_jit)
def _general_finish(partial, nchunks, accumulate, how, count, final, sums):
    if accumulate is None:
        return
    for o in range(partial.shape[0] // nchunks):
        s, c, ws, wc = _combine(partial, o * nchunks, (o + 1) * nchunks)
        if final is not None:
            store(final, o, finish(s, c, ws, wc, how, count))
        if sums is not None:
            sums[o, _SUM], sums[o, _SUM_LOW], sums[o, _WSUM], sums[o, _WSUM_LOW] = s, c, ws, wc


@njit(cache=True, **_jit)
def general_serial(
    noutputs,
    nchunks,
    chunk,
    count,
    shape,
    nouter,
    geo,
    x,
    xm,
    xim,
    y,
    ym,
    yim,
    w,
    wm,
    g,
    gm,
    out,
    gr,
    scales,
    accumulate,
    how,
    final,
    sums,
):
    """Any layout and any reduced axes (see :func:`_general_task`); results go to
    ``final`` (the rounded losses) and/or ``sums`` (the unrounded double-word sums)."""
    ntasks = noutputs * nchunks
    partial = np.empty((ntasks, 4))
    for t in range(ntasks):
        _general_task(
            t,
            nchunks,
            chunk,
            count,
            shape,
            nouter,
            geo,
            x,
            xm,
            xim,
            y,
            ym,
            yim,
            w,
            wm,
            g,
            gm,
            out,
            gr,
            scales,
            accumulate,
            partial,
        )
    _general_finish(partial, nchunks, accumulate, how, count, final, sums)


@njit(cache=True, parallel=True, **_jit)
def general_parallel(
    noutputs,
    nchunks,
    chunk,
    count,
    shape,
    nouter,
    geo,
    x,
    xm,
    xim,
    y,
    ym,
    yim,
    w,
    wm,
    g,
    gm,
    out,
    gr,
    scales,
    accumulate,
    how,
    final,
    sums,
):
    """:func:`general_serial` with its tasks spread over threads."""
    ntasks = noutputs * nchunks
    partial = np.empty((ntasks, 4))
    for t in prange(ntasks):
        _general_task(
            t,
            nchunks,
            chunk,
            count,
            shape,
            nouter,
            geo,
            x,
            xm,
            xim,
            y,
            ym,
            yim,
            w,
            wm,
            g,
            gm,
            out,
            gr,
            scales,
            accumulate,
            partial,
        )
    _general_finish(partial, nchunks, accumulate, how, count, final, sums)
