"""The generic backend: its fast wide path, its long-sum path and devices of array-api-strict."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

import l1backends as l1
from l1backends._backends.array_api import _backend as generic


def test_second_device_complex_gradient_stays_on_that_device() -> None:
    # Issue 13: the imaginary unit was made on the default device.
    strict = pytest.importorskip("array_api_strict")
    device = strict.Device("device1")
    x = strict.asarray([1 + 1j, 2 - 1j, 0j], device=device)
    y = strict.asarray([0j, 0j, 0j], device=device)
    for reduction in ("mean", "sum", "none"):
        gradient = l1.l1_loss_grad(x, y, reduction, broadcast=True)
        assert gradient.device == device
        weight = strict.asarray([1.0, 2.0, 3.0], device=device)
        loss, both = l1.l1_loss_and_grad(x, y, reduction, weight=weight)
        assert loss.device == device and both.device == device
    expected = np.array([1 + 1j, 2 - 1j, 0]) / np.array([np.sqrt(2), np.sqrt(5), 1]) / 3
    np.testing.assert_allclose(np.from_dlpack(l1.l1_loss_grad(x, y)), expected, rtol=1e-15)


def test_long_reductions_are_summed_in_two_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(generic, "WIDE_SUM_LIMIT", 100)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5000)).astype(np.float32)
    y = rng.standard_normal((3, 5000)).astype(np.float32)
    for axis in (None, 1):
        ours = l1.l1_loss(x, y, "mean", axis=axis, backend="array-api")
        native = l1.l1_loss(x, y, "mean", axis=axis, backend="numba-cpu")
        np.testing.assert_array_equal(ours, native)


def test_wide_path_updates_only_its_own_temporaries() -> None:
    x = np.array([1.0, -2.0, 3.0], dtype=np.float32)
    y = np.array([0.5, 0.5, 0.5], dtype=np.float32)
    before = x.copy(), y.copy()
    out = l1.l1_loss(x, y, "none", weight=np.array([2.0, 1.0, 0.5]), backend="array-api")
    np.testing.assert_array_equal(out, [1.0, 2.5, 1.25])
    assert np.array_equal(x, before[0]) and np.array_equal(y, before[1])


def test_wide_path_is_correctly_rounded_where_float32_differences_are_not_exact() -> None:
    # x - y of these float32 values needs more than 24 bits; each difference is rounded in
    # float64, and the mean is rounded once.
    x = np.array([1.0, 3.0e-8, 1.0e7], dtype=np.float32)
    y = np.array([-1.0e-9, 2.0e7, -1.5], dtype=np.float32)
    exact = sum(abs(Fraction(float(a)) - Fraction(float(b))) for a, b in zip(x, y, strict=True)) / 3
    assert float(l1.l1_loss(x, y, backend="array-api")) == float(np.float32(float(exact)))
