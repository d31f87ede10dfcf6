"""Exact references for the L1 loss and its subgradient, and a correct ulp distance.

Nothing here calls the backend under test.  Real values are
:class:`fractions.Fraction`; every float converts to one exactly, so
differences, sums and the weighted mean are exact.  A complex modulus is
irrational, so it is a Fraction within a relative 2**-300 of the true value
(an integer square root of a scaled Fraction), far below any ulp.  Non-finite
values are the floats ``inf``, ``-inf`` and ``nan`` and follow IEEE-754
(``0 * inf`` and ``inf - inf`` are NaN, ``x / 0`` is inf).

Integer inputs are first cast to the plan's compute dtype and weights and
``grad_output`` to its result dtype, with NumPy's correctly rounded casts:
that rounding is part of the semantics, not an error of the backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ..semantics import Plan

__all__ = [
    "FORMATS",
    "Ext",
    "distance_in_ulps",
    "exact_grad",
    "exact_loss",
    "exponent_of",
    "to_exact",
    "ulp",
]

#: An extended real: an exact Fraction, or the float inf, -inf or nan.
Ext = Fraction | float

NAN = math.nan
INF = math.inf


@dataclass(frozen=True)
class Format:
    """An IEEE binary format: precision ``p`` (with the hidden bit) and exponent range."""

    precision: int
    min_exponent: int
    max_exponent: int

    @property
    def max_finite(self) -> Fraction:
        return (2 - Fraction(1, 2 ** (self.precision - 1))) * Fraction(2) ** self.max_exponent

    @property
    def overflow_threshold(self) -> Fraction:
        """Exact values at or above this round to infinity (round to nearest)."""
        return self.max_finite + ulp_of_exponent(self, self.max_exponent) / 2


FORMATS = {
    "float16": Format(11, -14, 15),
    "float32": Format(24, -126, 127),
    "float64": Format(53, -1022, 1023),
}


def ulp_of_exponent(fmt: Format, exponent: int) -> Fraction:
    """The ulp of numbers in ``[2**exponent, 2**(exponent+1))`` (subnormal spacing below)."""
    return Fraction(2) ** (max(exponent, fmt.min_exponent) - (fmt.precision - 1))


def exponent_of(value: Fraction) -> int:
    """floor(log2(|value|)) for a non-zero Fraction, exactly."""
    value = abs(value)
    exponent = value.numerator.bit_length() - value.denominator.bit_length()
    if Fraction(2) ** exponent > value:
        exponent -= 1
    return exponent


def ulp(value: Ext, dtype: str) -> Fraction:
    """The unit in the last place of ``dtype`` at the exact ``value``.

    Below the normal range it is the subnormal spacing; at zero, the smallest
    subnormal; above the largest finite number, the largest number's ulp.
    """
    fmt = FORMATS[dtype]
    if not isinstance(value, Fraction) or value == 0:
        exponent = fmt.max_exponent if isinstance(value, float) else fmt.min_exponent
    else:
        exponent = min(exponent_of(value), fmt.max_exponent)
    return ulp_of_exponent(fmt, exponent)


def to_exact(value: float) -> Ext:
    """A finite float as its exact Fraction; inf and NaN as floats."""
    value = float(value)
    return Fraction(value) if math.isfinite(value) else value


def distance_in_ulps(got: float, exact: Ext, dtype: str, magnitude: Ext | None = None) -> float:
    """How far ``got`` (a value of ``dtype``) is from the exact value, in ulps.

    Parameters
    ----------
    got : float
        The computed value.
    exact : Fraction or float
        The exact value (inf/NaN as floats).
    dtype : str
        The real dtype ``got`` was rounded to.
    magnitude : Fraction, optional
        Measure the error in ulps of this value rather than of ``exact``: for
        signed sums (a gradient summed back over broadcast axes) the error is
        relative to the sum of the terms' magnitudes, because cancellation makes
        the result's own ulp meaningless.

    Returns
    -------
    float
        0 for an exact match (NaN for NaN, equal infinities), ``inf`` when a NaN
        or infinity is wrong, else the error in ulps.  A finite exact value
        beyond the largest finite number counts as correctly rounded by an
        infinity of its sign.
    """
    fmt = FORMATS[dtype]
    got = float(got)
    if isinstance(exact, float):  # inf or NaN: only itself will do
        if math.isnan(exact):
            return 0.0 if math.isnan(got) else INF
        return 0.0 if got == exact else INF
    if math.isnan(got):
        return INF
    unit = ulp(abs(exact) if magnitude is None else magnitude, dtype)
    if math.isinf(got):
        if (got > 0) != (exact > 0) or exact == 0:
            return INF
        if abs(exact) >= fmt.overflow_threshold:
            return 0.0
        # Treat the infinity as the first number past the largest finite one.
        past = fmt.max_finite + ulp_of_exponent(fmt, fmt.max_exponent)
        return _as_float((past - abs(exact)) / unit)
    return _as_float(abs(Fraction(got) - exact) / unit)


def _as_float(ratio: Fraction) -> float:
    """A non-negative ratio as a float, inf when beyond float64's range."""
    return float(ratio) if ratio < 2**1000 else INF


# ----- extended-real arithmetic (IEEE rules for inf and NaN) ---------------------------------


def _is_nan(value: Ext) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _sign(value: Ext) -> int:
    return (value > 0) - (value < 0)


def ext_add(a: Ext, b: Ext) -> Ext:
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return a + b
    if _is_nan(a) or _is_nan(b):
        return NAN
    if isinstance(a, float) and isinstance(b, float) and a != b:
        return NAN  # inf - inf
    return a if isinstance(a, float) else b


def ext_mul(a: Ext, b: Ext) -> Ext:
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return a * b
    if _is_nan(a) or _is_nan(b) or a == 0 or b == 0:
        return NAN  # 0 * inf
    return math.copysign(INF, _sign(a) * _sign(b))


def ext_div(a: Ext, b: Ext) -> Ext:
    if _is_nan(a) or _is_nan(b):
        return NAN
    if b == 0:
        return NAN if a == 0 else math.copysign(INF, _sign(a))
    if isinstance(a, float) and isinstance(b, float):
        return NAN  # inf / inf
    if isinstance(b, float):
        return Fraction(0)
    if isinstance(a, float):
        return math.copysign(INF, _sign(a) * _sign(b))
    return a / b


def ext_sum(values: list[Ext]) -> Ext:
    total: Ext = Fraction(0)
    for value in values:
        total = ext_add(total, value)
    return total


def ext_abs(value: Ext) -> Ext:
    return abs(value) if isinstance(value, Fraction) else math.fabs(value)


def exact_sqrt(value: Fraction) -> Fraction:
    """sqrt(value) as a Fraction within a relative 2**-300 (from below)."""
    if value == 0:
        return Fraction(0)
    n, d = value.numerator, value.denominator
    product = n * d
    shift = max(0, (800 - product.bit_length()) // 2 + 1)
    return Fraction(math.isqrt(product << (2 * shift)), d << shift)


# ----- the references ------------------------------------------------------------------------


def _components(value: complex | float, is_complex: bool) -> tuple[Ext, ...]:
    if is_complex:
        return to_exact(value.real), to_exact(value.imag)
    return (to_exact(float(value.real)),)


def _difference(x: tuple[Ext, ...], y: tuple[Ext, ...]) -> tuple[Ext, ...]:
    return tuple(ext_add(a, -b) for a, b in zip(x, y, strict=True))


def _modulus(d: tuple[Ext, ...]) -> Ext:
    if len(d) == 1:
        return ext_abs(d[0])
    re, im = d
    # IEEE-754 hypot, as NumPy, torch and C compute |z|: an infinite component makes the
    # modulus inf even when the other is NaN; otherwise a NaN component makes it NaN.
    if (isinstance(re, float) and math.isinf(re)) or (isinstance(im, float) and math.isinf(im)):
        return INF
    if not isinstance(re, Fraction) or not isinstance(im, Fraction):
        return NAN
    return exact_sqrt(re * re + im * im)


def _unit(d: tuple[Ext, ...]) -> tuple[Ext, ...]:
    """d/|d| (sign for reals): 0 at 0, NaN in every component when d is not finite (complex)."""
    if len(d) == 1:
        (value,) = d
        if _is_nan(value):
            return (NAN,)
        return (Fraction((value > 0) - (value < 0)),)
    if any(isinstance(c, float) for c in d):
        return (NAN, NAN)
    modulus = _modulus(d)
    if modulus == 0:
        return (Fraction(0), Fraction(0))
    return tuple(c / modulus for c in d)


def _full(values: np.ndarray, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """``values`` cast to ``dtype`` (a semantic rounding) and broadcast to ``shape``."""
    with np.errstate(all="ignore"):
        return np.broadcast_to(np.asarray(values).astype(dtype), shape)


def _groups(plan: Plan) -> np.ndarray:
    """Flat indices of ``plan.shape``, one row per output element, one column per term."""
    order = plan.kept_axes + plan.reduced_axes
    flat = np.arange(plan.size).reshape(plan.shape).transpose(order)
    out_size = math.prod(plan.out_shape)
    return flat.reshape(out_size, plan.count)


def _scale(plan: Plan, weight: np.ndarray | None, grad_output: object) -> list[Ext]:
    """The gradient scale at every element of ``plan.shape``, in C order."""
    size = plan.size
    scale: list[Ext] = [Fraction(1)] * size
    if grad_output is not None:
        g = np.asarray(grad_output).astype(plan.result_dtype)
        g = np.broadcast_to(g.reshape(plan.keepdims_shape) if g.ndim else g, plan.shape)
        scale = [to_exact(v) for v in g.ravel()]
    weights = None
    if weight is not None:
        weights = [to_exact(v) for v in _full(weight, plan.result_dtype, plan.shape).ravel()]
        scale = [ext_mul(s, w) for s, w in zip(scale, weights, strict=True)]
    if plan.reduction == "mean":
        for row in _groups(plan):
            if weights is None:
                divisor: Ext = Fraction(len(row))
            else:
                divisor = ext_sum([weights[i] for i in row])
            for i in row:
                scale[i] = ext_div(scale[i], divisor)
    return scale


def exact_loss(
    plan: Plan, input: np.ndarray, target: np.ndarray, weight: np.ndarray | None
) -> list[Ext]:
    """The exact loss, one extended real per output element in C order.

    Parameters
    ----------
    plan : Plan
        The call's plan (from :func:`l1backends.semantics.make_plan`).
    input, target : numpy.ndarray
        The logical input values (any supported or integer dtype).
    weight : numpy.ndarray or None
        The weights, or None.

    Returns
    -------
    list of Fraction or float
        The exact (unrounded) loss values.
    """
    x = _full(input, plan.compute_dtype, plan.shape).ravel()
    y = _full(target, plan.compute_dtype, plan.shape).ravel()
    terms = [
        _modulus(_difference(_components(a, plan.is_complex), _components(b, plan.is_complex)))
        for a, b in zip(x, y, strict=True)
    ]
    weights = None
    if weight is not None:
        weights = [to_exact(v) for v in _full(weight, plan.result_dtype, plan.shape).ravel()]
        terms = [ext_mul(w, t) for w, t in zip(weights, terms, strict=True)]
    if plan.reduction == "none":
        return terms
    result = []
    for row in _groups(plan):
        total = ext_sum([terms[i] for i in row])
        if plan.reduction == "sum":
            result.append(total)
        elif weights is None:
            result.append(ext_div(total, Fraction(len(row))))
        else:
            result.append(ext_div(total, ext_sum([weights[i] for i in row])))
    return result


def exact_grad(
    plan: Plan,
    input: np.ndarray,
    target: np.ndarray,
    weight: np.ndarray | None,
    grad_output: object,
) -> list[tuple[tuple[Ext, ...], Ext]]:
    """The exact subgradient with respect to ``input``, per input element in C order.

    Returns
    -------
    list of (components, magnitude)
        ``components`` is ``(value,)`` for real dtypes and ``(re, im)`` for
        complex ones; ``magnitude`` is the value the error is measured against:
        the element's modulus, or, where the gradient is summed back over
        broadcast axes, the sum of the summed terms' moduli.
    """
    x = _full(input, plan.compute_dtype, plan.shape).ravel()
    y = _full(target, plan.compute_dtype, plan.shape).ravel()
    scale = _scale(plan, weight, grad_output)
    terms = []
    for a, b, s in zip(x, y, scale, strict=True):
        unit = _unit(_difference(_components(a, plan.is_complex), _components(b, plan.is_complex)))
        terms.append(tuple(ext_mul(u, s) for u in unit))
    # Which input element each element of the full shape comes from.
    source = np.broadcast_to(
        np.arange(math.prod(plan.input_shape)).reshape(plan.input_shape), plan.shape
    ).ravel()
    sums: list[list[tuple[Ext, ...]]] = [[] for _ in range(math.prod(plan.input_shape))]
    for index, term in zip(source, terms, strict=True):
        sums[index].append(term)
    width = 2 if plan.is_complex else 1
    result = []
    for group in sums:
        components = tuple(ext_sum([t[c] for t in group]) for c in range(width))
        magnitude = ext_sum([_modulus(t) for t in group])
        result.append((components, magnitude))
    return result
