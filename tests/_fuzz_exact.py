"""Exact expected results for the fuzzer, never from the code under test.

Small calls use :mod:`l1backends.conformance.reference` (fractions) directly.
Large calls (up to millions of elements) hold *dyadic* values: multiples of 1/4
below 2**7 in magnitude, weights and ``grad_output`` alike, and every count they
are divided by is a power of two.  Then each difference, product, sum (of up to
2**24 terms: below 2**36, on a grid of 2**-28) and quotient is exact in float64,
whatever the order, and IEEE arithmetic on inf and NaN is that of the extended
reals the reference uses, so NumPy's float64 arithmetic *is* the exact value.
:func:`ulps_apart` measures distances exactly as
:func:`l1backends.conformance.reference.distance_in_ulps` does, vectorized, for
exact values that float64 holds (a test checks the two agree).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np

from l1backends.conformance.reference import FORMATS, distance_in_ulps, exact_grad, exact_loss
from l1backends.semantics import Plan

__all__ = [
    "compare_exact",
    "compare_float64",
    "dyadic_grad",
    "dyadic_loss",
    "rounded_int",
    "ulps_apart",
]

_BITS = {"float16": 11, "float32": 24, "float64": 53}


def rounded_int(value: int, dtype: str) -> float:
    """A Python integer correctly rounded (ties to even) to the real ``dtype``, as a float.

    This is the semantics' cast of an integer ``grad_output``; NumPy's own
    conversion of a Python int goes through float64 first and can round twice.
    """
    magnitude = abs(value)
    shift = magnitude.bit_length() - _BITS[dtype]
    if shift > 0:
        kept, rest = divmod(magnitude, 1 << shift)
        half = 1 << (shift - 1)
        if rest > half or (rest == half and kept & 1):
            kept += 1
        magnitude = kept << shift
    if Fraction(magnitude) >= FORMATS[dtype].overflow_threshold:
        return math.inf if value > 0 else -math.inf
    return float(magnitude) if value >= 0 else -float(magnitude)


# ----- small calls: fractions ------------------------------------------------------------------


def _worst(distances: list[float]) -> tuple[float, int]:
    worst = max(range(len(distances)), key=distances.__getitem__, default=-1)
    return (distances[worst], worst) if worst >= 0 else (0.0, -1)


def compare_exact(
    got: np.ndarray, expected: list[tuple[tuple[Any, ...], Any]], dtype: str, bound: float
) -> str | None:
    """Why ``got`` is farther than ``bound`` ulps from the exact values, or None.

    ``expected`` holds ``(components, magnitude)`` per element in C order, as
    :func:`~l1backends.conformance.reference.exact_grad` returns them.
    """
    flat = got.ravel()
    distances = []
    for value, (components, magnitude) in zip(flat, expected, strict=True):
        parts = (value.real, value.imag) if len(components) == 2 else (value,)
        distances.append(
            max(
                distance_in_ulps(part, exact, dtype, magnitude)
                for part, exact in zip(parts, components, strict=True)
            )
        )
    distance, index = _worst(distances)
    if distance <= bound:
        return None
    position = np.unravel_index(index, got.shape) if got.ndim else ()
    exact = ", ".join(_show(c) for c in expected[index][0])
    return (
        f"[{', '.join(map(str, position))}] = {flat[index]!r}, but the exact value is {exact}: "
        f"{distance:.4g} ulp of {dtype}, more than the declared {bound}"
    )


def _show(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return repr(float(value)) if abs(value) < 2**1023 else f"2**{math.log2(value):.6g}"


def exact_loss_elements(plan: Plan, x: np.ndarray, y: np.ndarray, w: Any) -> list[Any]:
    """The exact loss as ``(components, magnitude)`` pairs (see :func:`compare_exact`)."""
    with np.errstate(all="ignore"):  # the reference's casts round to inf silently, as they should
        return [((value,), None) for value in exact_loss(plan, x, y, w)]


def exact_grad_elements(plan: Plan, x: np.ndarray, y: np.ndarray, w: Any, g: Any) -> list[Any]:
    """The exact gradient as ``(components, magnitude)`` pairs."""
    with np.errstate(all="ignore"):
        return exact_grad(plan, x, y, w, g)


# ----- large calls: dyadic values, exact in float64 ----------------------------------------------


def _wide(values: np.ndarray, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """``values`` cast to ``dtype`` (the semantics' rounding), held in float64, broadcast."""
    with np.errstate(all="ignore"):
        return np.broadcast_to(values.astype(dtype).astype(np.float64), shape)


def _terms(plan: Plan, x: np.ndarray, y: np.ndarray, w: Any) -> tuple[np.ndarray, Any]:
    with np.errstate(all="ignore"):
        d = _wide(x, plan.compute_dtype, plan.shape) - _wide(y, plan.compute_dtype, plan.shape)
    weights = None if w is None else _wide(w, plan.result_dtype, plan.shape)
    return d, weights


def dyadic_loss(plan: Plan, x: np.ndarray, y: np.ndarray, w: Any) -> np.ndarray:
    """The exact loss of dyadic real values, in float64 (see the module's docstring)."""
    _check_dyadic_plan(plan, w)
    d, weights = _terms(plan, x, y, w)
    with np.errstate(all="ignore"):
        terms = np.abs(d) if weights is None else np.abs(d) * weights
        if plan.elementwise:
            return terms
        total = terms.sum(axis=plan.reduced_axes)
        return total / plan.count if plan.reduction == "mean" else total


def dyadic_grad(
    plan: Plan, x: np.ndarray, y: np.ndarray, w: Any, g: Any
) -> tuple[np.ndarray, np.ndarray]:
    """The exact gradient of dyadic real values and the magnitudes its error is measured by."""
    _check_dyadic_plan(plan, w)
    d, weights = _terms(plan, x, y, w)
    with np.errstate(all="ignore"):
        scale = np.ones(plan.shape)
        if g is not None:
            upstream = np.asarray(g).astype(plan.result_dtype).astype(np.float64)
            if upstream.ndim:
                upstream = upstream.reshape(plan.keepdims_shape)
            scale = np.broadcast_to(upstream, plan.shape)
        if weights is not None:
            scale = scale * weights
        if plan.reduction == "mean":
            scale = scale / plan.count
        terms = np.sign(d) * scale
        axes = plan.input_broadcast_axes
        if not axes:
            return terms.reshape(plan.input_shape), np.abs(terms).reshape(plan.input_shape)
        summed = terms.sum(axis=axes, keepdims=True)
        magnitude = np.abs(terms).sum(axis=axes, keepdims=True)
        return summed.reshape(plan.input_shape), magnitude.reshape(plan.input_shape)


def _check_dyadic_plan(plan: Plan, w: Any) -> None:
    """Refuse plans whose exact results float64 may not hold (a bug of the strategy)."""
    if plan.is_complex:
        raise ValueError("a complex modulus is irrational: dyadic references are real only")
    if plan.reduction == "mean" and (w is not None or plan.count & (plan.count - 1)):
        raise ValueError("a dyadic mean needs no weight and a power-of-two count")


def ulps_apart(
    got: np.ndarray, exact: np.ndarray, dtype: str, magnitude: np.ndarray | None = None
) -> np.ndarray:
    """Elementwise ``distance_in_ulps(got, exact, dtype, magnitude)`` for float64 exact values.

    Exact: the ulp is a power of two from the exact value's exponent, and
    ``got - exact`` is exact in float64 whenever the two are within a factor of two
    (Sterbenz), the only case where the distance can be small.
    """
    fmt = FORMATS[dtype]
    got = np.asarray(got, dtype=np.float64)
    exact = np.asarray(exact, dtype=np.float64)
    size = np.abs(exact) if magnitude is None else np.asarray(magnitude, dtype=np.float64)
    with np.errstate(all="ignore"):
        exponent = np.where(size > 0, np.frexp(size)[1] - 1, fmt.min_exponent)
        exponent = np.clip(exponent, fmt.min_exponent, fmt.max_exponent)
        unit = np.ldexp(1.0, exponent - (fmt.precision - 1))
        distance = np.abs(got - exact) / unit
        # An infinity counts as the first number past the largest: 2**(emax + 1), halved
        # first so that float64's own does not overflow.
        half_past = 2.0**fmt.max_exponent
        threshold = float(fmt.overflow_threshold) if dtype != "float64" else math.inf
        beyond = (half_past - np.abs(exact) / 2) / unit * 2
        beyond = np.where(np.abs(exact) >= threshold, 0.0, beyond)
        same_sign_inf = np.isinf(got) & (np.sign(got) == np.sign(exact)) & (exact != 0)
        distance = np.where(np.isinf(got), np.where(same_sign_inf, beyond, np.inf), distance)
        distance = np.where(np.isnan(got), np.inf, distance)
        distance = np.where(np.isnan(exact), np.where(np.isnan(got), 0.0, np.inf), distance)
        distance = np.where(np.isinf(exact), np.where(got == exact, 0.0, np.inf), distance)
    # As the reference: a distance beyond 2**1000 ulps is infinite.
    return np.where(distance < 2.0**1000, distance, np.inf)


def compare_float64(
    got: np.ndarray,
    exact: np.ndarray,
    dtype: str,
    bound: float,
    magnitude: np.ndarray | None = None,
) -> str | None:
    """Why ``got`` is farther than ``bound`` ulps from float64 ``exact`` values, or None."""
    distances = ulps_apart(got, exact, dtype, magnitude)
    if distances.size == 0 or float(distances.max()) <= bound:
        return None
    index = int(np.argmax(distances))
    position = np.unravel_index(index, got.shape) if got.ndim else ()
    return (
        f"[{', '.join(map(str, position))}] = {got.ravel()[index]!r}, but the exact value is "
        f"{exact.ravel()[index]!r}: {distances.ravel()[index]:.4g} ulp of {dtype}, more than "
        f"the declared {bound}"
    )
