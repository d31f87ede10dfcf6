"""CUDA kernel sources of the numba-cuda backend, specialized per pass.

:func:`make_kernels` builds the three kernels for one :class:`Spec`: what the pass
computes (:class:`~l1backends._backends._cuda_launch.Op` bits), how its rows are
finished (:class:`~l1backends.semantics.Finish`), the gradient's scale
(:class:`~l1backends.semantics.GradScale`) and the dtype family.  These are
constants of the Python closure, so numba prunes every branch that does not
apply before it even types the kernel: the compiled loop tests no flag.  The
backend jit-compiles the functions with ``cuda.jit``; the PTX tests compile the
very same functions with ``cuda.compile_ptx``.

Kernels
-------
``dense_pass``
    Rows of ``count`` elements stored one after another, 16-byte aligned, of one
    real dtype: 128-bit loads, and 128-bit stores for the gradient and the
    elementwise loss.  grad_output and Σw are read once per row, and the
    gradient's scale is computed once per row.
``strided_pass``
    Any layout: each operand's element is found from the row's and the element's
    multi-indices and the operand's strides.  It takes the same elements in the
    same order as ``dense_pass`` (see :mod:`l1backends._backends._cuda_launch`), so
    both give the same bits.
``finish_pass``
    Adds each row's chunk sums in a fixed order and finishes the row.

Every operand is one :class:`~._device.Operand` record, or None when the pass
does not use it.
"""

from __future__ import annotations

import math
from collections import namedtuple
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
from numba import cuda

from ...semantics import Finish, GradScale
from .._cuda_launch import THREADS_PER_BLOCK, WARP_SIZE, Op
from ._device import (
    block_reduce_shared,
    block_reduce_shuffle,
    dd_add,
    dd_divide,
    dd_hypot,
    dd_value,
    device,
    lanes_of,
    load,
    two_sum,
    vector_load,
    vector_store,
    weigh,
)

__all__ = ["LAUNCH_BOUNDS", "Layout", "Spec", "make_kernels"]

#: A pass's geometry: ``rows`` rows of ``count`` elements cut as the partition says
#: (``lanes``, ``iters``, ``chunks``); the strided kernel's kept and reduced shapes;
#: and the count a mean's gradient is divided by.
Layout = namedtuple(
    "Layout",
    ["rows", "count", "lanes", "iters", "chunks", "kept_shape", "reduced_shape", "scale_count"],
)

#: ``cuda.jit``'s launch bounds of each kernel: at most 256 threads per block, and for the
#: dense kernels at least 5 blocks per SM, so that ptxas keeps them within 48 registers
#: (65536 / (5 x 256) = 51, allocated in steps of 8) and an SM holds 1280 threads.
LAUNCH_BOUNDS = {
    "dense_pass": (THREADS_PER_BLOCK, 5),
    "strided_pass": (THREADS_PER_BLOCK,),
    "finish_pass": (THREADS_PER_BLOCK,),
}
# Local index arrays hold at most this many dimensions (the shared limit).
_MAX_DIMS = 8
# A 128-bit vector holds at most 8 lanes (float16).
_MAX_LANES = 8


@dataclass(frozen=True)
class Spec:
    """What one pass computes: the compile-time constants of its kernels.

    Attributes
    ----------
    op : Op
        The pass's bits.
    finish : Finish
        How its rows are finished; ``Finish.NONE`` in a summing pass stores the
        unrounded double words (Σ w·|d| and Σ w) instead.
    scale : GradScale
        What the gradient's ``sign(d)`` is scaled by.
    dtype : str
        The compute dtype (the promoted dtype of input and target): it decides the
        lanes of a vector, whether the difference is complex, and whether sums are
        compensated (float64 and complex128).
    """

    op: Op
    finish: Finish = Finish.NONE
    scale: GradScale = GradScale.PLAIN
    dtype: str = "float64"


def make_kernels(spec: Spec, shuffle: bool) -> SimpleNamespace:
    """Build the kernels of one pass, with a warp-shuffle or a shared-memory block sum.

    Parameters
    ----------
    spec : Spec
        The pass.
    shuffle : bool
        Sum blocks with ``cuda.shfl_down_sync`` (real GPUs) or through shared
        memory only (the simulator); both give the same bits.

    Returns
    -------
    SimpleNamespace
        ``dense_pass``, ``strided_pass`` and ``finish_pass``: plain Python functions,
        to be compiled by ``cuda.jit`` or ``cuda.compile_ptx``.
    """
    op = spec.op
    LOSS = bool(op & Op.LOSS)
    GRAD = bool(op & Op.GRAD)
    NONE_OUT = bool(op & Op.NONE_OUT)
    WEIGHTED = bool(op & Op.WEIGHT)
    ELEMENTWISE = bool(op & Op.ELEMENTWISE)
    WEIGHT_SUM = bool(op & Op.WEIGHT_SUM)
    GRAD_SUM = bool(op & Op.GRAD_SUM)
    G_ARRAY = bool(op & Op.G_ARRAY)
    SUMS = LOSS or WEIGHT_SUM or GRAD_SUM
    DIRECTION = GRAD or GRAD_SUM
    READS_XY = not WEIGHT_SUM
    ROW_SCALE = GRAD and not ELEMENTWISE
    G_ELEMENTS = G_ARRAY and ELEMENTWISE
    # The dense kernel picks each gradient among a row's three rounded values.
    PICK = GRAD and not WEIGHTED and not G_ELEMENTS
    CPLX = np.dtype(spec.dtype).kind == "c"
    COMP = np.dtype(spec.dtype) in (np.dtype(np.float64), np.dtype(np.complex128))
    STORAGE = np.dtype(spec.dtype).type
    LANES = lanes_of(np.empty(0, spec.dtype))
    STORE_WORDS = spec.finish is Finish.NONE
    MEAN_BY_COUNT = spec.finish is Finish.MEAN_BY_COUNT
    MEAN_BY_WEIGHT = spec.finish is Finish.MEAN_BY_WEIGHT
    BY_COUNT = spec.scale is GradScale.BY_COUNT
    BY_WEIGHT_SUM = spec.scale is GradScale.BY_WEIGHT_SUM
    block_reduce = block_reduce_shuffle if shuffle else block_reduce_shared
    SHARED = (4, WARP_SIZE) if shuffle else (4, THREADS_PER_BLOCK)

    @device
    def add(high, low, term_high, term_low):
        if COMP:
            high, error = two_sum(high, term_high)
            return high, low + (error + term_low)
        return high + term_high, low

    @device
    def difference(xr, xi, yr, yi):
        """|d| as a double word, and the rounded difference's parts (for the direction)."""
        if COMP:
            re, re_low = two_sum(xr, -yr)
            if not math.isfinite(re):
                re_low = 0.0
            if CPLX:
                im, im_low = two_sum(xi, -yi)
                if not math.isfinite(im):
                    im_low = 0.0
                high, low = dd_hypot(re, re_low, im, im_low)
                return high, low, re, im
            return abs(re), (-re_low if re < 0.0 else re_low), re, 0.0
        re = xr - yr
        if CPLX:
            im = xi - yi
            return math.hypot(re, im), 0.0, re, im
        return abs(re), 0.0, re, 0.0

    @device
    def direction(high, low, re, im):
        """sign(d), or d / |d| for complex d (NaN where |d| is not finite, 0 at 0)."""
        if CPLX:
            if not math.isfinite(high):
                return math.nan, math.nan
            if high == 0.0:
                return 0.0, 0.0
            tweak = low / high
            unit_re = re / high
            unit_im = im / high
            return unit_re - unit_re * tweak, unit_im - unit_im * tweak
        # Selects, not branches: 1 or -1, 0 at a tie, NaN stays NaN.
        unit = 1.0 if re > 0.0 else -1.0
        unit = unit if re != 0.0 else 0.0
        return (unit if re == re else re), 0.0

    @device
    def element(xr, xi, yr, yi, wv, scale):
        """One element: its loss term w·|d| (a double word) and gradient (re, im)."""
        high, low, re, im = difference(xr, xi, yr, yi)
        grad_re = 0.0
        grad_im = 0.0
        if DIRECTION:
            unit_re, unit_im = direction(high, low, re, im)
            factor = scale * wv if WEIGHTED else scale
            grad_re = unit_re * factor
            grad_im = unit_im * factor
        if WEIGHTED:
            high, low = weigh(high, low, wv, COMP)
        return high, low, grad_re, grad_im

    @device
    def scale_of(g_value, sw_value, count):
        """The gradient's scale from grad_output and the row's count or Σw."""
        if BY_COUNT:
            return g_value / count
        if BY_WEIGHT_SUM:
            return g_value / sw_value
        return g_value

    @device
    def finish_row(sums, row, sink, count):
        """Write one row's result from its sums (a, b: Σ w·|d|; c, d: Σ w)."""
        a, b, c, d = sums
        at = sink.offset + row * sink.step
        if STORE_WORDS:
            sink.data[at] = a
            sink.data[at + sink.plane] = b
            sink.data[at + 2 * sink.plane] = c
            sink.data[at + 3 * sink.plane] = d
        elif MEAN_BY_COUNT:
            sink.data[at] = dd_divide(a, b, np.float64(count), 0.0)
        elif MEAN_BY_WEIGHT:
            sink.data[at] = dd_divide(a, b, c, d)
        else:
            sink.data[at] = dd_value(a, b)
            if GRAD_SUM and CPLX:
                sink.data[at + sink.plane] = dd_value(c, d)

    @device
    def close_item(sums, shared, item, row, sink, partials, layout):
        """Sum the block's threads; thread 0 finishes the row or stores the chunk's sums."""
        a, b, c, d = sums
        a, b, c, d = block_reduce(a, b, c, d, shared)
        if cuda.threadIdx.x == 0:
            if layout.chunks == 1:
                finish_row((a, b, c, d), row, sink, layout.count)
            else:
                items = layout.rows * layout.chunks
                partials[item] = a
                partials[items + item] = b
                partials[2 * items + item] = c
                partials[3 * items + item] = d

    # ----- dense rows ------------------------------------------------------------------------

    @device
    def dense_scalar(ops, index, scale, sums):
        """One element of a dense row by scalar loads (the last, partial vector)."""
        x, y, w, g, _, grad, none = ops
        a, b, c, d = sums
        wv = load(w, index)[0] if WEIGHTED else 1.0
        if WEIGHT_SUM:
            a, b = add(a, b, wv, 0.0)
            return a, b, c, d
        if G_ELEMENTS:
            scale = load(g, index)[0]
        high, low, grad_re, _ = element(load(x, index)[0], 0.0, load(y, index)[0], 0.0, wv, scale)
        if LOSS:
            a, b = add(a, b, high, low)
            if WEIGHTED:
                c, d = add(c, d, wv, 0.0)
        if NONE_OUT:
            none.data[index] = dd_value(high, low)
        if GRAD:
            grad.data[index] = grad_re
        return a, b, c, d

    @device
    def dense_vector(ops, v, scale, sums):
        """One full vector of a dense row: 128-bit loads, lanes in order, 128-bit stores."""
        x, y, w, g, _, grad, none = ops
        a, b, c, d = sums
        if WEIGHTED:
            ws = vector_load(w.data, v)
        if READS_XY:
            xs = vector_load(x.data, v)
            ys = vector_load(y.data, v)
        if G_ELEMENTS:
            gs = vector_load(g.data, v)
        if GRAD:
            grads = cuda.local.array(_MAX_LANES, STORAGE)
            # Unweighted, one row's gradient takes three values (and NaN): rounded once here.
            positive = STORAGE(scale)
            negative = STORAGE(-scale)
            tie = STORAGE(0.0 * scale)
        if NONE_OUT:
            values = cuda.local.array(_MAX_LANES, STORAGE)
        for lane in range(LANES):
            wv = ws[lane] if WEIGHTED else 1.0
            if WEIGHT_SUM:
                a, b = add(a, b, wv, 0.0)
                continue
            if PICK:
                re = xs[lane] - ys[lane]
                picked = positive if re > 0.0 else negative
                picked = picked if re != 0.0 else tie
                grads[lane] = picked if re == re else STORAGE(re)
            lane_scale = gs[lane] if G_ELEMENTS else scale
            high, low, grad_re, _ = element(xs[lane], 0.0, ys[lane], 0.0, wv, lane_scale)
            if LOSS:
                a, b = add(a, b, high, low)
                if WEIGHTED:
                    c, d = add(c, d, wv, 0.0)
            if NONE_OUT:
                values[lane] = STORAGE(dd_value(high, low))
            if GRAD and not PICK:
                grads[lane] = STORAGE(grad_re)
        if NONE_OUT:
            vector_store(none.data, v, values)
        if GRAD:
            vector_store(grad.data, v, grads)
        return a, b, c, d

    def dense_pass(x, y, w, g, sw, grad, none, sink, partials, layout, g_scalar):
        """Rows of dense, aligned, same-dtype real operands (see :data:`Layout`)."""
        shared = cuda.shared.array(SHARED, np.float64)
        tid = cuda.threadIdx.x
        threads = cuda.blockDim.x
        ops = (x, y, w, g, sw, grad, none)
        full = layout.count // LANES
        stride = threads * layout.iters
        for item in range(cuda.blockIdx.x, layout.rows * layout.chunks, cuda.gridDim.x):
            row = item // layout.chunks
            start = (item - row * layout.chunks) * stride
            scale = g_scalar
            if ROW_SCALE:
                g_value = load(g, g.offset + row * g.strides[0][0])[0] if G_ARRAY else g_scalar
                sw_value = sw.data[sw.offset + row * sw.strides[0][0]] if BY_WEIGHT_SUM else 1.0
                scale = scale_of(g_value, sw_value, layout.scale_count)
            sums = (0.0, 0.0, 0.0, 0.0)
            # This thread's vectors: start + tid, then every ``threads``-th, in the chunk.
            v = row * full + start + tid
            end = row * full + min(full, start + stride)
            while v < end:
                sums = dense_vector(ops, v, scale, sums)
                v += threads
            if v == (row + 1) * full and full < start + stride:  # the last, partial vector
                for lane in range(LANES - 1):  # a constant count: no loads run ahead
                    e = full * LANES + lane
                    if e < layout.count:
                        sums = dense_scalar(ops, row * layout.count + e, scale, sums)
            if SUMS:
                close_item(sums, shared, item, row, sink, partials, layout)

    # ----- any layout ------------------------------------------------------------------------

    @device
    def unravel(index, shape, out):
        """The C-order multi-index of ``index`` in ``shape``, into ``out``."""
        for dim in range(len(shape) - 1, -1, -1):
            n = shape[dim]
            out[dim] = index % n
            index //= n

    @device
    def at(strides, base, index):
        """``base`` plus the multi-index ``index`` times ``strides``."""
        position = base
        for dim in range(len(strides)):
            position += index[dim] * strides[dim]
        return position

    @device
    def strided_element(ops, bases, index, g_scalar, scale_count, sums):
        """One element of any layout: loads through the operands' strides."""
        x, y, w, g, sw, grad, none = ops
        a, b, c, d = sums
        wv = load(w, at(w.strides[1], bases[2], index))[0] if WEIGHTED else 1.0
        if WEIGHT_SUM:
            a, b = add(a, b, wv, 0.0)
            return a, b, c, d
        g_value = load(g, at(g.strides[1], bases[3], index))[0] if G_ARRAY else g_scalar
        sw_value = sw.data[at(sw.strides[1], bases[4], index)] if BY_WEIGHT_SUM else 1.0
        xr, xi = load(x, at(x.strides[1], bases[0], index))
        yr, yi = load(y, at(y.strides[1], bases[1], index))
        scale = scale_of(g_value, sw_value, scale_count)
        high, low, grad_re, grad_im = element(xr, xi, yr, yi, wv, scale)
        if LOSS:
            a, b = add(a, b, high, low)
            if WEIGHTED:
                c, d = add(c, d, wv, 0.0)
        if GRAD_SUM:
            a, b = add(a, b, grad_re, 0.0)
            c, d = add(c, d, grad_im, 0.0)
        if NONE_OUT:
            none.data[at(none.strides[1], bases[6], index)] = dd_value(high, low)
        if GRAD:
            position = at(grad.strides[1], bases[5], index)
            grad.data[position] = grad_re
            if CPLX:
                grad.data[position + 1] = grad_im
        return a, b, c, d

    @device
    def row_bases(ops, index):
        """Each operand's offset at the row's multi-index (0 for an absent operand)."""
        x, y, w, g, sw, grad, none = ops
        return (
            at(x.strides[0], x.offset, index) if READS_XY else 0,
            at(y.strides[0], y.offset, index) if READS_XY else 0,
            at(w.strides[0], w.offset, index) if WEIGHTED else 0,
            at(g.strides[0], g.offset, index) if G_ARRAY else 0,
            at(sw.strides[0], sw.offset, index) if BY_WEIGHT_SUM else 0,
            at(grad.strides[0], grad.offset, index) if GRAD else 0,
            at(none.strides[0], none.offset, index) if NONE_OUT else 0,
        )

    def strided_pass(x, y, w, g, sw, grad, none, sink, partials, layout, g_scalar):
        """Rows of any layout, in the partition's order (see :data:`Layout`)."""
        shared = cuda.shared.array(SHARED, np.float64)
        kept = cuda.local.array(_MAX_DIMS, np.int64)
        reduced = cuda.local.array(_MAX_DIMS, np.int64)
        tid = cuda.threadIdx.x
        threads = cuda.blockDim.x
        ops = (x, y, w, g, sw, grad, none)
        lanes = layout.lanes
        vectors = (layout.count + lanes - 1) // lanes
        stride = threads * layout.iters
        for item in range(cuda.blockIdx.x, layout.rows * layout.chunks, cuda.gridDim.x):
            row = item // layout.chunks
            first = (item - row * layout.chunks) * stride + tid
            unravel(row, layout.kept_shape, kept)
            bases = row_bases(ops, kept)
            sums = (0.0, 0.0, 0.0, 0.0)
            for k in range(layout.iters):
                v = first + k * threads
                if v >= vectors:
                    break
                for e in range(v * lanes, min(v * lanes + lanes, layout.count)):
                    unravel(e, layout.reduced_shape, reduced)
                    sums = strided_element(ops, bases, reduced, g_scalar, layout.scale_count, sums)
            if SUMS:
                close_item(sums, shared, item, row, sink, partials, layout)

    # ----- chunk sums ------------------------------------------------------------------------

    def finish_pass(partials, sink, layout):
        """Add each row's chunk sums in a fixed order (one block per row) and finish it."""
        shared = cuda.shared.array(SHARED, np.float64)
        tid = cuda.threadIdx.x
        items = layout.rows * layout.chunks
        for row in range(cuda.blockIdx.x, layout.rows, cuda.gridDim.x):
            a = 0.0
            b = 0.0
            c = 0.0
            d = 0.0
            for item in range(
                row * layout.chunks + tid, (row + 1) * layout.chunks, cuda.blockDim.x
            ):
                a, b = dd_add(a, b, partials[item], partials[items + item])
                c, d = dd_add(c, d, partials[2 * items + item], partials[3 * items + item])
            a, b, c, d = block_reduce(a, b, c, d, shared)
            if tid == 0:
                finish_row((a, b, c, d), row, sink, layout.count)

    return SimpleNamespace(
        dense_pass=dense_pass, strided_pass=strided_pass, finish_pass=finish_pass
    )
