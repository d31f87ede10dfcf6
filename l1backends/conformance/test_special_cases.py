"""Special cases as data: empty, NaN, inf, ties, ±0 and read-only inputs, per declared dtype."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from .. import api
from .checks import Target, check_grad, check_loss, check_ties
from .strategies import Case

__all__ = [
    "test_empty_inputs",
    "test_infinities_and_nan",
    "test_ties_and_signed_zeros",
]


def _dtype(target: Target, dtype: str) -> None:
    if dtype in target.adapter.unsupported_dtypes:
        pytest.skip(f"{target.adapter.name} arrays cannot hold {dtype}")


def test_empty_inputs(conformance_target: Target, conformance_dtype: str) -> None:
    """ "none" is empty, "sum" is 0, "mean" is NaN, and no warning is raised."""
    _dtype(conformance_target, conformance_dtype)
    adapter, name = conformance_target.adapter, conformance_target.backend
    for shape in ((0,), (2, 0, 3)):
        empty = np.zeros(shape, dtype=conformance_dtype)
        x, y = adapter.from_numpy(empty), adapter.from_numpy(empty)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            none = api.l1_loss(x, y, "none", backend=name)
            total = api.l1_loss(x, y, "sum", backend=name)
            mean = api.l1_loss(x, y, "mean", backend=name)
            by_axis = api.l1_loss(x, y, "mean", axis=-1, backend=name)
            gradient = api.l1_loss_grad(x, y, "mean", backend=name)
        assert tuple(none.shape) == shape
        assert adapter.to_numpy(total) == 0
        assert np.isnan(adapter.to_numpy(mean))
        assert tuple(by_axis.shape) == shape[:-1]
        assert tuple(gradient.shape) == shape
        for reduction in ("none", "sum", "mean"):
            case = Case(input=empty, target=empty, reduction=reduction)
            check_loss(conformance_target, case)
            check_grad(conformance_target, case)


def test_infinities_and_nan(conformance_target: Target, conformance_dtype: str) -> None:
    """|inf - inf| is NaN, |inf - x| is inf, NaN propagates into loss and gradient."""
    _dtype(conformance_target, conformance_dtype)
    inf, nan = np.inf, np.nan
    x = np.array([inf, -inf, inf, nan, 1.0, 2.0], dtype=conformance_dtype)
    y = np.array([inf, -inf, -inf, 1.0, nan, 1.0], dtype=conformance_dtype)
    adapter, name = conformance_target.adapter, conformance_target.backend
    none = adapter.to_numpy(
        api.l1_loss(adapter.from_numpy(x), adapter.from_numpy(y), "none", backend=name)
    )
    assert np.isnan(none[[0, 1, 3, 4]]).all() and none[2] == inf and none[5] == 1
    gradient = adapter.to_numpy(
        api.l1_loss_grad(adapter.from_numpy(x), adapter.from_numpy(y), "sum", backend=name)
    )
    assert np.isnan(gradient[[0, 1, 3, 4]]).all(), gradient
    assert gradient[5] == 1
    for reduction in ("none", "sum", "mean"):
        case = Case(input=x, target=y, reduction=reduction)
        check_loss(conformance_target, case)
        check_grad(conformance_target, case)
        check_grad(conformance_target, case, wrt="target")


def test_ties_and_signed_zeros(conformance_target: Target, conformance_dtype: str) -> None:
    """At x == y (including +0 against -0) the gradient is 0 both ways; read-only inputs work."""
    _dtype(conformance_target, conformance_dtype)
    x = np.array([[0.0, -0.0, 1.5], [2.0, -3.0, 4.0]], dtype=conformance_dtype)
    y = np.array([[-0.0, 0.0, 1.5], [2.0, 3.0, -4.0]], dtype=conformance_dtype)
    weight = np.array([0.5, 2.0, 1.0], dtype=np.real(x).dtype)
    for reduction in ("none", "sum", "mean"):
        for case in (
            Case(input=x, target=y, reduction=reduction, read_only=True),
            Case(input=x, target=y, reduction=reduction, weight=weight, grad_output=None),
        ):
            check_ties(conformance_target, case)
            check_loss(conformance_target, case)
            check_grad(conformance_target, case)
