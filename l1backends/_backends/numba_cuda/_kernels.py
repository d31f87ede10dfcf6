"""CUDA kernel sources for the numba-cuda backend.

Every kernel is an ordinary Python function built by :func:`make_kernels`; the
backend jit-compiles them with ``cuda.jit`` and the PTX tests compile the very
same functions with ``cuda.compile_ptx``.  Two variants exist, differing only in
the block reduction: warp shuffles (real GPUs) or shared memory (the CUDA
simulator, which has no shuffles).  Both compile for real GPUs.

Arithmetic follows :mod:`l1backends.numerics`: every value is carried in
float64; float64 and complex128 inputs are summed with TwoSum compensation, and
every sum travels as a double word (high, low) through the block and final
reductions, so each result is rounded once, at the store.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
from numba import cuda

from .._cuda_launch import THREADS_PER_BLOCK, WARP_SIZE

__all__ = [
    "FINISH_MEAN",
    "FINISH_NONE",
    "FINISH_SUM",
    "FINISH_THREADS",
    "FINISH_WEIGHTED_MEAN",
    "F_COMPENSATE",
    "F_COMPLEX",
    "F_COUNT",
    "F_GRAD",
    "F_G_ARRAY",
    "F_LOSS",
    "F_NONE_OUT",
    "F_SUM_OPERAND",
    "F_SW",
    "F_WEIGHTED",
    "F_WEIGHT_ONLY",
    "KIND_F16",
    "KIND_F32",
    "KIND_F64",
    "SIMULATOR",
    "make_kernels",
]

SIMULATOR = bool(cuda.config.ENABLE_CUDASIM) if hasattr(cuda, "config") else False

# Bits of the ``flags`` argument; uniform per launch, so the branches cost nothing.
F_COMPENSATE = 1  # TwoSum-compensated per-thread sums (float64 and complex128)
F_COMPLEX = 2  # complex difference: the loss is the modulus
F_WEIGHTED = 4  # a weight operand is given
F_LOSS = 8  # accumulate sum(w * |d|) (and sum(w) when weighted)
F_GRAD = 16  # write the gradient element
F_NONE_OUT = 32  # write the elementwise loss w * |d|
F_SUM_OPERAND = 64  # accumulate the x operand itself (summing a gradient back)
F_WEIGHT_ONLY = 128  # accumulate sum(w) only; x and y are not read
F_G_ARRAY = 256  # grad_output is an array operand (else the scalar argument)
F_SW = 512  # the gradient scale is divided by the row's sum(w) operand
F_COUNT = 1024  # the gradient scale is divided by the row's element count

# How a value is rounded to the result's real dtype before it enters float64 arithmetic.
KIND_F64, KIND_F32, KIND_F16 = 0, 1, 2

# What the final pass of a row writes.
FINISH_SUM, FINISH_MEAN, FINISH_WEIGHTED_MEAN, FINISH_NONE = 0, 1, 2, 3

# The final pass over per-block partials runs one warp per row, always, so that the
# order of its sums does not depend on anything but the number of partials.
FINISH_THREADS = WARP_SIZE
_FULL_MASK = 0xFFFFFFFF
# Veltkamp's splitter for float64, used where no fused multiply-add exists (the simulator).
_SPLITTER = 134217729.0

_device = cuda.jit(device=True) if SIMULATOR else cuda.jit(device=True, forceinline=True)


@_device
def _round_to(value, kind):
    """Round a real scalar of any dtype to the result dtype, then widen it to float64."""
    if kind == KIND_F32:
        return np.float64(np.float32(value))
    if kind == KIND_F16:
        return np.float64(np.float16(value))
    return np.float64(value)


@_device
def _two_sum(a, b):
    s = a + b
    b_virtual = s - a
    return s, (a - (s - b_virtual)) + (b - b_virtual)


@_device
def _dd_add(a_high, a_low, b_high, b_low):
    high, error = _two_sum(a_high, b_high)
    return high, (a_low + b_low) + error


@_device
def _dd_value(high, low):
    """Round a double word once; a non-finite high word stands alone (its low word is junk)."""
    if math.isfinite(high):
        return high + low
    return high


if SIMULATOR:

    @_device
    def _product_error(a, b, product):
        """Dekker's exact error of ``a * b`` (Python rounds every operation, no contraction)."""
        scaled = _SPLITTER * a
        a_high = scaled - (scaled - a)
        a_low = a - a_high
        scaled = _SPLITTER * b
        b_high = scaled - (scaled - b)
        b_low = b - b_high
        return ((a_high * b_high - product) + a_high * b_low + a_low * b_high) + a_low * b_low

else:

    @_device
    def _product_error(a, b, product):
        """The exact error of ``a * b``: one fused multiply-add (NVVM may contract Dekker's)."""
        return cuda.fma(a, b, -product)


@_device
def _dd_divide(high, low, divisor_high, divisor_low):
    """Divide double words and round once, as :func:`l1backends.numerics.dd_divide`."""
    quotient = high / divisor_high if divisor_high != 0.0 else _divide_by_zero(high)
    product = quotient * divisor_high
    remainder = ((high - product) - _product_error(quotient, divisor_high, product)) + low
    remainder = remainder - quotient * divisor_low
    correction = remainder / divisor_high if divisor_high != 0.0 else math.nan
    if math.isfinite(correction):
        return quotient + correction
    return quotient


@_device
def _divide_by_zero(high):
    """IEEE division of ``high`` by +0 (0/0 is NaN: the mean of nothing)."""
    if high > 0.0:
        return math.inf
    if high < 0.0:
        return -math.inf
    return math.nan


@_device
def _finish_row(a, b, c, d, row, mode, count, fout, fout_offset, fout_stride, aux):
    """Write one row's result from its double-word sums (a, b) and weight sums (c, d)."""
    aux[0, row] = a
    aux[1, row] = b
    aux[2, row] = c
    aux[3, row] = d
    aux[4, row] = _dd_value(c, d)
    if mode == FINISH_SUM:
        fout[fout_offset + row * fout_stride] = _dd_value(a, b)
    elif mode == FINISH_MEAN:
        fout[fout_offset + row * fout_stride] = _dd_divide(a, b, np.float64(count), 0.0)
    elif mode == FINISH_WEIGHTED_MEAN:
        fout[fout_offset + row * fout_stride] = _dd_divide(a, b, c, d)


@_device
def _element(xr, xi, yr, yi, wv, gv, swv, flags, count):
    """Loss term and gradient of one element, all in float64.

    Returns ``(term_high, term_low, grad_re, grad_im)``: the loss ``w * |d|`` as
    a double word and the gradient (its imaginary part is 0 for real inputs).
    """
    if flags & F_COMPLEX:
        re = xr - yr
        im = xi - yi
        high = math.hypot(re, im)
        low = 0.0
    elif flags & F_COMPENSATE:
        re, error = _two_sum(xr, -yr)
        im = 0.0
        high = abs(re)
        low = -error if re < 0.0 else error
    else:
        re = xr - yr
        im = 0.0
        high = abs(re)
        low = 0.0
    scale = gv
    if flags & F_WEIGHTED:
        high = high * wv
        low = low * wv
        scale = scale * wv
    if flags & F_COUNT:
        scale = scale / np.float64(count)
    if flags & F_SW:
        scale = scale / swv
    if flags & F_COMPLEX:
        modulus = math.hypot(re, im)
        if not math.isfinite(modulus):
            grad_re = math.nan
            grad_im = math.nan
        else:
            safe = modulus if modulus != 0.0 else 1.0
            grad_re = (re / safe) * scale
            grad_im = (im / safe) * scale
    else:
        grad_im = 0.0
        if re > 0.0:
            grad_re = scale
        elif re < 0.0:
            grad_re = -scale
        elif re == 0.0:
            grad_re = 0.0 * scale
        else:
            grad_re = math.nan
    return high, low, grad_re, grad_im


@_device
def _accumulate(total_high, total_low, term_high, term_low, flags):
    if flags & F_COMPENSATE:
        total_high, error = _two_sum(total_high, term_high)
        return total_high, total_low + (error + term_low)
    return total_high + term_high, total_low + term_low


@_device
def _warp_reduce(a, b, c, d):
    offset = WARP_SIZE // 2
    while offset > 0:
        other_a = cuda.shfl_down_sync(_FULL_MASK, a, offset)
        other_b = cuda.shfl_down_sync(_FULL_MASK, b, offset)
        other_c = cuda.shfl_down_sync(_FULL_MASK, c, offset)
        other_d = cuda.shfl_down_sync(_FULL_MASK, d, offset)
        a, b = _dd_add(a, b, other_a, other_b)
        c, d = _dd_add(c, d, other_c, other_d)
        offset //= 2
    return a, b, c, d


@_device
def _block_reduce_shuffle(a, b, c, d, shared):
    """Sum two double words over the block with warp shuffles; valid in thread 0."""
    tid = cuda.threadIdx.x
    lane = tid % WARP_SIZE
    warp = tid // WARP_SIZE
    a, b, c, d = _warp_reduce(a, b, c, d)
    if lane == 0:
        shared[0, warp] = a
        shared[1, warp] = b
        shared[2, warp] = c
        shared[3, warp] = d
    cuda.syncthreads()
    if warp == 0:
        if lane < cuda.blockDim.x // WARP_SIZE:
            a = shared[0, lane]
            b = shared[1, lane]
            c = shared[2, lane]
            d = shared[3, lane]
        else:
            a = 0.0
            b = 0.0
            c = 0.0
            d = 0.0
        a, b, c, d = _warp_reduce(a, b, c, d)
    cuda.syncthreads()  # the shared words may be reused by the next work item
    return a, b, c, d


@_device
def _block_reduce_shared(a, b, c, d, shared):
    """Sum two double words over the block through shared memory only; valid in thread 0."""
    tid = cuda.threadIdx.x
    shared[0, tid] = a
    shared[1, tid] = b
    shared[2, tid] = c
    shared[3, tid] = d
    cuda.syncthreads()
    half = cuda.blockDim.x // 2
    while half > 0:
        if tid < half:
            a, b = _dd_add(
                shared[0, tid], shared[1, tid], shared[0, tid + half], shared[1, tid + half]
            )
            c, d = _dd_add(
                shared[2, tid], shared[3, tid], shared[2, tid + half], shared[3, tid + half]
            )
            shared[0, tid] = a
            shared[1, tid] = b
            shared[2, tid] = c
            shared[3, tid] = d
        cuda.syncthreads()
        half //= 2
    a = shared[0, 0]
    b = shared[1, 0]
    c = shared[2, 0]
    d = shared[3, 0]
    cuda.syncthreads()
    return a, b, c, d


@_device
def _offset(base, i0, i1, i2, i3, strides):
    return base + i0 * strides[0] + i1 * strides[1] + i2 * strides[2] + i3 * strides[3]


@_device
def _unravel(index, shape):
    """C-order multi-index of ``index`` in a 4-d ``shape``."""
    i3 = index % shape[3]
    index //= shape[3]
    i2 = index % shape[2]
    index //= shape[2]
    i1 = index % shape[1]
    return index // shape[1], i1, i2, i3


def _vector_load_python(array, index):
    """The simulator's stand-in for the 128-bit load: the same lanes, one at a time."""
    width = 16 // array.dtype.itemsize
    start = index * width
    return tuple(np.float64(array[start + lane]) for lane in range(width))


def _vector_load_intrinsic():
    """An intrinsic loading 16 aligned bytes at once and widening every lane to float64."""
    from llvmlite import ir
    from numba.cuda import types
    from numba.cuda.extending import intrinsic

    @intrinsic
    def vector_load(typingctx, array, index):
        width = 128 // array.dtype.bitwidth
        result = types.UniTuple(types.float64, width)

        def codegen(context, builder, signature, args):
            array_type = signature.args[0]
            data = context.make_array(array_type)(context, builder, args[0]).data
            element = {16: ir.HalfType(), 32: ir.FloatType(), 64: ir.DoubleType()}[
                array_type.dtype.bitwidth
            ]
            start = builder.mul(args[1], ir.Constant(args[1].type, width))
            pointer = builder.gep(data, [start], inbounds=True)
            # Loaded as four 32-bit words so that halves, too, come in one ld.global.v4.
            words = builder.load(
                builder.bitcast(pointer, ir.VectorType(ir.IntType(32), 4).as_pointer()), align=16
            )
            lanes = builder.bitcast(words, ir.VectorType(element, width))
            values = []
            for lane in range(width):
                value = builder.extract_element(lanes, ir.Constant(ir.IntType(32), lane))
                if element != ir.DoubleType():
                    value = builder.fpext(value, ir.DoubleType())
                values.append(value)
            return context.make_tuple(builder, result, values)

        return result(array, index), codegen

    return vector_load


vector_load = _vector_load_python if SIMULATOR else _vector_load_intrinsic()


def make_kernels(shuffle: bool) -> SimpleNamespace:
    """Build the kernel sources with a warp-shuffle or a shared-memory block reduction.

    Parameters
    ----------
    shuffle : bool
        Reduce blocks with ``cuda.shfl_down_sync`` (real GPUs) or through shared
        memory only (the simulator).

    Returns
    -------
    SimpleNamespace
        ``strided_pass``, ``contiguous_pass`` and ``finish_pass``: plain Python
        functions, to be compiled by ``cuda.jit`` or ``cuda.compile_ptx``.
    """
    block_reduce = _block_reduce_shuffle if shuffle else _block_reduce_shared

    def strided_pass(
        x, x_offset, x_kept, x_reduced,
        y, y_offset, y_kept, y_reduced,
        w, w_offset, w_kept, w_reduced,
        g, g_offset, g_kept, g_reduced,
        sw, sw_offset, sw_kept, sw_reduced,
        grad, grad_offset, grad_kept, grad_reduced,
        none, none_offset, none_kept, none_reduced,
        kept_shape, reduced_shape, count, chunks, flags, kind, g_scalar,
        partials, finish_mode, fout, fout_offset, fout_stride, aux,
    ):  # fmt: skip
        """Grid-stride pass over any strided layout: rows x chunks work items per grid."""
        shared = cuda.shared.array((4, THREADS_PER_BLOCK), np.float64)
        tid = cuda.threadIdx.x
        threads = cuda.blockDim.x
        rows = kept_shape[0] * kept_shape[1] * kept_shape[2] * kept_shape[3]
        size = reduced_shape[0] * reduced_shape[1] * reduced_shape[2] * reduced_shape[3]
        for item in range(cuda.blockIdx.x, rows * chunks, cuda.gridDim.x):
            row = item // chunks
            chunk = item % chunks
            k0, k1, k2, k3 = _unravel(row, kept_shape)
            xb = _offset(x_offset, k0, k1, k2, k3, x_kept)
            yb = _offset(y_offset, k0, k1, k2, k3, y_kept)
            wb = _offset(w_offset, k0, k1, k2, k3, w_kept)
            gb = _offset(g_offset, k0, k1, k2, k3, g_kept)
            sb = _offset(sw_offset, k0, k1, k2, k3, sw_kept)
            ob = _offset(grad_offset, k0, k1, k2, k3, grad_kept)
            nb = _offset(none_offset, k0, k1, k2, k3, none_kept)
            a = 0.0
            b = 0.0
            c = 0.0
            d = 0.0
            for j in range(chunk * threads + tid, size, chunks * threads):
                r0, r1, r2, r3 = _unravel(j, reduced_shape)
                wv = 1.0
                if flags & F_WEIGHTED:
                    wv = _round_to(w[_offset(wb, r0, r1, r2, r3, w_reduced)], kind)
                    c, d = _accumulate(c, d, wv, 0.0, flags)
                if flags & F_WEIGHT_ONLY:
                    continue
                if flags & F_SUM_OPERAND:
                    value = x[_offset(xb, r0, r1, r2, r3, x_reduced)].real
                    a, b = _accumulate(a, b, np.float64(value), 0.0, flags)
                    continue
                xv = x[_offset(xb, r0, r1, r2, r3, x_reduced)]
                yv = y[_offset(yb, r0, r1, r2, r3, y_reduced)]
                gv = g_scalar
                if flags & F_G_ARRAY:
                    gv = _round_to(g[_offset(gb, r0, r1, r2, r3, g_reduced)], kind)
                swv = 1.0
                if flags & F_SW:
                    swv = sw[_offset(sb, r0, r1, r2, r3, sw_reduced)]
                high, low, grad_re, grad_im = _element(
                    _round_to(xv.real, kind), _round_to(xv.imag, kind),
                    _round_to(yv.real, kind), _round_to(yv.imag, kind),
                    wv, gv, swv, flags, count,
                )  # fmt: skip
                if flags & F_LOSS:
                    a, b = _accumulate(a, b, high, low, flags)
                if flags & F_NONE_OUT:
                    none[_offset(nb, r0, r1, r2, r3, none_reduced)] = _dd_value(high, low)
                if flags & F_GRAD:
                    at = _offset(ob, r0, r1, r2, r3, grad_reduced)
                    grad[at] = grad_re
                    if flags & F_COMPLEX:
                        grad[at + 1] = grad_im
            if flags & (F_LOSS | F_SUM_OPERAND | F_WEIGHT_ONLY):
                a, b, c, d = block_reduce(a, b, c, d, shared)
                if tid == 0:
                    if chunks == 1:
                        _finish_row(
                            a, b, c, d, row, finish_mode, count, fout, fout_offset, fout_stride, aux
                        )
                    else:
                        partials[0, item] = a
                        partials[1, item] = b
                        partials[2, item] = c
                        partials[3, item] = d

    def contiguous_pass(
        x, y, w, g, sw, grad, none, n, chunks, flags, kind, g_scalar, count,
        partials, finish_mode, fout, aux,
    ):  # fmt: skip
        """Grid-stride pass over contiguous, 16-byte aligned real inputs with 128-bit loads."""
        shared = cuda.shared.array((4, THREADS_PER_BLOCK), np.float64)
        tid = cuda.threadIdx.x
        threads = cuda.blockDim.x
        gv = g_scalar
        if flags & F_G_ARRAY:
            gv = _round_to(g[0], kind)
        swv = 1.0
        if flags & F_SW:
            swv = sw[0]
        width = 16 // x.itemsize
        vectors = n // width
        for chunk in range(cuda.blockIdx.x, chunks, cuda.gridDim.x):
            a = 0.0
            b = 0.0
            c = 0.0
            d = 0.0
            first = chunk * threads + tid
            stride = chunks * threads
            for v in range(first, vectors, stride):
                xs = vector_load(x, v)
                ys = vector_load(y, v)
                for lane in range(width):
                    e = v * width + lane
                    wv = 1.0
                    if flags & F_WEIGHTED:
                        wv = _round_to(w[e], kind)
                        c, d = _accumulate(c, d, wv, 0.0, flags)
                    high, low, grad_re, _ = _element(
                        xs[lane], 0.0, ys[lane], 0.0, wv, gv, swv, flags, count
                    )
                    if flags & F_LOSS:
                        a, b = _accumulate(a, b, high, low, flags)
                    if flags & F_NONE_OUT:
                        none[e] = _dd_value(high, low)
                    if flags & F_GRAD:
                        grad[e] = grad_re
            for e in range(vectors * width + first, n, stride):
                wv = 1.0
                if flags & F_WEIGHTED:
                    wv = _round_to(w[e], kind)
                    c, d = _accumulate(c, d, wv, 0.0, flags)
                high, low, grad_re, _ = _element(
                    np.float64(x[e]), 0.0, np.float64(y[e]), 0.0, wv, gv, swv, flags, count
                )
                if flags & F_LOSS:
                    a, b = _accumulate(a, b, high, low, flags)
                if flags & F_NONE_OUT:
                    none[e] = _dd_value(high, low)
                if flags & F_GRAD:
                    grad[e] = grad_re
            if flags & F_LOSS:
                a, b, c, d = block_reduce(a, b, c, d, shared)
                if tid == 0:
                    if chunks == 1:
                        _finish_row(a, b, c, d, 0, finish_mode, count, fout, 0, 1, aux)
                    else:
                        partials[0, chunk] = a
                        partials[1, chunk] = b
                        partials[2, chunk] = c
                        partials[3, chunk] = d

    def finish_pass(
        partials, rows, chunks, count, finish_mode, fout, fout_offset, fout_stride, aux
    ):
        """Sum each row's per-block partials in a fixed order (one warp per row) and finish it."""
        shared = cuda.shared.array((4, THREADS_PER_BLOCK), np.float64)
        tid = cuda.threadIdx.x
        for row in range(cuda.blockIdx.x, rows, cuda.gridDim.x):
            a = 0.0
            b = 0.0
            c = 0.0
            d = 0.0
            for item in range(row * chunks + tid, (row + 1) * chunks, cuda.blockDim.x):
                a, b = _dd_add(a, b, partials[0, item], partials[1, item])
                c, d = _dd_add(c, d, partials[2, item], partials[3, item])
            a, b, c, d = block_reduce(a, b, c, d, shared)
            if tid == 0:
                _finish_row(
                    a, b, c, d, row, finish_mode, count, fout, fout_offset, fout_stride, aux
                )

    return SimpleNamespace(
        strided_pass=strided_pass, contiguous_pass=contiguous_pass, finish_pass=finish_pass
    )
