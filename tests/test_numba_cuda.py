"""The numba-cuda backend against exact references, on a GPU or under the CUDA simulator.

Run without a GPU as ``NUMBA_ENABLE_CUDASIM=1 pytest tests/test_numba_cuda.py``;
the variable must be set before numba-cuda is first imported.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction

import numpy as np
import pytest

cuda = pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")
if not (os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" or cuda.is_available()):
    pytest.skip("no CUDA device and NUMBA_ENABLE_CUDASIM=1 is not set", allow_module_level=True)

import l1backends as l1  # noqa: E402

ULPS = {"float16": 0.6, "float32": 0.6, "float64": 2.0}
RNG = np.random.default_rng(20240604)


def _host(array) -> np.ndarray:
    return np.asarray(array.copy_to_host())


def _exact_sum(values, weights=None) -> Fraction:
    total = Fraction(0)
    for i, value in enumerate(values):
        term = Fraction(value)
        total += term if weights is None else term * Fraction(weights[i])
    return total


def _ulp_error(result: float, exact: Fraction, dtype: str) -> float:
    spacing = np.spacing(np.abs(np.asarray(result, dtype=dtype)))
    return float(abs(Fraction(float(result)) - exact) / Fraction(float(spacing)))


def _abs_differences(x: np.ndarray, y: np.ndarray) -> list[Fraction]:
    """|x - y| elementwise: exact for real inputs, the float64 modulus for complex ones."""
    if np.iscomplexobj(x) or np.iscomplexobj(y):
        re = np.real(x).astype(np.float64) - np.real(y).astype(np.float64)
        im = np.imag(x).astype(np.float64) - np.imag(y).astype(np.float64)
        return [Fraction(math.hypot(a, b)) for a, b in zip(re.ravel(), im.ravel(), strict=True)]
    return [
        abs(Fraction(float(a)) - Fraction(float(b)))
        for a, b in zip(x.ravel(), y.ravel(), strict=True)
    ]


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("n", [1, 7, 100, 1000])
def test_mean_and_sum_within_declared_ulps(dtype: str, n: int) -> None:
    scale = 10.0 if dtype == "float16" else 1e3  # float16 sums overflow above 65504
    x = (RNG.standard_normal(n) * scale).astype(dtype)
    y = (RNG.standard_normal(n) / scale).astype(dtype)
    dx, dy = cuda.to_device(x), cuda.to_device(y)
    exact = _exact_sum(_abs_differences(x, y))
    total = l1.l1_loss(dx, dy, "sum")
    mean = l1.l1_loss(dx, dy, "mean")
    assert getattr(total, "__cuda_ndarray__", False) and total.shape == () and total.dtype == dtype
    assert _ulp_error(_host(total)[()], exact, dtype) <= ULPS[dtype]
    assert _ulp_error(_host(mean)[()], exact / n, dtype) <= ULPS[dtype]


def test_float64_sum_is_compensated() -> None:
    x = np.array([1e16, 1.0, -1e16, 1.0, 3.0, -(2.0**-30)])
    y = np.zeros_like(x)
    exact = _exact_sum(_abs_differences(x, y))
    result = _host(l1.l1_loss(cuda.to_device(x), cuda.to_device(y), "sum"))[()]
    assert _ulp_error(result, exact, "float64") <= 2.0


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_complex_loss_is_the_modulus_and_gradient_the_unit(dtype: str) -> None:
    x = (RNG.standard_normal(9) + 1j * RNG.standard_normal(9)).astype(dtype)
    y = (RNG.standard_normal(9) + 1j * RNG.standard_normal(9)).astype(dtype)
    y[0] = x[0]
    real = "float32" if dtype == "complex64" else "float64"
    loss, grad = l1.l1_loss_and_grad(cuda.to_device(x), cuda.to_device(y), "sum")
    assert loss.dtype == real and grad.dtype == dtype
    assert _ulp_error(_host(loss)[()], _exact_sum(_abs_differences(x, y)), real) <= 2.0
    d = x.astype(np.complex128) - y.astype(np.complex128)
    host = _host(grad)
    assert host[0] == 0
    expected = (d[1:] / np.abs(d[1:])).astype(dtype)
    assert np.allclose(host[1:], expected, rtol=4 * np.finfo(real).eps, atol=0)


def test_none_gradient_and_ties() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
    y = np.array([0.5, 2.0, 5.0, 4.5], dtype=np.float32)
    loss, grad = l1.l1_loss_and_grad(
        cuda.to_device(x),
        cuda.to_device(y),
        "none",
        grad_output=cuda.to_device(np.float32([1, 2, 3, 4])),
    )
    assert _host(loss).tolist() == [0.5, 0.0, 2.0, 0.5]
    assert _host(grad).tolist() == [1.0, 0.0, -3.0, -4.0]


def test_nan_and_inf_propagate() -> None:
    x = np.array([np.nan, np.inf, 1.0, 2.0])
    y = np.array([0.0, np.inf, 1.0, 0.0])
    loss, grad = l1.l1_loss_and_grad(cuda.to_device(x), cuda.to_device(y), "none")
    assert np.isnan(_host(loss)[:2]).all() and _host(loss)[2:].tolist() == [0.0, 2.0]
    assert np.isnan(_host(grad)[:2]).all() and _host(grad)[2:].tolist() == [0.0, 1.0]
    assert np.isnan(_host(l1.l1_loss(cuda.to_device(x), cuda.to_device(y)))[()])
    inf = _host(
        l1.l1_loss(cuda.to_device(np.array([np.inf, 1.0])), cuda.to_device(np.zeros(2)), "sum")
    )
    assert inf[()] == np.inf


def test_empty_inputs() -> None:
    x = cuda.to_device(np.zeros((0, 3), dtype=np.float32))
    assert np.isnan(_host(l1.l1_loss(x, x, "mean"))[()])
    assert _host(l1.l1_loss(x, x, "sum"))[()] == 0
    assert _host(l1.l1_loss(x, x, "none")).shape == (0, 3)
    assert _host(l1.l1_loss(x, x, "sum", axis=0)).tolist() == [0, 0, 0]


@pytest.mark.parametrize("layout", ["C", "F", "transposed", "reversed", "stepped"])
def test_strided_layouts_read_without_copies(layout: str) -> None:
    base_x = RNG.standard_normal((6, 10))
    base_y = RNG.standard_normal((6, 10))
    views = {
        "C": lambda a: a,
        "F": np.asfortranarray,
        "transposed": lambda a: a.T,
        "reversed": lambda a: a[::-1, ::-2],
        "stepped": lambda a: a[1::2, ::3],
    }
    x, y = views[layout](base_x), views[layout](base_y)
    if layout == "C":
        dx, dy = cuda.to_device(x), cuda.to_device(y)
    else:
        dx, dy = _simulated_view(x), _simulated_view(y)
    for axis in (None, 0, 1, (0, 1)):
        result = _host(l1.l1_loss(dx, dy, "sum", axis=axis))
        differences = np.asarray(_abs_differences(x, y), dtype=object).reshape(x.shape)
        expected = differences.sum(axis=axis)
        for got, want in zip(np.ravel(result), np.ravel(expected), strict=True):
            assert _ulp_error(got, want, "float64") <= 2.0
    grad = _host(l1.l1_loss_grad(dx, dy, "mean", axis=0))
    assert np.array_equal(grad, np.sign(x - y) / x.shape[0])


def _simulated_view(array: np.ndarray):
    """A device array with the same strides as ``array`` (a strided view of a device buffer)."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        pytest.skip("building arbitrary device views needs the simulator")
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    return FakeCUDAArray(array)


def test_weighted_mean_gradient_and_axis() -> None:
    x = RNG.standard_normal((4, 5)).astype(np.float32)
    y = RNG.standard_normal((4, 5)).astype(np.float32)
    w = RNG.uniform(0.5, 2.0, (1, 5)).astype(np.float32)
    dx, dy, dw = cuda.to_device(x), cuda.to_device(y), cuda.to_device(w)
    loss, grad = l1.l1_loss_and_grad(dx, dy, "mean", weight=dw, axis=0)
    host_loss, host_grad = _host(loss), _host(grad)
    for column in range(5):
        weights = [float(w[0, column])] * 4
        exact = _exact_sum(_abs_differences(x[:, column], y[:, column]), weights) / _exact_sum(
            weights
        )
        assert _ulp_error(host_loss[column], exact, "float32") <= 0.6
    expected = np.sign(x.astype(np.float64) - y) * (
        w.astype(np.float64) / (4 * w.astype(np.float64))
    )
    assert np.array_equal(host_grad, expected.astype(np.float32))


def test_broadcast_gradient_is_summed_back() -> None:
    x = RNG.standard_normal((3, 1)).astype(np.float64)
    y = RNG.standard_normal((3, 4)).astype(np.float64)
    grad = _host(l1.l1_loss_grad(cuda.to_device(x), cuda.to_device(y), "sum", broadcast=True))
    assert grad.shape == (3, 1)
    assert np.array_equal(grad, np.sign(x - y).sum(axis=1, keepdims=True))


def test_integer_inputs_are_promoted() -> None:
    x = np.arange(6, dtype=np.int64)
    y = np.full(6, 2, dtype=np.int32)
    loss = l1.l1_loss(cuda.to_device(x), cuda.to_device(y), "sum")
    assert loss.dtype == np.float64 and _host(loss)[()] == 9.0


def test_partials_are_unrounded_double_words() -> None:
    from l1backends._backends.numba_cuda import backend
    from l1backends.semantics import make_plan

    x = np.array([1.0, 2.0**-60, 3.0])
    y = np.zeros(3)
    plan = make_plan((3,), "float64", (3,), "float64", "sum")
    high, low, weight_high, weight_low = backend.partials(
        plan, cuda.to_device(x), cuda.to_device(y), None
    )
    assert weight_high is None and weight_low is None
    assert (
        Fraction(float(_host(high)[()])) + Fraction(float(_host(low)[()]))
        == Fraction(4) + Fraction(2) ** -60
    )


def test_same_call_gives_same_bits() -> None:
    x = cuda.to_device(RNG.standard_normal(5000).astype(np.float32))
    y = cuda.to_device(RNG.standard_normal(5000).astype(np.float32))
    first = l1.l1_loss_and_grad(x, y)
    second = l1.l1_loss_and_grad(x, y)
    assert _host(first[0]).tobytes() == _host(second[0]).tobytes()
    assert _host(first[1]).tobytes() == _host(second[1]).tobytes()


def test_mixing_host_and_device_arrays_raises_type_error() -> None:
    x = np.ones(3, dtype=np.float32)
    with pytest.raises(TypeError, match="cannot be mixed"):
        l1.l1_loss(cuda.to_device(x), x)
    with pytest.raises(TypeError, match="cannot be mixed"):
        l1.l1_loss(x, cuda.to_device(x))


def test_inputs_are_not_modified() -> None:
    x = RNG.standard_normal(50)
    y = RNG.standard_normal(50)
    dx, dy = cuda.to_device(x), cuda.to_device(y)
    l1.l1_loss_and_grad(dx, dy, "none")
    assert np.array_equal(_host(dx), x) and np.array_equal(_host(dy), y)
