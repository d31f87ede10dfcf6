"""Arrays NumPy users really have, and the ways processes really run: no wrong result, no hang.

Each test is a regression test of a defect once reproduced in a fresh process;
several appeared only after an earlier call of the same shape (the API's call
cache), so those run the plain call first.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from _threading_layers import LAYERS, layer_environment

import l1backends as l1
from l1backends.registry import BackendSpec, Capabilities

rng = np.random.default_rng(2024)


def exact_mean(x: np.ndarray, y: np.ndarray) -> Fraction:
    x, y = np.broadcast_arrays(x, y)
    terms = []
    for a, b in zip(x.ravel().tolist(), y.ravel().tolist(), strict=True):
        if isinstance(a, complex) or isinstance(b, complex):
            a, b = complex(a), complex(b)
            re, im = Fraction(a.real) - Fraction(b.real), Fraction(a.imag) - Fraction(b.imag)
            square = re * re + im * im
            root = math.isqrt(square.numerator * 4**80 // square.denominator)
            terms.append(Fraction(root, 2**80))
        else:
            terms.append(abs(Fraction(a) - Fraction(b)))
    return sum(terms, Fraction(0)) / len(terms)


def assert_ulps(got: np.ndarray, exact: Fraction, ulps: float) -> None:
    got = np.asarray(got)
    spacing = Fraction(float(np.spacing(np.abs(got.dtype.type(float(exact))))))
    error = abs(Fraction(float(got)) - exact) / spacing
    assert error <= ulps, f"{got!r} is {float(error)} ulp from {float(exact)!r}"


# ----- byte order ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [">f2", ">f4", ">f8", ">c8", ">c16", ">i4", ">u2"])
def test_big_endian_arrays_are_read_as_their_values(dtype: str) -> None:
    native = np.dtype(dtype).newbyteorder("=")
    values = (rng.standard_normal(4000) * 50).astype(native)
    if native.kind == "c":
        values = values + 1j * (rng.standard_normal(4000) * 50).astype(native)
    other = rng.standard_normal(4000).astype(np.float32)
    swapped = values.astype(dtype)
    assert swapped.dtype.byteorder == ">" and np.array_equal(swapped, values)
    layouts = [
        (swapped, other),
        (swapped[::-3], other[::-3]),
        (swapped.reshape(40, 100).T, other.reshape(40, 100).T),
    ]
    for x, y in layouts:
        plain_x = np.array(x, dtype=native)
        ulps = 2.0 if np.result_type(native, np.float32).itemsize >= 8 else 0.6
        assert_ulps(l1.l1_loss(x, y), exact_mean(plain_x, y), ulps)
        np.testing.assert_array_equal(l1.l1_loss(x, y, "none"), l1.l1_loss(plain_x, y, "none"))
        np.testing.assert_array_equal(l1.l1_loss_grad(x, y), l1.l1_loss_grad(plain_x, y))
        np.testing.assert_array_equal(l1.l1_loss(x, y, axis=-1), l1.l1_loss(plain_x, y, axis=-1))


def test_complex64_big_endian_example_from_the_report() -> None:
    x = np.array([3 + 4j, 0], dtype=">c8")
    assert float(l1.l1_loss(x, np.zeros(2, dtype=">c8"))) == 2.5


def test_big_endian_memmap(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    values = rng.standard_normal(3000)
    values.astype(">f8").tofile(path)
    mapped = np.memmap(path, dtype=">f8", mode="r", shape=(3000,))
    assert_ulps(l1.l1_loss(mapped, np.zeros(3000)), exact_mean(values, np.zeros(3000)), 2.0)


# ----- masked arrays and subclasses ---------------------------------------------------------


@pytest.mark.parametrize("warm", [False, True])
def test_masked_arrays_are_refused_before_any_cache(warm: bool) -> None:
    x = np.ma.MaskedArray([1.0, 1e30, 3.0], mask=[False, True, False])
    y = np.zeros(3)
    if warm:
        l1.l1_loss(np.ones(3), y)  # the same signature, plain
    for function in (l1.l1_loss, l1.l1_loss_grad, l1.l1_loss_and_grad):
        with pytest.raises(TypeError, match=r"masked array.*filled.*compressed"):
            function(x, y)
        with pytest.raises(TypeError, match="masked array"):
            function(y, x)


def test_masked_dask_chunks_are_refused() -> None:
    da = pytest.importorskip("dask.array", reason="dask is an optional backend")
    masked = da.ma.masked_array(da.from_array(np.arange(6.0), chunks=3), mask=[0, 1, 0, 0, 0, 1])
    with pytest.raises(TypeError, match="masked"):
        l1.l1_loss(masked, da.zeros(6, chunks=3))


class KeepsUnitAxes(np.ndarray):
    """A subclass whose reshape keeps unit axes: once crashed the process after a plain call."""

    def reshape(self, *shape, **kwargs):  # type: ignore[override]
        return super().reshape(*shape, **kwargs)[..., None]


@pytest.mark.parametrize("kind", ["matrix", "memmap", "custom"])
def test_subclasses_are_read_as_plain_arrays(kind: str, tmp_path: Path) -> None:
    values = rng.standard_normal((30, 40))
    if kind == "matrix":
        x = np.asmatrix(values)
    elif kind == "memmap":
        x = np.memmap(tmp_path / "m.bin", dtype=np.float64, mode="w+", shape=values.shape)
        x[:] = values
    else:
        x = values.view(KeepsUnitAxes)
    y = np.zeros((30, 40))
    l1.l1_loss(values, y)  # the same signature with plain arrays first
    assert_ulps(l1.l1_loss(x, y), exact_mean(values, y), 2.0)
    loss, grad = l1.l1_loss_and_grad(x, y, "none")
    assert type(loss) is np.ndarray and type(grad) is np.ndarray
    np.testing.assert_array_equal(loss, np.abs(values))
    np.testing.assert_array_equal(grad, np.sign(values))


# ----- overflow -----------------------------------------------------------------------------


def test_float64_sums_beyond_range_are_rescaled_when_the_result_is_finite() -> None:
    largest = np.finfo(np.float64).max
    twice = np.array([largest, largest])
    assert float(l1.l1_loss(twice, np.zeros(2))) == largest
    assert float(l1.l1_loss(twice[::-1], np.zeros(2)[::-1])) == largest  # general path
    assert math.isinf(float(l1.l1_loss(twice, np.zeros(2), "sum")))  # the sum is not finite
    assert float(l1.l1_loss(np.ones(2), np.zeros(2), weight=np.array([1e308, 1e308]))) == 1.0
    grad = l1.l1_loss_grad(np.ones(2), np.zeros(2), weight=np.array([1e308, 1e308]))
    np.testing.assert_array_equal(grad, [0.5, 0.5])
    assert math.isnan(float(l1.l1_loss(np.array([largest, np.nan]), np.zeros(2))))
    assert math.isinf(float(l1.l1_loss(np.array([largest, np.inf]), np.zeros(2))))


# ----- bounded memory -----------------------------------------------------------------------


def peak_bytes(function) -> int:
    """Peak bytes NumPy allocated (tracemalloc sees NumPy's buffers) while ``function`` ran."""
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_broadcast_gradient_allocates_no_full_shape_temporary() -> None:
    small = rng.standard_normal((1, 1000))  # 8 KB
    target = np.broadcast_to(rng.standard_normal((1, 1000)), (20000, 1000))  # zero-stride
    l1.l1_loss_and_grad(small, target, "sum", broadcast=True)  # compile first
    peak = peak_bytes(lambda: l1.l1_loss_and_grad(small, target, "sum", broadcast=True))
    assert peak < 2_000_000, peak  # a full-shape float64 temporary would be 160 MB


@pytest.mark.parametrize(
    ("reduction", "axis", "output_bytes"),
    [("none", None, 4 * 2**22), ("sum", None, 8), ("mean", 1, 4 * 2**21), ("mean", 0, 8)],
)
def test_strided_and_zero_stride_calls_allocate_at_most_their_output(reduction, axis, output_bytes):
    x = np.broadcast_to(np.float32(1.5), (2**21, 2))  # zero-stride, 4 M elements
    y = rng.standard_normal((2**21, 4)).astype(np.float32)[:, ::2]  # strided
    l1.l1_loss(x, y, reduction, axis=axis)  # compile first: numba's compiler allocates too
    l1.l1_loss_and_grad(y, x, reduction, axis=axis)
    peak = peak_bytes(lambda: l1.l1_loss(x, y, reduction, axis=axis))
    assert peak < output_bytes + 1_000_000, peak
    peak = peak_bytes(lambda: l1.l1_loss_and_grad(y, x, reduction, axis=axis))
    assert peak < output_bytes + y.size * 4 + 1_000_000, peak


# ----- processes and threads ----------------------------------------------------------------

FORK = textwrap.dedent(
    """
    import multiprocessing, os, sys
    from concurrent.futures import ProcessPoolExecutor
    import numpy as np, l1backends as l1

    x = np.arange(1 << 20, dtype=np.float32)
    expected = float(l1.l1_loss(x, np.zeros_like(x)))  # a parallel call before any fork

    def work(_):
        return float(l1.l1_loss(x, np.zeros_like(x)))

    if __name__ == "__main__":
        pid = os.fork()
        if pid == 0:
            os._exit(0 if work(0) == expected else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        context = multiprocessing.get_context("fork")
        with context.Pool(2) as pool:
            assert pool.map(work, range(4)) == [expected] * 4
        with ProcessPoolExecutor(2, mp_context=context) as executor:
            assert list(executor.map(work, range(4))) == [expected] * 4
        print("forked fine")
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("layer", LAYERS)
def test_fork_after_a_parallel_call(layer: str, tmp_path: Path) -> None:
    script = tmp_path / "fork.py"
    script.write_text(FORK)
    env = layer_environment(layer)
    run = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=240
    )
    assert run.returncode == 0, run.stderr
    assert "forked fine" in run.stdout


class SlowProbe:
    started = threading.Event()

    @staticmethod
    def probe() -> str | None:
        SlowProbe.started.set()
        time.sleep(3)
        return "a slow driver said no"


def test_a_slow_probe_does_not_block_other_dispatch() -> None:
    spec = BackendSpec(
        name="slow-probe",
        implementation="l1backends._backends.array_api:backend",
        array_types=(f"{__name__}:SlowProbe",),
        probe=f"{__name__}:SlowProbe.probe",
        capabilities=Capabilities(),
    )
    l1.register_backend(spec)
    try:
        prober = threading.Thread(target=lambda: l1.backends())
        prober.start()
        assert SlowProbe.started.wait(10)
        start = time.perf_counter()
        l1.l1_loss(rng.standard_normal(7), np.zeros(7))  # a new signature: a full dispatch
        elapsed = time.perf_counter() - start
        prober.join()
    finally:
        l1.unregister_backend("slow-probe")
    assert elapsed < 1.0, elapsed
