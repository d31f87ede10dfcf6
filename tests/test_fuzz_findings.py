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
