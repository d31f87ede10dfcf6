"""The Dask backend: laziness, per-chunk dispatch, exact combination, gradients, chunk alignment.

References are exact: ``fractions.Fraction`` for real values, and 60-digit
``decimal`` square roots of exact Fractions for complex moduli.
"""

from __future__ import annotations

import decimal
import math
import warnings
from fractions import Fraction

import numpy as np
import pytest

da = pytest.importorskip("dask.array", reason="dask is not installed (l1backends[dask])")
dask = pytest.importorskip("dask")

import l1backends as l1  # noqa: E402
from l1backends.registry import registry, type_name  # noqa: E402
from l1backends.semantics import make_plan, promote_dtypes  # noqa: E402

# Declared accuracy of the "dask" backend, in ulps of the result dtype.
ULPS = {"float16": 0.6, "float32": 0.6, "float64": 2.0, "complex64": 0.6, "complex128": 2.0}
REAL_OF = {"float16": "float16", "float32": "float32", "float64": "float64"}
REAL_OF.update(complex64="float32", complex128="float64")
DTYPES = ("float16", "float32", "float64", "complex64", "complex128")


@pytest.fixture(autouse=True)
def _no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# ----- exact references ---------------------------------------------------------------------


def _sqrt(value: Fraction) -> Fraction:
    with decimal.localcontext() as context:
        context.prec = 60
        root = (decimal.Decimal(value.numerator) / decimal.Decimal(value.denominator)).sqrt()
    return Fraction(root)


def _diff(a: complex | float, b: complex | float) -> tuple[Fraction, Fraction]:
    a, b = complex(a), complex(b)
    return Fraction(a.real) - Fraction(b.real), Fraction(a.imag) - Fraction(b.imag)


def _modulus(re: Fraction, im: Fraction) -> Fraction:
    return abs(re) if im == 0 else _sqrt(re * re + im * im)


def _promoted(x: np.ndarray, y: np.ndarray, broadcast: bool = False) -> tuple[np.ndarray, ...]:
    dtype = promote_dtypes(x.dtype.name, y.dtype.name)
    x, y = x.astype(dtype), y.astype(dtype)
    return (*np.broadcast_arrays(x, y), dtype) if broadcast else (x, y, dtype)


def exact_loss(x, y, reduction="mean", weight=None, axis=None, broadcast=False):
    """The exact loss as an object array of Fractions (NaN where undefined)."""
    x, y, dtype = _promoted(np.asarray(x), np.asarray(y), broadcast)
    real = REAL_OF[dtype]
    shape = x.shape
    w = np.ones(shape) if weight is None else np.broadcast_to(weight.astype(real), shape)
    terms = np.empty(shape, dtype=object)
    for index in np.ndindex(*shape):
        if not (np.isfinite(x[index]) and np.isfinite(y[index])):
            terms[index] = math.nan  # every non-finite case in these tests is NaN or inf-inf
            continue
        terms[index] = _modulus(*_diff(x[index], y[index])) * Fraction(float(w[index]))
    if reduction == "none":
        return terms
    axes = _axes(axis, len(shape))
    weights = np.vectorize(lambda v: Fraction(float(v)), otypes=[object])(w)
    total = _object_sum(terms, axes)
    if reduction == "sum":
        return total
    divisor = (
        _object_sum(weights, axes) if weight is not None else math.prod(shape[ax] for ax in axes)
    )
    return np.vectorize(_divide, otypes=[object])(total, divisor)


def _axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    return tuple(sorted(ax % ndim for ax in ((axis,) if isinstance(axis, int) else axis)))


def _object_sum(values: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    kept = [ax for ax in range(values.ndim) if ax not in axes]
    moved = np.transpose(values, (*kept, *axes)).reshape((*(values.shape[ax] for ax in kept), -1))
    out = np.empty(moved.shape[:-1], dtype=object)
    for index in np.ndindex(*out.shape):
        items = list(moved[index])
        out[index] = (
            math.nan if any(isinstance(v, float) for v in items) else sum(items, Fraction(0))
        )
    return out


def _divide(total, divisor):
    if isinstance(total, float) or divisor == 0:
        return math.nan
    return total / divisor


def exact_grad(x, y, reduction="mean", weight=None, axis=None, grad_output=None, broadcast=False):
    """The exact subgradient wrt input: object array of (re, im) Fraction pairs (or NaN)."""
    x0 = np.asarray(x)
    x, y, dtype = _promoted(x0, np.asarray(y), broadcast)
    real = REAL_OF[dtype]
    shape = x.shape
    w = np.ones(shape) if weight is None else np.broadcast_to(weight.astype(real), shape)
    axes = () if reduction == "none" else _axes(axis, len(shape))
    keep = tuple(1 if ax in axes else n for ax, n in enumerate(shape))
    g = 1.0 if grad_output is None else grad_output
    g = np.broadcast_to(np.asarray(g).astype(real).reshape(keep if np.ndim(g) else ()), shape)
    if reduction == "mean":
        fractions = np.vectorize(lambda v: Fraction(float(v)), otypes=[object])(w)
        divisor = (
            _object_sum(fractions, axes).reshape(keep)
            if weight is not None
            else np.full(keep, math.prod(shape[ax] for ax in axes), dtype=object)
        )
        divisor = np.broadcast_to(divisor, shape)
    out = np.empty(shape, dtype=object)
    for index in np.ndindex(*shape):
        re, im = _diff(x[index], y[index])
        if not (np.isfinite(x[index]) and np.isfinite(y[index])):
            out[index] = math.nan
            continue
        scale = Fraction(float(g[index])) * Fraction(float(w[index]))
        if reduction == "mean":
            scale /= divisor[index]
        modulus = _modulus(re, im)
        out[index] = (0, 0) if modulus == 0 else (re / modulus * scale, im / modulus * scale)
    lead = len(shape) - x0.ndim
    sum_axes = tuple(range(lead)) + tuple(
        lead + ax for ax, n in enumerate(x0.shape) if n != shape[lead + ax]
    )
    if not sum_axes:
        return out
    summed = np.empty(x0.shape, dtype=object)
    flat = np.transpose(out, (*(a for a in range(len(shape)) if a not in sum_axes), *sum_axes))
    flat = flat.reshape((*(n for a, n in enumerate(shape) if a not in sum_axes), -1))
    for index in np.ndindex(*flat.shape[:-1]):
        items = list(flat[index])
        if any(isinstance(v, float) for v in items):
            value = math.nan
        else:
            value = (sum(v[0] for v in items), sum(v[1] for v in items))
        summed[np.unravel_index(np.ravel_multi_index(index, flat.shape[:-1]), x0.shape)] = value
    return summed


def _ulp(value: Fraction, dtype: str) -> Fraction:
    return Fraction(float(np.spacing(np.abs(np.asarray(float(value), dtype=dtype)))))


def assert_close(got: np.ndarray, exact: np.ndarray, dtype: str, what: str = "") -> None:
    """Every element of ``got`` within the declared ulps of the exact value (NaN where NaN).

    Each component of a complex gradient is measured in ulps of the exact modulus
    (componentwise ulps would charge a small component for its large partner's
    rounding in |d|; normwise ulps would fail even correctly rounded components).
    """
    got = np.asarray(got)
    real = REAL_OF[dtype]
    bound = Fraction(ULPS[dtype])
    assert got.shape == exact.shape, (got.shape, exact.shape)
    for index in np.ndindex(*got.shape):
        want, value = exact[index], got[index]
        if isinstance(want, float):
            assert math.isnan(want)
            assert np.isnan(value).any(), (what, index, value)
            continue
        if isinstance(want, tuple):
            re, im = (Fraction(part) for part in want)
            value = complex(value)
            assert math.isfinite(value.real) and math.isfinite(value.imag), (what, index, value)
            error_re, error_im = Fraction(value.real) - re, Fraction(value.imag) - im
            scale = _ulp(_modulus(re, im), real)
            error_squared = max(error_re * error_re, error_im * error_im)
        else:
            value = float(value)
            assert math.isfinite(value), (what, index, value)
            error_squared = (Fraction(value) - want) ** 2
            scale = _ulp(want, real)
        assert error_squared <= (bound * scale) ** 2, (
            f"{what} at {index}: {value!r} vs {want!r}: "
            f"{math.sqrt(error_squared / scale**2)} ulp (bound {float(bound)})"
        )


# ----- data ---------------------------------------------------------------------------------


def random_pair(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    if dtype.startswith("complex"):
        x = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
        y = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    else:
        x, y = rng.standard_normal(shape) * 4, rng.standard_normal(shape) * 4
    x, y = x.astype(dtype), y.astype(dtype)
    y.flat[::5] = x.flat[::5]  # ties
    return x, y


def lazy(array, chunks):
    return da.from_array(array, chunks=chunks)


# ----- dispatch and laziness ----------------------------------------------------------------


def test_dask_arrays_dispatch_to_dask():
    x = da.ones(4, chunks=2)
    assert type_name(type(x)) == "dask.array.core:Array"
    assert registry.select((x, x), None, "test").name == "dask"
    assert {b.name: b.available for b in l1.backends()}["dask"] is True


def test_nothing_is_computed_at_call_time():
    computed = []

    def explode():
        computed.append(True)
        raise RuntimeError("the graph was computed")

    x = da.from_delayed(dask.delayed(explode)(), (6, 4), np.float32)
    y = lazy(np.ones((6, 4), np.float32), (4, 3))  # mismatched chunks: rechunked lazily
    w = lazy(np.ones((4,)), 2)
    g = lazy(np.ones(4, np.float32), 1)
    for reduction in ("mean", "sum", "none"):
        options = {"weight": w} if reduction == "none" else {"weight": w, "axis": 0}
        loss = l1.l1_loss(x, y, reduction, **options)
        grad = l1.l1_loss_grad(
            x, y, reduction, grad_output=g if reduction != "none" else 2.0, **options
        )
        both = l1.l1_loss_and_grad(x, y, reduction, **options)
        assert all(isinstance(a, da.Array) for a in (loss, grad, *both))
    assert computed == []
    with pytest.raises(RuntimeError, match="the graph was computed"):
        loss.compute(scheduler="sync")


def test_each_chunk_is_computed_by_its_types_backend(monkeypatch):
    seen = []
    numpy_backend = registry.select((np.ones(1), np.ones(1)), None, "test")
    original = numpy_backend.partials

    def spy(plan, x, y, w):
        seen.append((type(x), plan.shape))
        return original(plan, x, y, w)

    monkeypatch.setattr(numpy_backend, "partials", spy)
    x, y = random_pair((10,), "float64")
    l1.l1_loss(lazy(x, 4), lazy(y, 4)).compute(scheduler="sync")
    assert sorted(seen, key=lambda item: item[1]) == [
        (np.ndarray, (2,)),
        (np.ndarray, (4,)),
        (np.ndarray, (4,)),
    ]


def test_unknown_chunk_sizes_are_refused_clearly():
    x = da.ones(10, chunks=5)
    x = x[x > 0]
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        l1.l1_loss(x, x)


# ----- values -------------------------------------------------------------------------------

CASES = [
    ("mean", None, False),
    ("sum", None, False),
    ("none", None, False),
    ("mean", 0, False),
    ("sum", (0, 2), False),
    ("mean", -1, True),
    ("sum", 1, True),
    ("mean", None, True),
    ("none", None, True),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("reduction", "axis", "weighted"), CASES)
def test_loss_and_grad_are_exact(dtype, reduction, axis, weighted):
    shape, chunks = (5, 4, 6), (2, 3, 4)
    x, y = random_pair(shape, dtype)
    rng = np.random.default_rng(1)
    w = rng.random((4, 6)) + 0.25 if weighted else None
    options = {} if axis is None else {"axis": axis}
    xd, yd = lazy(x, chunks), lazy(y, chunks)
    wd = None if w is None else lazy(w, (3, 2))
    loss, grad = l1.l1_loss_and_grad(xd, yd, reduction, weight=wd, **options)

    real = REAL_OF[dtype]
    want = exact_loss(x, y, reduction, w, axis)
    assert loss.dtype == np.dtype(real) and loss.shape == want.shape
    assert grad.dtype == np.dtype(dtype) and grad.shape == shape
    assert grad.chunks == xd.chunks
    computed_loss, computed_grad = dask.compute(loss, grad, scheduler="threads")
    assert_close(computed_loss, want, dtype, "loss")
    assert_close(computed_grad, exact_grad(x, y, reduction, w, axis), dtype, "grad")

    # Within 1 ulp of the single-machine (NumPy) path.
    single = l1.l1_loss(x, y, reduction, weight=w, **options)
    np.testing.assert_array_max_ulp(computed_loss, single, 1)
    # The separate calls give the same bits as the shared one.
    assert np.array_equal(
        l1.l1_loss(xd, yd, reduction, weight=wd, **options).compute(), computed_loss
    )
    separate = l1.l1_loss_grad(xd, yd, reduction, weight=wd, **options).compute()
    assert np.array_equal(separate.view(real), computed_grad.view(real))


@pytest.mark.parametrize("dtype", ["int32", "float16"])
def test_integers_are_promoted_like_numpy_arrays(dtype):
    x = np.arange(12, dtype="int32").reshape(3, 4)
    y = np.arange(12, dtype=dtype)[::-1].reshape(3, 4)
    loss = l1.l1_loss(lazy(x, 2), lazy(y, 2)).compute()
    assert loss.dtype == l1.l1_loss(x, y).dtype
    assert_close(loss, exact_loss(x, y), loss.dtype.name)
    grad = l1.l1_loss_grad(lazy(x, 2), lazy(y, 2), "sum").compute()
    assert grad.dtype == l1.l1_loss_grad(x, y, "sum").dtype


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_broadcast_gradient_is_summed_back_exactly(dtype, reduction):
    x, _ = random_pair((4, 1), dtype, seed=2)
    _, y = random_pair((3, 4, 5), dtype, seed=3)
    w = np.random.default_rng(4).random(5) + 0.5
    xd, yd, wd = lazy(x, (3, 1)), lazy(y, (2, 2, 3)), lazy(w, 2)
    loss, grad = l1.l1_loss_and_grad(xd, yd, reduction, weight=wd, broadcast=True)
    assert grad.shape == x.shape and grad.chunks == xd.chunks
    assert_close(loss.compute(), exact_loss(x, y, reduction, w, broadcast=True), dtype)
    assert_close(
        grad.compute(), exact_grad(x, y, reduction, w, broadcast=True), dtype, "summed-back grad"
    )


@pytest.mark.parametrize("axis", [None, 1])
def test_grad_output_arrays_and_scalars(axis):
    x, y = random_pair((6, 5), "float32")
    xd, yd = lazy(x, (4, 2)), lazy(y, (4, 2))
    for reduction in ("mean", "sum"):
        for g in (0.75, np.float32(-2.0) * np.ones(6, np.float32) if axis == 1 else 3.0):
            gd = lazy(g, 5) if isinstance(g, np.ndarray) else g
            grad = l1.l1_loss_grad(xd, yd, reduction, grad_output=gd, axis=axis).compute()
            assert_close(grad, exact_grad(x, y, reduction, None, axis, g), "float32")
    g = lazy(np.array(2.5, np.float32), ())  # a 0-d dask grad_output
    grad = l1.l1_loss_grad(xd, yd, "mean", grad_output=g).compute()
    assert_close(grad, exact_grad(x, y, "mean", None, None, np.float32(2.5)), "float32")
    g = np.random.default_rng(5).random((6, 5)).astype(np.float32)
    grad = l1.l1_loss_grad(xd, yd, "none", grad_output=lazy(g, 3)).compute()
    assert_close(grad, exact_grad(x, y, "none", None, None, g), "float32")


# ----- special values -----------------------------------------------------------------------


def test_empty_inputs():
    x = lazy(np.zeros((0, 3), np.float32), 2)
    assert np.isnan(l1.l1_loss(x, x).compute())
    assert l1.l1_loss(x, x, "sum").compute() == 0
    assert l1.l1_loss(x, x, "none").compute().shape == (0, 3)
    assert l1.l1_loss_grad(x, x).compute().shape == (0, 3)
    y = lazy(np.zeros((3, 0)), 2)
    loss, grad = l1.l1_loss_and_grad(y, y, axis=1, weight=y, grad_output=lazy(np.ones(3), 2))
    assert np.isnan(loss.compute()).all() and loss.shape == (3,)
    assert grad.compute().shape == (3, 0)


def test_nan_and_inf_propagate():
    x = np.array([1.0, np.nan, np.inf, 2.0, -np.inf, 3.0])
    y = np.array([1.0, 0.0, np.inf, np.nan, 5.0, 1.0])
    xd, yd = lazy(x, 2), lazy(y, 2)
    none = l1.l1_loss(xd, yd, "none").compute()
    np.testing.assert_array_equal(none, [0.0, np.nan, np.nan, np.nan, np.inf, 2.0])
    assert np.isnan(l1.l1_loss(xd, yd).compute())
    grad = l1.l1_loss_grad(xd, yd, "sum").compute()
    np.testing.assert_array_equal(grad, [0.0, np.nan, np.nan, np.nan, -1.0, 1.0])
    finite = l1.l1_loss(lazy(x[4:], 1), lazy(y[4:], 1), "sum").compute()
    assert finite == np.inf


def test_zero_dimensional_inputs():
    x, y = lazy(np.array(1.5, np.float32), ()), lazy(np.array(-0.25, np.float32), ())
    assert l1.l1_loss(x, y).compute() == np.float32(1.75)
    assert l1.l1_loss(x, y, "none").compute().shape == ()
    assert l1.l1_loss_grad(x, y).compute() == np.float32(1.0)


# ----- exact combination and determinism ----------------------------------------------------


def test_combination_keeps_compensation_across_chunks():
    # Σ w·|d| = 1e16 + 1 - 1e16 = 1 exactly; a plain float64 sum of the chunks gives 0.
    x = np.array([1e16, 1.0, 1e16])
    y = np.zeros(3)
    w = np.array([1.0, 1.0, -1.0])
    assert l1.l1_loss(lazy(x, 1), lazy(y, 1), "sum", weight=lazy(w, 1)).compute() == 1.0


def test_many_chunks_float32_sum_is_correctly_rounded():
    # 100 chunks take more than one level of the combining tree.
    x, y = random_pair((4000,), "float32", seed=6)
    for chunks in (4000, 40, 7):
        got = l1.l1_loss(lazy(x, chunks), lazy(y, chunks), "sum").compute()
        assert_close(got, exact_loss(x, y, "sum"), "float32")
        got = l1.l1_loss(lazy(x, chunks), lazy(y, chunks)).compute()
        assert_close(got, exact_loss(x, y), "float32")


def test_same_bits_twice_and_on_every_scheduler():
    x, y = random_pair((3000, 3), "float64", seed=7)
    w = np.random.default_rng(8).random(3000)[:, None]
    xd, yd, wd = lazy(x, (170, 2)), lazy(y, (170, 2)), lazy(w, 300)
    loss, grad = l1.l1_loss_and_grad(xd, yd, weight=wd)
    first = dask.compute(loss, grad, scheduler="threads")
    for scheduler in ("threads", "sync"):
        again = dask.compute(loss, grad, scheduler=scheduler)
        assert first[0].tobytes() == again[0].tobytes()
        assert first[1].tobytes() == again[1].tobytes()
    rebuilt = l1.l1_loss(lazy(x, (170, 2)), lazy(y, (170, 2)), weight=lazy(w, 300)).compute()
    assert rebuilt.tobytes() == first[0].tobytes()


def test_result_depends_only_on_the_inputs_chunking():
    x, y = random_pair((50, 8), "float32", seed=9)
    w = np.random.default_rng(10).random((50, 8))
    reference = l1.l1_loss(lazy(x, (7, 3)), lazy(y, (7, 3)), "sum", weight=lazy(w, (7, 3)))
    for target_chunks, weight_chunks in (((10, 8), (25, 1)), ((50, 2), (3, 3))):
        mixed = l1.l1_loss(
            lazy(x, (7, 3)), lazy(y, target_chunks), "sum", weight=lazy(w, weight_chunks)
        )
        assert mixed.compute().tobytes() == reference.compute().tobytes()
        grad = l1.l1_loss_grad(lazy(x, (7, 3)), lazy(y, target_chunks), weight=lazy(w, 3))
        assert grad.chunks == ((7,) * 7 + (1,), (3, 3, 2))


def test_inputs_are_not_modified_and_read_only_inputs_work():
    x, y = random_pair((30,), "float32", seed=11)
    x.flags.writeable = False
    y.flags.writeable = False
    before = (x.copy(), y.copy())
    loss, grad = l1.l1_loss_and_grad(lazy(x, 7), lazy(y, 7), "none")
    dask.compute(loss, grad)
    np.testing.assert_array_equal(x, before[0])
    np.testing.assert_array_equal(y, before[1])


def test_partials_are_double_words():
    x, y = random_pair((40,), "float64", seed=12)
    w = np.random.default_rng(13).random(40)
    plan = make_plan((40,), "float64", (40,), "float64", "sum", (40,), "float64")
    high, low, weight_high, weight_low = registry.implementation("dask").partials(
        plan, lazy(x, 9), lazy(y, 9), lazy(w, 9)
    )
    high, low, weight_high, weight_low = dask.compute(high, low, weight_high, weight_low)
    exact = exact_loss(x, y, "sum", w)[()]
    assert Fraction(float(high)) + Fraction(float(low)) - exact < Fraction(1, 2**100) * exact
    assert float(weight_high) == math.fsum(w) or abs(float(weight_low)) > 0
    plain = registry.implementation("dask").partials(plan, lazy(x, 9), lazy(y, 9), None)
    assert plain[2] is None and plain[3] is None


def test_numba_threads_per_task_shares_the_cores():
    numba = pytest.importorskip("numba")
    from l1backends._backends.dask._blocks import numba_threads_per_task

    cores = numba.config.NUMBA_NUM_THREADS
    assert numba_threads_per_task(1) == cores
    with dask.config.set(num_workers=cores):
        assert numba_threads_per_task(1000) == 1
    with dask.config.set(num_workers=1):
        assert numba_threads_per_task(1000) == cores


def test_cupy_chunks_are_computed_on_the_gpu_by_the_cupy_backend():
    reason = registry.unavailable_reason("cupy")
    if reason is not None:
        pytest.skip(f"the cupy backend is unavailable: {reason}")
    import cupy

    x, y = random_pair((3, 1000), "float32", seed=14)
    w = np.random.default_rng(15).random(1000).astype(np.float32)
    xd, yd, wd = (da.from_array(cupy.asarray(a), chunks=300) for a in (x, y, w))
    loss, grad = l1.l1_loss_and_grad(xd, yd, weight=wd, axis=1)
    loss, grad = dask.compute(loss, grad, scheduler="threads")
    assert isinstance(loss, cupy.ndarray) and isinstance(grad, cupy.ndarray)
    assert_close(loss.get(), exact_loss(x, y, "mean", w, 1), "float32", "loss")
    assert_close(grad.get(), exact_grad(x, y, "mean", w, 1), "float32", "grad")
