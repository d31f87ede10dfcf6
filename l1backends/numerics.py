"""Error-free and double-word arithmetic on arrays of any Array-API namespace.

These are the building blocks that let a backend written with plain array
operations round its result only once: differences are split exactly into a
high and a low part (TwoSum), sums are carried as (high, low) pairs along a
pairwise tree whose every rounding error is kept, and the final division is a
double-word division.  Backends with their own kernels (numba, CUDA) implement
the same arithmetic natively.
"""

from __future__ import annotations

from typing import Any

from ._typing import Array

__all__ = [
    "accumulate_dtype",
    "compensated_sum",
    "dd_divide",
    "dd_quotient",
    "dd_value",
    "round_words",
    "two_product",
    "two_sum",
]

# Veltkamp's splitting constants, 2**ceil(p/2) + 1, by precision.
_SPLITTERS = {"float64": 134217729.0, "float32": 4097.0}


def accumulate_dtype(xp: Any) -> str:
    """The dtype ``xp`` accumulates in: float64, unless the namespace cannot hold it.

    JAX without ``jax_enable_x64`` silently turns float64 into float32; its sums
    are then carried as float32 pairs, which is still accurate far beyond a
    float32 result.
    """
    if getattr(xp, "__name__", "").startswith("jax"):
        import jax

        return "float64" if jax.config.read("jax_enable_x64") else "float32"
    return "float64"


def two_sum(a: Array, b: Array) -> tuple[Array, Array]:
    """Knuth's TwoSum: ``s + e == a + b`` exactly, with ``s = fl(a + b)`` (finite inputs)."""
    s = a + b
    b_virtual = s - a
    error = (a - (s - b_virtual)) + (b - b_virtual)
    return s, error


def two_product(xp: Any, a: Array, b: Array, dtype: str) -> tuple[Array, Array]:
    """Dekker's TwoProduct: ``p + e == a * b`` exactly, without a fused multiply-add.

    Exact unless ``a`` or ``b`` is within a factor 2**27 (float64) of overflow,
    where the error term becomes non-finite; callers then drop it.
    """
    splitter = _SPLITTERS[dtype]

    def split(value: Array) -> tuple[Array, Array]:
        scaled = splitter * value
        high = scaled - (scaled - value)
        return high, value - high

    product = a * b
    a_high, a_low = split(a)
    b_high, b_low = split(b)
    error = ((a_high * b_high - product) + a_high * b_low + a_low * b_high) + a_low * b_low
    return product, error


def compensated_sum(xp: Any, high: Array, low: Array) -> tuple[Array, Array]:
    """Sum a double-word array over its last axis, keeping every rounding error.

    The pairwise tree adds neighbours with TwoSum and folds each error into the
    low words, so the pair returned is the exact sum up to the (negligible)
    rounding of the low words themselves.

    Parameters
    ----------
    xp : namespace
        The array namespace.
    high, low : array
        Arrays of shape ``(..., m)`` holding the terms as ``high + low``.

    Returns
    -------
    tuple of array
        ``(high, low)`` of shape ``(...)``.
    """
    m = high.shape[-1]
    if m == 0:
        zeros = xp.sum(high, axis=-1)
        return zeros, zeros
    while m > 1:
        if m % 2:
            pad_shape = (*high.shape[:-1], 1)
            pad = xp.zeros(pad_shape, dtype=high.dtype, device=_device(high))
            high = xp.concat((high, pad), axis=-1)
            low = xp.concat((low, pad), axis=-1)
        high, error = two_sum(high[..., 0::2], high[..., 1::2])
        low = (low[..., 0::2] + low[..., 1::2]) + error
        m = high.shape[-1]
    return high[..., 0], low[..., 0]


def dd_value(xp: Any, high: Array, low: Array) -> Array:
    """Round a double-word value once; a non-finite high word stands alone."""
    return xp.where(xp.isfinite(high), high + low, high)


def dd_divide(
    xp: Any, high: Array, low: Array, divisor_high: Array, divisor_low: Array, dtype: str
) -> Array:
    """Divide double-word values and round once (to within a tiny fraction of an ulp).

    Parameters
    ----------
    xp : namespace
        The array namespace.
    high, low : array
        The dividend as a double-word value.
    divisor_high, divisor_low : array or float
        The divisor as a double-word value.
    dtype : str
        The dtype of the words ("float64" or "float32").

    Returns
    -------
    array
        The quotient, rounded once to ``dtype``.
    """
    quotient = high / divisor_high
    product, product_error = two_product(xp, quotient, divisor_high, dtype)
    remainder = (((high - product) - product_error) + low) - quotient * divisor_low
    correction = remainder / divisor_high
    return xp.where(xp.isfinite(correction), quotient + correction, quotient)


def _device(array: Array) -> Any:
    import array_api_compat

    return array_api_compat.device(array)


def dd_quotient(
    xp: Any, high: Array, low: Array, divisor_high: Array, divisor_low: Array, dtype: str
) -> tuple[Array, Array]:
    """The quotient of two double words as a double word ``(quotient, correction)``.

    As :func:`dd_divide`, without the final rounding, for :func:`round_words`.
    """
    quotient = high / divisor_high
    product, product_error = two_product(xp, quotient, divisor_high, dtype)
    remainder = (((high - product) - product_error) + low) - quotient * divisor_low
    correction = remainder / divisor_high
    return quotient, xp.where(xp.isfinite(correction), correction, xp.zeros_like(correction))


# Past these magnitudes (midpoints above the largest values) float16 and float32 overflow.
_OVERFLOW = {"float16": (65520.0, 65504.0), "float32": (2.0**128 - 2.0**103, 2.0**128 - 2.0**104)}


def round_words(xp: Any, high: Array, low: Array, dtype: str) -> Array:
    """Round double words ``high + low`` once to the float dtype ``dtype``.

    The high word rounds to nearest; where it lies exactly halfway between two
    values of ``dtype``, the low word's sign decides (as the numba kernels'
    ``round_dd``), so a sum carried in float64 is never rounded twice.

    Parameters
    ----------
    xp : namespace
        The array namespace.
    high, low : array
        The values as double words of the accumulation dtype.
    dtype : str
        "float16", "float32" or "float64".

    Returns
    -------
    array
        The values rounded to ``dtype``.
    """
    target = getattr(xp, dtype)
    finite = xp.isfinite(high)
    zeros = xp.zeros_like(low)
    summed, error = two_sum(high, xp.where(finite, low, zeros))
    high = xp.where(finite, summed, high)  # a non-finite high word stands alone
    low = xp.where(finite, error, zeros)
    nearest = xp.astype(high, target)
    if dtype not in _OVERFLOW:
        return nearest
    back = xp.astype(nearest, high.dtype)
    step = xp.where(xp.isfinite(back), high - back, xp.zeros_like(high))
    other = back + 2 * step
    representable = xp.astype(xp.astype(other, target), high.dtype) == other
    beyond = (low != 0) & ((low > 0) == (step > 0))
    result = xp.where((step != 0) & representable & beyond, xp.astype(other, target), nearest)
    limit, largest = _OVERFLOW[dtype]
    kept = xp.isinf(result) & (xp.abs(high) == limit) & (low != 0) & ((low < 0) == (high > 0))
    return xp.where(kept, xp.astype(xp.sign(high) * largest, target), result)
