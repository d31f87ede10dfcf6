"""Public API behaviour that is independent of the backend: L1Loss, legacy arguments, errors."""

from __future__ import annotations

import warnings
from fractions import Fraction

import numpy as np
import pytest

import l1backends as l1


def test_l1loss_object() -> None:
    loss = l1.L1Loss()
    assert loss.reduction == "mean"
    assert repr(loss) == "L1Loss(reduction='mean')"
    assert repr(l1.L1Loss("sum")) == "L1Loss(reduction='sum')"
    x = np.array([1.0, 2.0, 4.0])
    y = np.array([0.0, 2.0, 1.0])
    assert float(loss(x, y)) == 4 / 3
    assert float(loss.forward(x, y)) == 4 / 3
    np.testing.assert_array_equal(loss.grad(x, y), np.array([1 / 3, 0.0, 1 / 3]))
    value, grad = l1.L1Loss("sum").loss_and_grad(x, y, weight=np.array([1.0, 1.0, 2.0]))
    assert float(value) == 7.0
    np.testing.assert_array_equal(grad, [1.0, 0.0, 2.0])
    with pytest.raises(ValueError, match="'avg'"):
        l1.L1Loss("avg")


@pytest.mark.parametrize(
    ("size_average", "reduce", "expected"),
    [(False, None, "sum"), (None, False, "none"), (True, True, "mean")],
)
def test_l1loss_legacy_arguments(
    size_average: bool | None, reduce: bool | None, expected: str
) -> None:
    with pytest.warns(DeprecationWarning, match=f"reduction='{expected}'"):
        loss = l1.L1Loss(size_average=size_average, reduce=reduce)
    assert loss.reduction == expected


def test_legacy_mapping_agrees_with_torch() -> None:
    torch = pytest.importorskip("torch", reason="torch is a comparison peer, not a dependency")
    for size_average in (None, True, False):
        for reduce in (None, True, False):
            if size_average is None and reduce is None:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                theirs = torch.nn.L1Loss(size_average=size_average, reduce=reduce).reduction
                ours = l1.L1Loss(size_average=size_average, reduce=reduce).reduction
            assert ours == theirs, (size_average, reduce)


@pytest.mark.parametrize("not_an_array", [[1.0, 2.0], (1.0, 2.0), 1.5, 3, None, "abc"])
def test_non_arrays_are_refused_with_a_hint(not_an_array: object) -> None:
    with pytest.raises(TypeError, match=r"np\.asarray"):
        l1.l1_loss(not_an_array, np.ones(2))
    with pytest.raises(TypeError, match=r"np\.asarray"):
        l1.l1_loss(np.ones(2), not_an_array)


def test_mixed_namespaces_are_refused_naming_both_types() -> None:
    strict = pytest.importorskip("array_api_strict")
    with pytest.raises(TypeError) as error:
        l1.l1_loss(np.ones(2), strict.ones(2))
    assert "numpy:ndarray" in str(error.value)
    assert "array_api_strict" in str(error.value)
    with pytest.raises(TypeError, match="array_api_strict"):
        l1.l1_loss(np.ones(2), np.ones(2), weight=strict.ones(2))
    with pytest.raises(TypeError, match="grad_output is a array_api_strict"):
        l1.l1_loss_grad(np.ones(2), np.ones(2), grad_output=strict.asarray(1.0))


def test_mixed_devices_are_refused() -> None:
    strict = pytest.importorskip("array_api_strict")
    other = strict.Device("device1")
    x = strict.ones(2)
    y = strict.ones(2, device=other)
    with pytest.raises(TypeError, match="different devices"):
        l1.l1_loss(x, y)


@pytest.mark.parametrize("bad", [True, 1j, "1", [1.0]])
def test_grad_output_must_be_real_number_or_array(bad: object) -> None:
    with pytest.raises(TypeError, match="grad_output"):
        l1.l1_loss_grad(np.ones(2), np.zeros(2), grad_output=bad)


def test_python_number_grad_output_and_list_axis() -> None:
    x = np.array([[1.0, -1.0], [3.0, 0.0]])
    y = np.zeros((2, 2))
    np.testing.assert_array_equal(
        l1.l1_loss_grad(x, y, "sum", grad_output=2), [[2.0, -2.0], [2.0, 0.0]]
    )
    np.testing.assert_array_equal(l1.l1_loss(x, y, "sum", axis=[0]), [4.0, 1.0])


def test_integer_inputs_promote_as_specified() -> None:
    x = np.array([1, 5, -3], dtype=np.int32)
    y = np.array([2, 5, 0], dtype=np.int64)
    value = l1.l1_loss(x, y)
    assert value.dtype == np.float64
    assert float(value) == float(Fraction(4, 3))  # correctly rounded, as Python rounds 4/3
    assert l1.l1_loss(x, y.astype(np.float32)).dtype == np.float32
    assert l1.l1_loss_grad(x, y.astype(np.float16)).dtype == np.float16


def test_outputs_are_arrays_not_scalars() -> None:
    x = np.arange(3.0)
    for reduction in ("mean", "sum"):
        value = l1.l1_loss(x, x[::-1].copy(), reduction)
        assert isinstance(value, np.ndarray)
        assert value.shape == ()


def test_none_reduction_returns_a_fresh_array() -> None:
    x = np.arange(4.0)
    y = np.zeros(4)
    out = l1.l1_loss(x, y, "none")
    assert not np.shares_memory(out, x)
    assert not np.shares_memory(out, y)
    out[:] = -1
    np.testing.assert_array_equal(x, np.arange(4.0))


def test_backend_keyword_forces_the_generic_backend() -> None:
    x = np.array([1.0, 2.0])
    assert float(l1.l1_loss(x, np.zeros(2), backend="array-api")) == 1.5
    with l1.use_backend("array-api"):
        assert float(l1.l1_loss(x, np.zeros(2), "sum")) == 3.0


class _Marker:
    def loss(self, plan: object, input: object, target: object, weight: object) -> str:
        return "marker ran"


MARKER = _Marker()


def test_call_signature_cache_follows_registry_changes() -> None:
    x = np.ones(3)
    first = l1.l1_loss(x, x)  # caches this call signature
    spec = l1.BackendSpec(
        name="marker",
        implementation=f"{__name__}:MARKER",
        array_types=("numpy:ndarray",),
        before=("numba-cpu", "array-api"),
    )
    l1.register_backend(spec)
    try:
        assert l1.l1_loss(x, x) == "marker ran"
    finally:
        l1.unregister_backend("marker")
    assert l1.l1_loss(x, x) == first
