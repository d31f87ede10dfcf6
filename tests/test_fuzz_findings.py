"""Regression tests of the defects the fuzzer (``test_fuzz.py``) found, one per defect.

Each reproduces the fuzzer's failing call in its smallest form.
"""

from __future__ import annotations

import numpy as np
import pytest

import l1backends as l1


class Subclass(np.ndarray):
    """An ndarray subclass from outside NumPy that changes nothing."""


class Strict(np.ndarray):
    """A subclass that implements no NumPy function, as strict subclasses do."""

    def __array_function__(self, *args, **options):
        return NotImplemented


@pytest.mark.parametrize("kind", [Subclass, Strict])
@pytest.mark.parametrize("shape", [(), (2, 3)])
def test_a_subclassed_grad_output_is_read_as_its_base_array(kind: type, shape: tuple) -> None:
    """Found: TypeError ("different libraries", or "no implementation found for numpy.ndim")."""
    x = np.arange(6.0).reshape(2, 3)
    y = np.zeros((2, 3))
    g = np.full(shape, 2.5).view(kind)
    for function in (l1.l1_loss_grad, lambda *a, **k: l1.l1_loss_and_grad(*a, **k)[1]):
        grad = function(x, y, "none", grad_output=g)
        assert type(grad) is np.ndarray
        np.testing.assert_array_equal(grad, np.sign(x) * 2.5)


@pytest.mark.parametrize(
    "value", [10**400, -(10**400), 2**1024], ids=["1e400", "-1e400", "2**1024"]
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_python_integer_grad_output_beyond_float64_is_infinite(value: int, dtype: str) -> None:
    """Found: OverflowError ("int too large to convert to float"), on every path."""
    x, y = np.array([1.0, -1.0], dtype=dtype), np.zeros(2, dtype=dtype)
    infinity = np.inf if value > 0 else -np.inf
    for reduction in ("sum", "none"):
        grad = l1.l1_loss_grad(x, y, reduction, grad_output=value)
        np.testing.assert_array_equal(grad, [infinity, -infinity])


@pytest.mark.parametrize(
    ("dtype", "value", "rounded"),
    [
        ("float32", 2**54 + 2**30 + 1, 2**54 + 2**31),  # float64 lands on a float32 tie
        ("float32", -(2**70 + 2**46 + 1), -(2**70 + 2**47)),
        ("float32", 2**128 - 2**103, np.inf),  # the overflow threshold itself
        ("float32", 2**128 - 2**103 - 1, 2**128 - 2**104),
        ("float64", 2**54 + 3, 2**54 + 4),
    ],
    ids=["float64-tie", "beyond-int64", "threshold", "below-threshold", "float64"],
)
def test_a_large_python_integer_grad_output_is_rounded_once(dtype, value, rounded) -> None:
    """Found: Python ints of 2**53 and more went through float64 first, rounding twice."""
    x, y = np.ones(3, dtype=dtype), np.zeros(3, dtype=dtype)
    for reduction, scale in (("sum", 1), ("mean", 1 / 4)):
        grad = l1.l1_loss_grad(np.ones(4, dtype=dtype), np.zeros(4, dtype=dtype), reduction,
                               grad_output=value)  # fmt: skip
        assert grad.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(grad, np.full(4, float(rounded) * scale, dtype=dtype))
    grad = l1.l1_loss_grad(x, y, "none", grad_output=value)
    np.testing.assert_array_equal(grad, np.full(3, float(rounded), dtype=dtype))


HUGE = np.finfo(np.float64).max


@pytest.mark.parametrize(
    ("x", "y", "unit"),
    [
        (complex(HUGE, HUGE), 0j, complex(0.5**0.5, 0.5**0.5)),  # |d| beyond float64
        (complex(0.0, HUGE), complex(0.0, -HUGE), 1j),  # a component of d beyond float64
        (complex(-HUGE, 3.0), complex(HUGE, 3.0), -1 + 0j),
    ],
    ids=["modulus", "component", "negative"],
)
def test_a_complex128_gradient_has_the_direction_of_a_difference_beyond_float64(x, y, unit):
    """Found: 0 (d / inf) or NaN (an infinite component) where the exact direction is finite."""
    xs, ys = np.array([x, 1 + 1j]), np.array([y, 1 + 1j])
    for reduction, scale in (("sum", 1.0), ("mean", 0.5), ("none", 1.0)):
        grad = l1.l1_loss_grad(xs, ys, reduction)
        np.testing.assert_allclose(grad, [unit * scale, 0], rtol=2**-52, atol=0)
    # |d| itself is beyond float64, and its mean is not.
    assert np.isinf(l1.l1_loss(xs, ys, "none")[0]) and np.isinf(l1.l1_loss(xs, ys, "sum"))
    modulus = abs(complex(x.real / 2 - y.real / 2, x.imag / 2 - y.imag / 2))
    np.testing.assert_allclose(l1.l1_loss(xs, ys), modulus, rtol=2**-51)
    # Infinite data still give NaN in both parts, as the README says.
    grad = l1.l1_loss_grad(np.array([complex(np.inf, 0.0)]), np.zeros(1, complex), "sum")
    assert np.isnan(grad.real).all() and np.isnan(grad.imag).all()


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize(
    ("bad", "weighted"),
    [(np.nan, False), (np.inf, False), (HUGE, False), (HUGE, True)],
    ids=["nan", "inf", "overflow", "weighted-overflow"],
)
def test_float64_loss_and_grad_of_a_broadcast_input_keeps_its_gradient(reduction, bad, weighted):
    """Found: the gradient was all zeros whenever the float64 loss was not finite.

    The overflow-rescaling pass of the loss cleared the operands that the broadcast
    input's sum-back pass, which runs after it, still needed.
    """
    x = np.zeros(2)
    y = np.array([[bad, -1.0], [HUGE, 2.0], [1.0, 1.0]])
    weight = np.array([[1.0], [2.0], [4.0]]) if weighted else None
    loss, grad = l1.l1_loss_and_grad(x, y, reduction, weight=weight, broadcast=True)
    alone = l1.l1_loss_grad(x, y, reduction, weight=weight, broadcast=True)
    w = np.ones((3, 1)) if weight is None else weight
    total = np.broadcast_to(w, y.shape).sum() if reduction == "mean" else 1.0
    expected = np.where(np.isnan(y), np.nan, np.sign(x - y) * w).sum(axis=0) / total
    np.testing.assert_array_equal(grad, expected)
    np.testing.assert_array_equal(grad, alone)
    np.testing.assert_array_equal(loss, l1.l1_loss(x, y, reduction, weight=weight, broadcast=True))


@pytest.mark.parametrize(
    ("x", "g"),
    [
        (complex(65504.0, 5e-324), np.inf),  # d/|d| underflows in its imaginary part
        (complex(-HUGE, 2e-169), -np.inf),
        (complex(3.0, 5e-324), 1e300),  # the product of the two is a normal number
        (complex(3.0, -5e-324), -1e300),
    ],
    ids=["inf", "-inf", "1e300", "-1e300"],
)
def test_a_complex_gradient_part_that_underflows_before_its_scale_is_exact(x, g):
    """Found: NaN (0 · inf) or 0 where d/|d| underflowed before the product with the scale."""
    from fractions import Fraction

    from l1backends.conformance.reference import distance_in_ulps, exact_sqrt

    d = (Fraction(x.real), Fraction(x.imag))
    modulus = exact_sqrt(d[0] ** 2 + d[1] ** 2)
    for reduction in ("sum", "none"):
        grad = l1.l1_loss_grad(np.array([x]), np.zeros(1, complex), reduction, grad_output=g)
        for got, part in ((grad[0].real, d[0]), (grad[0].imag, d[1])):
            exact = np.sign(float(part)) * g if np.isinf(g) else part / modulus * Fraction(g)
            assert distance_in_ulps(float(got), exact, "float64") <= 2, (got, float(exact))


@pytest.mark.parametrize("function", ["l1_loss", "l1_loss_grad", "l1_loss_and_grad"])
@pytest.mark.parametrize("shape", [(), (5,)])
def test_a_non_native_target_after_a_native_call_of_the_same_shape(function, shape) -> None:
    """Found: after a native call, a big-endian target of the same shape took the native
    call's prepared flat kernel, which read its bytes unswapped (2.6e16 for a loss of 0)."""
    x = np.full(shape, 2.6066264e16, dtype="<f4")
    call = getattr(l1, function)
    native = call(x, x.copy())
    swapped = call(x, x.astype(">f4"))
    if function != "l1_loss_and_grad":
        native, swapped = (native,), (swapped,)
    for expected, got in zip(native, swapped, strict=True):
        np.testing.assert_array_equal(got, expected)
    assert l1.l1_loss(x, x.astype(">f4")) == 0.0
