"""The numba-CPU backend against exact references (fractions.Fraction)."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import numpy as np
import pytest

pytest.importorskip("numba", reason="numba is not installed")

from _threading_layers import LAYERS, layer_environment

import l1backends as l1
from l1backends._backends import numba_cpu
from l1backends._backends.numba_cpu import _scalars as scalars

BACKEND = "numba-cpu"
ULPS = {"float16": 0.6, "float32": 0.6, "float64": 2.0}
rng = np.random.default_rng(1234)


def exact_terms(x: np.ndarray, y: np.ndarray, dtype: str) -> list:
    """Exact |x - y| per element after casting to ``dtype`` (complex: high-precision modulus)."""
    x = np.broadcast_to(x, np.broadcast_shapes(x.shape, y.shape)).astype(dtype)
    y = np.broadcast_to(y, x.shape).astype(dtype)
    if np.dtype(dtype).kind == "c":
        out = []
        for a, b in zip(x.ravel(), y.ravel(), strict=True):
            re = Fraction(float(a.real)) - Fraction(float(b.real))
            im = Fraction(float(a.imag)) - Fraction(float(b.imag))
            square = re * re + im * im
            root = Fraction(math.isqrt(square.numerator * 4**60 // square.denominator), 2**60)
            out.append(root)
        return out
    return [
        abs(Fraction(float(a)) - Fraction(float(b)))
        for a, b in zip(x.ravel(), y.ravel(), strict=True)
    ]


def ulp_error(got: float, exact: Fraction, dtype: str) -> float:
    ulp = Fraction(float(np.spacing(np.abs(np.dtype(dtype).type(float(exact))))))
    return float(abs(Fraction(float(got)) - exact) / ulp)


def reference(x, y, reduction="mean", weight=None, compute=None):
    compute = compute or np.result_type(x, y).name
    terms = exact_terms(x, y, compute)
    if weight is None:
        weights = [Fraction(1)] * len(terms)
    else:
        real = np.empty(0, compute).real.dtype
        shape = np.broadcast_shapes(x.shape, y.shape)
        weights = [Fraction(float(v)) for v in np.broadcast_to(weight.astype(real), shape).ravel()]
    total = sum(t * w for t, w in zip(terms, weights, strict=True))
    if reduction == "sum":
        return total
    return total / sum(weights)


def assert_close(got, exact: Fraction, dtype: str) -> None:
    err = ulp_error(float(got), exact, dtype)
    assert err <= ULPS[dtype], f"{float(got)!r} vs {float(exact)!r}: {err} ulp"


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "complex64", "complex128"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_dtypes_exact(dtype, reduction):
    x = (rng.standard_normal(1003) * 3).astype(dtype)
    y = (rng.standard_normal(1003) * 3).astype(dtype)
    if np.dtype(dtype).kind == "c":
        x = x + 1j * rng.standard_normal(1003).astype(dtype)
    got = l1.l1_loss(x, y, reduction, backend=BACKEND)
    real = np.empty(0, dtype).real.dtype.name
    assert got.shape == () and got.dtype == real and isinstance(got, np.ndarray)
    assert_close(got, reference(x, y, reduction), real)


def test_integer_promotion_in_kernel():
    x = rng.integers(-1000, 1000, 301).astype(np.int32)
    y = rng.standard_normal(301).astype(np.float32)
    got = l1.l1_loss(x, y, backend=BACKEND)
    assert got.dtype == np.float32
    assert_close(got, reference(x, y, compute="float32"), "float32")
    ints = l1.l1_loss(x, x[::-1].astype(np.int64), "sum", backend=BACKEND)
    assert ints.dtype == np.float64
    assert float(ints) == float(np.abs(x.astype(np.int64) - x[::-1]).sum())
    big = np.array([2**24 + 1], dtype=np.int64)  # rounds to 2**24 in float32 first
    assert float(l1.l1_loss(big, np.zeros(1, np.float32), backend=BACKEND)) == 2.0**24


def layouts(shape):
    base = rng.standard_normal(shape).astype(np.float64)
    other = rng.standard_normal(shape).astype(np.float64)
    yield "C", base, other
    yield "F", np.asfortranarray(base), np.asfortranarray(other)
    yield "C/F", base, np.asfortranarray(other)
    yield "transposed", base.T.copy().T, np.ascontiguousarray(other.T).T
    big = rng.standard_normal((shape[0] * 2, shape[1] * 3))
    yield "steps", big[::2, ::3], other
    yield "negative", base[::-1, ::-1], other[:, ::-1]
    yield "zero-stride", np.broadcast_to(base[:1], shape), other


@pytest.mark.parametrize("axis", [None, 0, 1, (0, 1)])
@pytest.mark.parametrize("weighted", [False, True])
def test_layouts_axes_weights(axis, weighted):
    shape = (37, 45)
    weight = rng.random((37, 1)) if weighted else None
    for name, x, y in layouts(shape):
        got = l1.l1_loss(x, y, weight=weight, axis=axis, backend=BACKEND)
        xs, ys = np.array(x), np.array(y)
        if axis in (None, (0, 1)):
            assert_close(got, reference(xs, ys, weight=weight), "float64")
            continue
        moved = lambda a: np.moveaxis(np.broadcast_to(a, shape), axis, -1)  # noqa: E731
        for index in range(got.shape[0]):
            w = None if weight is None else moved(weight)[index]
            exact = reference(moved(xs)[index], moved(ys)[index], weight=w)
            assert_close(got[index], exact, "float64"), name


def test_none_and_grad_strided():
    x = rng.standard_normal((20, 30)).astype(np.float32)[::-1, ::2]
    y = rng.standard_normal((15, 20)).astype(np.float32).T
    w = rng.random(15).astype(np.float32)
    g = rng.standard_normal((15, 20)).astype(np.float32)[::-1].T
    loss, grad = l1.l1_loss_and_grad(x, y, "none", weight=w, grad_output=g, backend=BACKEND)
    d = x.astype(np.float64) - y
    np.testing.assert_array_equal(loss, (np.abs(d) * w).astype(np.float32))
    np.testing.assert_array_equal(grad, (np.sign(d) * w.astype(np.float64) * g).astype(np.float32))
    assert loss.flags.owndata and grad.shape == x.shape


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
def test_gradient_axis(reduction, weighted):
    x = rng.standard_normal((6, 50))
    y = x.copy()
    y[:, ::2] = rng.standard_normal((6, 25))  # ties elsewhere
    w = rng.random((6, 50)) if weighted else None
    g = rng.standard_normal(6)
    loss, grad = l1.l1_loss_and_grad(
        x, y, reduction, axis=1, weight=w, grad_output=g, backend=BACKEND
    )
    wf = np.ones_like(x) if w is None else w
    for i in range(6):
        for j in range(50):
            scale = Fraction(float(g[i])) * Fraction(float(wf[i, j]))
            if reduction == "mean":
                scale /= sum(Fraction(float(v)) for v in wf[i]) if weighted else 50
            exact = scale * int(np.sign(x[i, j] - y[i, j]))
            assert ulp_error(grad[i, j], exact, "float64") <= 2 or exact == grad[i, j] == 0
    np.testing.assert_array_equal(
        loss, l1.l1_loss(x, y, reduction, axis=1, weight=w, backend=BACKEND)
    )


def test_complex_gradient_and_broadcast():
    x = (rng.standard_normal((4, 1)) + 1j * rng.standard_normal((4, 1))).astype(np.complex64)
    y = (rng.standard_normal(5) + 1j * rng.standard_normal(5)).astype(np.complex64)
    grad = l1.l1_loss_grad(x, y, "sum", broadcast=True, backend=BACKEND)
    d = x.astype(np.complex128) - y
    expected = (d / np.abs(d)).sum(axis=1, keepdims=True).astype(np.complex64)
    assert grad.shape == (4, 1) and grad.dtype == np.complex64
    np.testing.assert_allclose(grad, expected, rtol=1e-6)
    nan = l1.l1_loss_grad(np.array([np.inf + 0j]), np.array([1 + 1j]), backend=BACKEND)
    assert np.isnan(nan.real).all() and np.isnan(nan.imag).all()


def test_nan_inf_empty_zero_d_readonly():
    x = np.array([1.0, np.nan, 3.0])
    y = np.array([1.0, 2.0, 5.0])
    loss, grad = l1.l1_loss_and_grad(x, y, backend=BACKEND)
    assert np.isnan(loss) and np.isnan(grad[1]) and grad[0] == 0 and grad[2] == -1 / 3
    assert np.isnan(l1.l1_loss(np.array([np.inf]), np.array([np.inf]), backend=BACKEND))
    assert l1.l1_loss(np.array([np.inf]), np.array([1.0]), "sum", backend=BACKEND) == np.inf
    empty = np.zeros((0, 3), np.float32)
    assert np.isnan(l1.l1_loss(empty, empty, backend=BACKEND))
    assert l1.l1_loss(empty, empty, "sum", backend=BACKEND) == 0
    assert l1.l1_loss(empty, empty, "sum", axis=0, backend=BACKEND).tolist() == [0, 0, 0]
    assert l1.l1_loss(empty, empty, "none", backend=BACKEND).shape == (0, 3)
    scalar = l1.l1_loss(np.full((), 2.5), np.zeros(()), backend=BACKEND)
    assert scalar.shape == () and scalar == 2.5
    a = rng.standard_normal(2000).astype(np.float32)
    b = rng.standard_normal(2000).astype(np.float32)
    a_copy, b_copy = a.copy(), b.copy()
    a.flags.writeable = b.flags.writeable = False
    loss, grad = l1.l1_loss_and_grad(a, b, backend=BACKEND)
    np.testing.assert_array_equal(a, a_copy)
    np.testing.assert_array_equal(b, b_copy)
    none = l1.l1_loss(a, b, "none", backend=BACKEND)
    assert none.flags.writeable and not np.shares_memory(none, a)


def test_float64_adversarial_sum():
    # Wildly different magnitudes: a naive float64 sum loses the small terms entirely.
    magnitudes = 10.0 ** rng.integers(-30, 30, 5000)
    x = rng.standard_normal(5000) * magnitudes
    y = -x[::-1] * rng.random(5000)
    for reduction in ("sum", "mean"):
        got = l1.l1_loss(x, y, reduction, backend=BACKEND)
        assert_close(got, reference(x, y, reduction), "float64")
    pair = np.array([1e300, 1.0, -1e300, 1e-300])  # weights with cancellation
    loss = l1.l1_loss(np.ones(4), np.zeros(4), "sum", weight=pair, backend=BACKEND)
    assert float(loss) == 1.0 + 1e-300


def test_partials():
    x = rng.standard_normal((8, 300))
    y = rng.standard_normal((8, 300))
    w = rng.random((8, 300))
    plan = l1.api.make_plan(x.shape, "float64", y.shape, "float64", "mean", w.shape, "float64", 1)
    high, low, wh, wl = numba_cpu.backend.partials(plan, x, y, w)
    assert high.shape == (8,) and wh.shape == (8,)
    for i in range(8):
        exact = sum(
            Fraction(float(a)) * Fraction(float(b))
            for a, b in zip(np.abs(x[i] - y[i]), w[i], strict=True)
        )
        # Each product w·|d| is rounded once (2**-53 relative); the sum adds no error.
        error = abs(Fraction(float(high[i])) + Fraction(float(low[i])) - exact)
        assert error <= exact * Fraction(1, 2**53)
        assert Fraction(float(wh[i])) + Fraction(float(wl[i])) == sum(map(Fraction, w[i]))


def test_half_conversions_exhaustive():
    bits = np.arange(1 << 16, dtype=np.uint16)
    decoded = np.array([scalars.half_to_f64(b) for b in bits[::7]])
    expected = bits[::7].view(np.float16).astype(np.float64)
    np.testing.assert_array_equal(decoded, expected)
    values = np.concatenate(
        [
            rng.standard_normal(3000) * 10.0 ** rng.integers(-9, 6, 3000),
            [65519.99, 65520.0, np.inf, -0.0],
        ]
    )
    encoded = np.array([scalars.f64_to_half(v) for v in values], dtype=np.uint16)
    with np.errstate(over="ignore"):  # NumPy's own cast warns on the values that overflow
        expected = values.astype(np.float16)
    np.testing.assert_array_equal(encoded, expected.view(np.uint16))


DETERMINISM = textwrap.dedent(
    """
    import hashlib, sys
    from concurrent.futures import ThreadPoolExecutor
    import numba, numpy as np, l1backends as l1

    @numba.njit(parallel=True)
    def other_librarys_kernel(a):
        total = 0.0
        for i in numba.prange(a.size):
            total += a[i]
        return total

    # Another library's parallel code starts numba's threading layer, as in a user's process.
    other_librarys_kernel(np.ones(1000))
    rng = np.random.default_rng(7)
    x = rng.standard_normal(1_200_000).astype(np.float32)  # the parallel paths too
    y = rng.standard_normal(1_200_000).astype(np.float32)
    w = rng.random((1_200_000,))
    out = [
        l1.l1_loss(x, y),
        *l1.l1_loss_and_grad(x, y, weight=w),
        l1.l1_loss(x.astype(np.float64), y, "sum"),
        l1.l1_loss(x.reshape(3, -1)[:, ::-1], y.reshape(3, -1), axis=1),
    ]
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in out)).hexdigest()

    def concurrent(_):
        return l1.l1_loss(x, y).tobytes() + l1.l1_loss_grad(x, y, weight=w).tobytes()

    with ThreadPoolExecutor(8) as pool:
        assert len(set(pool.map(concurrent, range(16)))) == 1, "concurrent calls differ"
    print(numba.threading_layer(), digest)
    """
)


@pytest.mark.slow
def test_same_bits_for_any_thread_count_and_threading_layer():
    """The same bits with 1 or 2 threads under every numba threading layer, started by
    other code in the process; concurrent calls from 8 Python threads agree too."""
    digests = set()
    for layer in LAYERS:
        if layer == "tbb":
            try:
                layer_environment(layer)
            except pytest.skip.Exception:
                continue  # absent: the other layers still run; tbb's own test says why
        for threads in ("1", "2"):
            env = dict(layer_environment(layer), NUMBA_NUM_THREADS=threads)
            run = subprocess.run(
                [sys.executable, "-c", DETERMINISM], env=env, capture_output=True, text=True
            )
            assert run.returncode == 0, f"{layer}, {threads} threads: {run.stderr}"
            started, digest = run.stdout.split()
            assert layer == "default" or started == layer, (layer, started)
            digests.add(digest)
    assert len(digests) == 1


def test_concurrent_threads():
    x = rng.standard_normal(1_100_000).astype(np.float32)  # above PARALLEL_MIN: threads
    y = rng.standard_normal(1_100_000).astype(np.float32)
    expected = l1.l1_loss(x, y, backend=BACKEND)
    expected_grad = l1.l1_loss_grad(x, y, backend=BACKEND)

    def call(_):
        return l1.l1_loss(x, y, backend=BACKEND), l1.l1_loss_grad(x, y, backend=BACKEND)

    with ThreadPoolExecutor(8) as pool:
        for loss, grad in pool.map(call, range(32)):
            assert loss == expected
            np.testing.assert_array_equal(grad, expected_grad)
