"""Device functions of the numba-cuda kernels: loads and stores, double words, block sums.

Arithmetic follows :mod:`l1backends.numerics`: values are carried in float64;
float64 and complex128 differences are split exactly (TwoSum) and every sum
travels as a double word (high, low), so each result is rounded once, at the
store.  Everything here is an ordinary Python function made a device function by
``cuda.jit(device=True)``; under the CUDA simulator the same functions run as
Python, with Python stand-ins for the few intrinsics the simulator lacks (128-bit
loads and stores, ``fma``, ``__dmul_rn``, warp shuffles).

How a load converts a value is decided by the operand's types while numba types
the kernel (``@overload``): in compiled code it is a constant.
"""

from __future__ import annotations

import math
from collections import namedtuple
from typing import Any

import numpy as np
from numba import cuda

from .._cuda_launch import WARP_SIZE

__all__ = [
    "SIMULATOR",
    "Operand",
    "Sink",
    "block_reduce_shared",
    "block_reduce_shuffle",
    "dd_add",
    "dd_divide",
    "dd_hypot",
    "dd_value",
    "device",
    "lanes_of",
    "load",
    "two_sum",
    "vector_load",
    "vector_store",
]

SIMULATOR = bool(getattr(getattr(cuda, "config", None), "ENABLE_CUDASIM", False))

#: One operand as a kernel sees it: a 1-D buffer from the lowest address the array
#: touches, element 0's offset in it, its strides along the kept and the reduced
#: dimensions (a pair of tuples), and a scalar of the dtype every loaded value is
#: rounded to first (the result's real dtype).  An absent operand is None.
Operand = namedtuple("Operand", ["data", "offset", "strides", "mode"])
#: Where a pass puts each row's result: ``data[offset + row * step]``; the double
#: words of an unfinished row (and a gradient's imaginary part) ``plane`` further on.
Sink = namedtuple("Sink", ["data", "offset", "step", "plane"])

# Device functions are inlined on GPUs (mypy reads the simulator's jit: no forceinline).
_INLINE: dict[str, bool] = {} if SIMULATOR else {"forceinline": True}
device = cuda.jit(device=True, **_INLINE)

_FULL_MASK = 0xFFFFFFFF
# Veltkamp's splitter for float64, for Dekker's product where no fused multiply-add exists.
_SPLITTER = 134217729.0


# ----- dtype-driven constants and conversions ------------------------------------------------


def load(operand: Any, index: int) -> tuple[float, float]:
    """Element ``index`` of ``operand.data`` as float64 (real, imaginary), each part first
    rounded to the dtype of ``operand.mode`` (as the specification casts integers,
    mixed precisions and weights); the imaginary part of a real value is 0."""
    value = operand.data[index]
    rounding = type(operand.mode)
    if np.iscomplexobj(value):
        return np.float64(rounding(value.real)), np.float64(rounding(value.imag))
    return np.float64(rounding(value)), 0.0


def lanes_of(array: Any) -> int:
    """Elements of ``array`` per 128-bit vector."""
    return max(1, 16 // array.dtype.itemsize)


def _vector_load_python(array: Any, index: int) -> tuple[float, ...]:
    """The simulator's stand-in for the 128-bit load: the same lanes, one at a time."""
    width = lanes_of(array)
    start = index * width
    return tuple(np.float64(array[start + lane]) for lane in range(width))


def _vector_store_python(array: Any, index: int, values: Any) -> None:
    """The simulator's stand-in for the 128-bit store: ``values[:lanes]`` rounded, in order."""
    width = lanes_of(array)
    for lane in range(width):
        array[index * width + lane] = values[lane]


if SIMULATOR:
    vector_load = _vector_load_python
    vector_store = _vector_store_python

    @device
    def _product_error(a, b, product):
        """Dekker's exact error of ``a * b`` (Python rounds every operation, no contraction)."""
        scaled = _SPLITTER * a
        a_high = scaled - (scaled - a)
        a_low = a - a_high
        scaled = _SPLITTER * b
        b_high = scaled - (scaled - b)
        b_low = b - b_high
        return ((a_high * b_high - product) + a_high * b_low + a_low * b_high) + a_low * b_low

    @device
    def _mul_rn(a, b):
        return a * b

else:  # pragma: no cover - compiled for GPUs; the PTX tests check what it becomes
    from numba.cuda import libdevice

    from ._intrinsics import install

    vector_load, vector_store = install(load)

    @device
    def _product_error(a, b, product):
        """The exact error of ``a * b``: one fused multiply-add."""
        return cuda.fma(a, b, -product)

    @device
    def _mul_rn(a, b):
        """A product that is never contracted into an FMA (``mul.rn.f64``)."""
        return libdevice.dmul_rn(a, b)


# ----- double words ----------------------------------------------------------------------------


@device
def two_sum(a, b):
    """Knuth's TwoSum: ``s + e == a + b`` exactly."""
    s = a + b
    b_virtual = s - a
    return s, (a - (s - b_virtual)) + (b - b_virtual)


@device
def dd_add(a_high, a_low, b_high, b_low):
    """Add two double words, keeping the rounding error of the high words."""
    high, error = two_sum(a_high, b_high)
    return high, (a_low + b_low) + error


@device
def dd_value(high, low):
    """Round a double word once; a non-finite high word stands alone (its low word is junk)."""
    if math.isfinite(high):
        return high + low
    return high


@device
def _divide_by_zero(high):
    """IEEE division of ``high`` by +0 (0/0 is NaN: the mean of nothing)."""
    if high > 0.0:
        return math.inf
    if high < 0.0:
        return -math.inf
    return math.nan


@device
def dd_divide(high, low, divisor_high, divisor_low):
    """Divide double words and round once, as :func:`l1backends.numerics.dd_divide`."""
    quotient = high / divisor_high if divisor_high != 0.0 else _divide_by_zero(high)
    product = _mul_rn(quotient, divisor_high)
    remainder = ((high - product) - _product_error(quotient, divisor_high, product)) + low
    remainder = remainder - quotient * divisor_low
    correction = remainder / divisor_high if divisor_high != 0.0 else math.nan
    if math.isfinite(correction):
        return quotient + correction
    return quotient


@device
def weigh(high, low, weight, exact):
    """``weight * (high + low)`` as a double word (its product error kept when ``exact``)."""
    product = _mul_rn(high, weight)
    if not exact:
        return product, 0.0
    if not math.isfinite(product):
        return product, 0.0
    return product, _product_error(high, weight, product) + low * weight


@device
def dd_hypot(re_high, re_low, im_high, im_low):
    """|re + i im| of double-word components as a double word (relative error < 2**-100).

    Both parts are scaled by a power of two (exact), their squares are taken exactly
    with fused multiply-adds, and the square root gets one Newton correction.  inf
    beats NaN, as in ``hypot``.
    """
    ar = abs(re_high)
    ai = abs(im_high)
    if math.isinf(ar) or math.isinf(ai):
        return math.inf, 0.0
    if math.isnan(ar) or math.isnan(ai):
        return ar + ai, 0.0
    big = max(ar, ai)
    if big == 0.0:
        return 0.0, 0.0
    _, exponent = math.frexp(big)
    rh = math.ldexp(re_high, -exponent)
    rl = math.ldexp(re_low, -exponent)
    ih = math.ldexp(im_high, -exponent)
    il = math.ldexp(im_low, -exponent)
    p1 = _mul_rn(rh, rh)
    e1 = _product_error(rh, rh, p1)
    p2 = _mul_rn(ih, ih)
    e2 = _product_error(ih, ih, p2)
    s_high, s_low = two_sum(p1, p2)
    low = ((s_low + e1) + e2) + 2.0 * (rh * rl + ih * il)
    root = math.sqrt(s_high)
    square = _mul_rn(root, root)
    residual = ((s_high - square) - _product_error(root, root, square)) + low
    return _scale_up(root, exponent), _scale_up(residual / (2.0 * root), exponent)


@device
def _scale_up(value, exponent):
    """``value * 2**exponent``, overflowing to infinity as CUDA's ``ldexp`` does."""
    if exponent > 0 and abs(value) >= math.ldexp(1.0, 1024 - exponent):
        return math.copysign(math.inf, value)
    return math.ldexp(value, exponent)


# ----- block sums: one fixed tree, with shuffles or through shared memory ----------------------


@device
def _warp_tree(a, b, c, d):
    offset = WARP_SIZE // 2
    while offset > 0:
        other_a = cuda.shfl_down_sync(_FULL_MASK, a, offset)
        other_b = cuda.shfl_down_sync(_FULL_MASK, b, offset)
        other_c = cuda.shfl_down_sync(_FULL_MASK, c, offset)
        other_d = cuda.shfl_down_sync(_FULL_MASK, d, offset)
        a, b = dd_add(a, b, other_a, other_b)
        c, d = dd_add(c, d, other_c, other_d)
        offset //= 2
    return a, b, c, d


@device
def block_reduce_shuffle(a, b, c, d, shared):
    """Sum two double words over the block (valid in thread 0), with warp shuffles.

    Lane ``i`` adds lane ``i + 16``, then ``i + 8``, ... (a fixed binary tree per warp);
    warp 0 then adds the warps' sums (zeros past the last warp) along the same tree.
    """
    tid = cuda.threadIdx.x
    lane = tid % WARP_SIZE
    warp = tid // WARP_SIZE
    a, b, c, d = _warp_tree(a, b, c, d)
    if lane == 0:
        shared[0, warp] = a
        shared[1, warp] = b
        shared[2, warp] = c
        shared[3, warp] = d
    cuda.syncthreads()
    if warp == 0:
        live = lane < cuda.blockDim.x // WARP_SIZE
        a = shared[0, lane] if live else 0.0
        b = shared[1, lane] if live else 0.0
        c = shared[2, lane] if live else 0.0
        d = shared[3, lane] if live else 0.0
        a, b, c, d = _warp_tree(a, b, c, d)
    cuda.syncthreads()  # the shared words are reused by the next work item
    return a, b, c, d


@device
def _shared_tree(shared, tid, lane):
    """The shuffle tree of one warp, on ``shared[:, warp's 32 slots]``."""
    offset = WARP_SIZE // 2
    while offset > 0:
        if lane < offset:
            a, b = dd_add(
                shared[0, tid], shared[1, tid], shared[0, tid + offset], shared[1, tid + offset]
            )
            c, d = dd_add(
                shared[2, tid], shared[3, tid], shared[2, tid + offset], shared[3, tid + offset]
            )
            shared[0, tid] = a
            shared[1, tid] = b
            shared[2, tid] = c
            shared[3, tid] = d
        cuda.syncthreads()
        offset //= 2


@device
def block_reduce_shared(a, b, c, d, shared):
    """:func:`block_reduce_shuffle`'s tree through shared memory only (the simulator's).

    ``shared`` holds four words per thread; the sums are the same bits.
    """
    tid = cuda.threadIdx.x
    lane = tid % WARP_SIZE
    warps = cuda.blockDim.x // WARP_SIZE
    shared[0, tid] = a
    shared[1, tid] = b
    shared[2, tid] = c
    shared[3, tid] = d
    cuda.syncthreads()
    _shared_tree(shared, tid, lane)
    if tid < WARP_SIZE:
        live = tid < warps
        a = shared[0, tid * WARP_SIZE] if live else 0.0
        b = shared[1, tid * WARP_SIZE] if live else 0.0
        c = shared[2, tid * WARP_SIZE] if live else 0.0
        d = shared[3, tid * WARP_SIZE] if live else 0.0
    cuda.syncthreads()
    if tid < WARP_SIZE:
        shared[0, tid] = a
        shared[1, tid] = b
        shared[2, tid] = c
        shared[3, tid] = d
    cuda.syncthreads()
    # Every thread walks the tree (it synchronizes); only warp 0's slots are read back.
    _shared_tree(shared, tid, lane)
    a = shared[0, 0]
    b = shared[1, 0]
    c = shared[2, 0]
    d = shared[3, 0]
    cuda.syncthreads()
    return a, b, c, d
