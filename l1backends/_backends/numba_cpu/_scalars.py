"""Scalar numerics of the numba-CPU kernels: loads and stores by mode, double words, rounding.

Operands reach the general kernel as raw addresses, and a *mode* (a small integer)
says how the bytes at an offset become a float64: their storage format, the
dtype the value is first rounded to (integers, and weights or ``grad_output`` of a
wider dtype than the result), and whether the bytes are in non-native order.
Loads are unaligned and byte-swapped in registers, so any NumPy array (a
big-endian memmap, a hand-made view with odd strides) is read in place.

Sums are carried as double words (high, low).  :func:`round_dd` rounds a double
word to float16, float32 or float64 *once*, deciding a tie of the high word by
the sign of the low word, so a result is never rounded twice.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

__all__ = [
    "F16",
    "F32",
    "F64",
    "MODE_SWAP",
    "ROUND_EXACT",
    "ROUND_F16",
    "ROUND_F32",
    "STORAGE",
    "dd_add",
    "dd_divide",
    "f64_to_half",
    "half_to_f64",
    "load",
    "load_native",
    "round_dd",
    "store",
    "store_native",
    "two_product",
    "two_sum",
]

JIT: dict[str, Any] = {"error_model": "numpy", "nogil": True}

# Storage formats (the low 4 bits of a mode).  Complex formats hold two parts.
F16, F32, F64, C64, C128, I8, I16, I32, I64, U8, U16, U32, U64 = range(1, 14)
STORAGE = {
    "float16": F16,
    "float32": F32,
    "float64": F64,
    "complex64": C64,
    "complex128": C128,
    "int8": I8,
    "int16": I16,
    "int32": I32,
    "int64": I64,
    "uint8": U8,
    "uint16": U16,
    "uint32": U32,
    "uint64": U64,
}
# What a loaded value is rounded to before it enters float64 arithmetic (bits 4-5).
ROUND_EXACT, ROUND_F16, ROUND_F32, ROUND_F64 = 0, 1, 2, 3
# The same, typed, for calls inside kernels (numba compiles once per literal otherwise).
_TO_F16, _TO_F32, _TO_F64 = np.int64(ROUND_F16), np.int64(ROUND_F32), np.int64(ROUND_F64)
#: Bit 8 of a mode: the bytes are in non-native order.
MODE_SWAP = 1 << 8

_TWO_1008 = 2.0**1008
_U = np.uint64
# The midpoints above float16's and float32's largest values: ties there round to inf.
_HALF_LIMIT, _HALF_MAX = 65520.0, 65504.0
_FLOAT_LIMIT, _FLOAT_MAX = 2.0**128 - 2.0**103, 2.0**128 - 2.0**104


# ----- bits and unaligned memory --------------------------------------------------------------


def _bitcast(source, target):
    @intrinsic
    def cast(typingctx, value):
        if value != source:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(target))

        return target(source), codegen

    return cast


_f64_from_bits = _bitcast(types.uint64, types.float64)
_bits_from_f64 = _bitcast(types.float64, types.uint64)
_f32_from_bits = _bitcast(types.uint32, types.float32)
_bits_from_f32 = _bitcast(types.float32, types.uint32)


def _memory(width: int):
    """Unaligned load and store of a ``width``-bit unsigned integer at ``address + offset``.

    Operands travel to the kernels as raw addresses (int64), not arrays: an array
    handed to a helper numba does not inline costs a reference-count increment and
    decrement per call, which in a per-element helper was most of the element's time.
    """
    kind = getattr(types, f"uint{width}")

    def pointer(builder, address, offset):
        return builder.inttoptr(builder.add(address, offset), ir.IntType(width).as_pointer())

    @intrinsic
    def load_bits(typingctx, address, offset):
        def codegen(context, builder, signature, args):
            return builder.load(pointer(builder, *args), align=1)

        return kind(types.int64, types.int64), codegen

    @intrinsic
    def store_bits(typingctx, address, offset, value):
        def codegen(context, builder, signature, args):
            typed = pointer(builder, args[0], args[1])
            builder.store(context.cast(builder, args[2], signature.args[2], kind), typed, align=1)
            return context.get_dummy_value()

        return types.none(types.int64, types.int64, value), codegen

    @intrinsic
    def swap(typingctx, value):
        def codegen(context, builder, signature, args):
            return builder.bswap(args[0]) if width > 8 else args[0]

        return kind(kind), codegen

    return load_bits, store_bits, swap


_load8, _store8, _swap8 = _memory(8)
_load16, _store16, _swap16 = _memory(16)
_load32, _store32, _swap32 = _memory(32)
_load64, _store64, _swap64 = _memory(64)


@njit(**JIT)
def _bits16(address, offset, swapped):
    bits = _load16(address, offset)
    return _swap16(bits) if swapped else bits


@njit(**JIT)
def _bits32(address, offset, swapped):
    bits = _load32(address, offset)
    return _swap32(bits) if swapped else bits


@njit(**JIT)
def _bits64(address, offset, swapped):
    bits = _load64(address, offset)
    return _swap64(bits) if swapped else bits


# ----- float16 ---------------------------------------------------------------------------------


@njit(**JIT)
def half_to_f64(h):
    """Decode float16 bits exactly (numba has no CPU float16 type)."""
    bits = _U(h)
    magnitude = bits & _U(0x7FFF)
    shifted = (magnitude << _U(42)) | ((bits & _U(0x8000)) << _U(48))
    # Shifting the exponent and mantissa into float64's place scales finite values by 2**-1008.
    finite = _f64_from_bits(shifted) * _TWO_1008
    special = _f64_from_bits(shifted | _U(0x7FF0000000000000))
    return special if magnitude >= _U(0x7C00) else finite


@njit(**JIT)
def f64_to_half(value):
    """Round a float64 to float16 bits, to nearest with ties to even."""
    bits = _bits_from_f64(value)
    sign = (bits >> _U(48)) & _U(0x8000)
    magnitude = abs(value)
    exponent = max(np.int64((bits >> _U(52)) & _U(0x7FF)) - 1023, -14)
    # Scaling by a power of two is exact; rint then rounds to the float16 spacing.
    scale = _f64_from_bits(_U(1033 - exponent) << _U(52))
    quantum = np.rint(magnitude * scale)
    encoded = _U((exponent + 14) << 10) + _U(np.int64(quantum) if magnitude < _HALF_LIMIT else 0)
    if magnitude != magnitude:
        encoded = _U(0x7E00)
    elif magnitude >= _HALF_LIMIT:
        encoded = _U(0x7C00)
    return np.uint16(sign | encoded)


# ----- loads and stores by mode ----------------------------------------------------------------


@njit(**JIT)
def _rounded(value, rounding):
    """A float64 rounded to the dtype ``rounding`` names, held in float64."""
    if rounding == ROUND_F32:
        return np.float64(np.float32(value))
    if rounding == ROUND_F16:
        return half_to_f64(f64_to_half(value))
    return value


@njit(**JIT)
def _from_integer(value, rounding):
    """An int64 or uint64 converted to the dtype ``rounding`` names once (not via float64)."""
    if rounding == ROUND_F32:
        return np.float64(np.float32(value))
    if rounding == ROUND_F16:
        # Integers beyond 2**53 round to float16's infinity either way.
        return half_to_f64(f64_to_half(np.float64(value)))
    return np.float64(value)


@njit(**JIT, inline="always")
def load(address, offset, mode, part):
    """The value at ``address + offset`` stored as ``mode`` says, as a float64.

    ``part`` 1 reads the imaginary part of a complex value (0.0 for real storage).
    """
    storage = mode & 15
    if part != 0 and storage != C64 and storage != C128:
        return 0.0
    rounding = (mode >> 4) & 3
    swapped = (mode & MODE_SWAP) != 0
    if storage == F32:
        value = np.float64(_f32_from_bits(_bits32(address, offset, swapped)))
    elif storage == F64:
        value = _f64_from_bits(_bits64(address, offset, swapped))
    elif storage == C64:
        value = np.float64(_f32_from_bits(_bits32(address, offset + 4 * part, swapped)))
    elif storage == C128:
        value = _f64_from_bits(_bits64(address, offset + 8 * part, swapped))
    elif storage == F16:
        value = half_to_f64(_bits16(address, offset, swapped))
    elif storage == U64:
        return _from_integer(_bits64(address, offset, swapped), rounding)
    else:
        return _from_integer(_signed(address, offset, storage, swapped), rounding)
    return _rounded(value, rounding)


@njit(**JIT)
def _signed(address, offset, storage, swapped):
    """An integer of any width but uint64, read as an int64 (every value is exact there)."""
    if storage == I8:
        return np.int64(np.int8(_load8(address, offset)))
    if storage == U8:
        return np.int64(_load8(address, offset))
    if storage == I16:
        return np.int64(np.int16(_bits16(address, offset, swapped)))
    if storage == U16:
        return np.int64(_bits16(address, offset, swapped))
    if storage == I32:
        return np.int64(np.int32(_bits32(address, offset, swapped)))
    if storage == U32:
        return np.int64(_bits32(address, offset, swapped))
    return np.int64(_bits64(address, offset, swapped))


@njit(**JIT)
def load_native(address, offset, wide):
    """A native float64 (``wide``) or float32 at ``address + offset``, as a float64."""
    if wide:
        return _f64_from_bits(_load64(address, offset))
    return np.float64(_f32_from_bits(_load32(address, offset)))


@njit(**JIT)
def store_native(address, offset, value, wide):
    """Write ``value`` rounded once to a native float64 (``wide``) or float32."""
    if wide:
        _store64(address, offset, _bits_from_f64(value))
    else:
        _store32(address, offset, _bits_from_f32(np.float32(value)))


@njit(**JIT, inline="always")
def store(address, offset, mode, high, low):
    """Round the double word ``high + low`` once to the storage of ``mode`` and write it."""
    storage = mode & 15
    swapped = (mode & MODE_SWAP) != 0
    if storage in (F32, C64):
        bits32 = _bits_from_f32(np.float32(round_dd(high, low, _TO_F32)))
        _store32(address, offset, _swap32(bits32) if swapped else bits32)
    elif storage in (F64, C128):
        bits64 = _bits_from_f64(round_dd(high, low, _TO_F64))
        _store64(address, offset, _swap64(bits64) if swapped else bits64)
    else:
        bits16 = f64_to_half(round_dd(high, low, _TO_F16))
        _store16(address, offset, _swap16(bits16) if swapped else bits16)


# ----- double words ---------------------------------------------------------------------------


@njit(**JIT)
def two_sum(a, b):
    """Knuth's TwoSum: s + e == a + b exactly."""
    s = a + b
    virtual = s - a
    return s, (a - (s - virtual)) + (b - virtual)


@njit(**JIT)
def dd_add(high, low, other_high, other_low):
    """Add two double words (the rounding error of the high words is kept)."""
    s, e = two_sum(high, other_high)
    return s, low + (e + other_low)


@njit(**JIT)
def two_product(a, b):
    """Dekker's TwoProduct: p + e == a * b exactly (finite, far from overflow)."""
    splitter = 134217729.0
    product = a * b
    scaled = splitter * a
    a_high = scaled - (scaled - a)
    a_low = a - a_high
    scaled = splitter * b
    b_high = scaled - (scaled - b)
    b_low = b - b_high
    error = ((a_high * b_high - product) + a_high * b_low + a_low * b_high) + a_low * b_low
    return product, error if math.isfinite(error) else 0.0


@njit(**JIT)
def dd_divide(high, low, divisor_high, divisor_low):
    """The quotient of two double words as a double word (as ``numerics.dd_divide``)."""
    quotient = high / divisor_high
    product, product_error = two_product(quotient, divisor_high)
    remainder = (((high - product) - product_error) + low) - quotient * divisor_low
    correction = remainder / divisor_high
    return quotient, correction if math.isfinite(correction) else 0.0


@njit(**JIT)
def round_dd(high, low, rounding):
    """Round the double word ``high + low`` once to the dtype ``rounding`` names.

    The high word rounds to nearest; when it lies exactly halfway between two
    values of the target, the low word's sign decides (a zero low word leaves the
    tie to even).  Non-finite high words stand alone.
    """
    if not math.isfinite(high):
        return high
    high, low = two_sum(high, low)  # |low| <= half an ulp of high from here on
    if rounding in (ROUND_F64, ROUND_EXACT) or low == 0.0:
        return _rounded(high, rounding)
    nearest = _rounded(high, rounding)
    if math.isinf(nearest):
        limit, largest = (
            (_FLOAT_LIMIT, _FLOAT_MAX)
            if rounding == ROUND_F32
            else (
                _HALF_LIMIT,
                _HALF_MAX,
            )
        )
        # Exactly at the overflow threshold a low word towards zero keeps the largest value.
        if abs(high) == limit and (low < 0.0) == (high > 0.0):
            return math.copysign(largest, high)
        return nearest
    step = high - nearest  # exact: the two are within one target ulp
    other = nearest + 2.0 * step
    if step != 0.0 and _rounded(other, rounding) == other and (low > 0.0) == (step > 0.0):
        return other  # high was a tie, and the low word lies beyond it
    return nearest
