"""Every error of the semantics list, raised through the backend under test's arrays."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

from .. import api
from ..registry import registry
from .adapters import ARRAY_API_STRICT, NUMPY
from .checks import Target

__all__ = [
    "test_axis_errors",
    "test_bad_reduction",
    "test_grad_output_shape",
    "test_legacy_arguments",
    "test_mixed_namespaces",
    "test_non_arrays",
    "test_shape_mismatch",
    "test_unknown_backend",
    "test_unservable_backend",
    "test_unsupported_dtypes",
    "test_weight_errors",
]


def _pair(target: Target, shape: tuple[int, ...] = (3,)) -> tuple[object, object]:
    base = np.arange(np.prod(shape), dtype="float32").reshape(shape)
    return target.adapter.from_numpy(base), target.adapter.from_numpy(base + 1)


def test_bad_reduction(conformance_target: Target) -> None:
    x, y = _pair(conformance_target)
    for function in (api.l1_loss, api.l1_loss_grad, api.l1_loss_and_grad):
        with pytest.raises(ValueError, match="'avg'") as caught:
            function(x, y, "avg", backend=conformance_target.backend)
        for valid in ("'none'", "'mean'", "'sum'"):
            assert valid in str(caught.value)


def test_shape_mismatch(conformance_target: Target) -> None:
    x, _ = _pair(conformance_target, (3, 1))
    _, y = _pair(conformance_target, (3,))
    with pytest.raises(ValueError) as caught:
        api.l1_loss(x, y, backend=conformance_target.backend)
    message = str(caught.value)
    assert "(3, 1)" in message and "(3,)" in message and "broadcast=True" in message
    loss = api.l1_loss(x, y, "none", broadcast=True, backend=conformance_target.backend)
    assert tuple(loss.shape) == (3, 3)


def test_axis_errors(conformance_target: Target) -> None:
    x, y = _pair(conformance_target, (2, 3))
    name = conformance_target.backend
    with pytest.raises(ValueError, match="out of range"):
        api.l1_loss(x, y, "sum", axis=2, backend=name)
    with pytest.raises(ValueError, match="out of range"):
        api.l1_loss(x, y, "mean", axis=-3, backend=name)
    with pytest.raises(ValueError, match="'none'"):
        api.l1_loss(x, y, "none", axis=0, backend=name)
    with pytest.raises(ValueError, match="repeats"):
        api.l1_loss(x, y, "sum", axis=(1, -1), backend=name)


def test_weight_errors(conformance_target: Target) -> None:
    x, y = _pair(conformance_target)
    adapter, name = conformance_target.adapter, conformance_target.backend
    complex_weight = adapter.from_numpy(np.ones(3, dtype="complex64"))
    with pytest.raises(TypeError, match="complex"):
        api.l1_loss(x, y, weight=complex_weight, backend=name)
    with pytest.raises(ValueError, match=re.escape("(2,)")):
        api.l1_loss(x, y, weight=adapter.from_numpy(np.ones(2, dtype="float32")), backend=name)


def test_unsupported_dtypes(conformance_target: Target) -> None:
    adapter, name = conformance_target.adapter, conformance_target.backend
    x, _ = _pair(conformance_target)
    flags = adapter.from_numpy(np.array([True, False, True]))
    with pytest.raises(TypeError, match="bool"):
        api.l1_loss(x, flags, backend=name)
    with pytest.raises(TypeError, match="bool"):
        api.l1_loss_grad(flags, x, backend=name)
    if adapter is NUMPY:
        for values, dtype in (([1, 2, 3], "object"), (["a", "b", "c"], "<U1")):
            odd = np.array(values, dtype=dtype)
            with pytest.raises(TypeError, match=re.escape(np.dtype(dtype).name)):
                api.l1_loss(odd, x, backend=name)


def test_non_arrays(conformance_target: Target) -> None:
    x, _ = _pair(conformance_target)
    for bad in ([1.0, 2.0, 3.0], (1.0, 2.0, 3.0), 2.5):
        with pytest.raises(TypeError, match=re.escape("np.asarray")):
            api.l1_loss(x, bad, backend=conformance_target.backend)
        with pytest.raises(TypeError, match=re.escape("np.asarray")):
            api.l1_loss_grad(bad, x, backend=conformance_target.backend)


def test_mixed_namespaces(conformance_target: Target) -> None:
    x, _ = _pair(conformance_target)
    other = ARRAY_API_STRICT if conformance_target.adapter is NUMPY else NUMPY
    if other.unavailable_reason() is not None:
        pytest.skip(f"no second namespace to mix with: {other.unavailable_reason()}")
    foreign = other.from_numpy(np.ones(3, dtype="float32"))
    with pytest.raises(TypeError) as caught:
        api.l1_loss(x, foreign, backend=conformance_target.backend)
    message = str(caught.value)
    assert type(x).__qualname__ in message and type(foreign).__qualname__ in message


def test_unknown_backend(conformance_target: Target) -> None:
    x, y = _pair(conformance_target)
    with pytest.raises(ValueError, match="no-such-backend") as caught:
        api.l1_loss(x, y, backend="no-such-backend")
    assert repr(conformance_target.backend) in str(caught.value)


def test_unservable_backend(conformance_target: Target) -> None:
    """Forcing a backend that does not serve these arrays is a TypeError saying why."""
    x, y = _pair(conformance_target)
    others = [
        name
        for name in registry.names()
        if name != conformance_target.backend and registry.spec(name).match(type(x)) is None
    ]
    if not others:
        pytest.skip("every registered backend serves these arrays")
    with pytest.raises(TypeError, match="cannot take"):
        api.l1_loss(x, y, backend=others[0])


def test_grad_output_shape(conformance_target: Target) -> None:
    adapter, name = conformance_target.adapter, conformance_target.backend
    x, y = _pair(conformance_target, (2, 3))
    wrong = adapter.from_numpy(np.ones(4, dtype="float32"))
    with pytest.raises(ValueError, match="grad_output"):
        api.l1_loss_grad(x, y, "sum", axis=0, grad_output=wrong, backend=name)
    with pytest.raises(ValueError, match="grad_output"):
        api.l1_loss_and_grad(x, y, "none", grad_output=wrong, backend=name)
    right = adapter.from_numpy(np.array([1.0, 2.0, 3.0], dtype="float32"))
    gradient = api.l1_loss_grad(x, y, "sum", axis=0, grad_output=right, backend=name)
    np.testing.assert_array_equal(adapter.to_numpy(gradient), -np.array([[1, 2, 3], [1, 2, 3]]))


@pytest.mark.parametrize(
    ("size_average", "reduce", "reduction"),
    [(None, False, "none"), (False, None, "sum"), (True, True, "mean"), (False, False, "none")],
)
def test_legacy_arguments(
    conformance_target: Target, size_average: bool | None, reduce: bool | None, reduction: str
) -> None:
    with pytest.warns(DeprecationWarning, match=f"reduction={reduction!r}"):
        loss = api.L1Loss(size_average=size_average, reduce=reduce)
    assert loss.reduction == reduction
    x, y = _pair(conformance_target)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = loss(x, y, backend=conformance_target.backend)
    expected = {"none": [1.0, 1.0, 1.0], "sum": 3.0, "mean": 1.0}[reduction]
    np.testing.assert_array_equal(conformance_target.adapter.to_numpy(value), expected)
