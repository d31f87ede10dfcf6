"""A Python model of the CUDA kernels' arithmetic, against exact references.

Both CUDA backends sum the same terms in the same order (the partition of
:mod:`l1backends._backends._cuda_launch`), along the same trees, with the same
double-word arithmetic.  This model follows them operation by operation and is
checked against ``fractions.Fraction``; under the CUDA simulator, the numba-cuda
backend's own kernels (plain Python there) must give the model's bits.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction

import numpy as np
import pytest

from l1backends._backends._cuda_launch import FINISH_THREADS, Partition, partition


def fma(a: float, b: float, c: float) -> float:
    return float(Fraction(a) * Fraction(b) + Fraction(c))


def two_sum(a: float, b: float) -> tuple[float, float]:
    s = a + b
    bv = s - a
    return s, (a - (s - bv)) + (b - bv)


def dd_add(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    s, e = two_sum(a[0], b[0])
    return s, (a[1] + b[1]) + e


def dd_value(a: tuple[float, float]) -> float:
    return a[0] + a[1] if math.isfinite(a[0]) else a[0]


def ieee_divide(a: float, b: float) -> float:
    with np.errstate(all="ignore"):
        return float(np.float64(a) / np.float64(b))


def dd_div(a: tuple[float, float], d: tuple[float, float]) -> float:
    q = ieee_divide(a[0], d[0])
    p = q * d[0]
    pe = fma(q, d[0], -p) if math.isfinite(p) else 0.0
    r = (((a[0] - p) - pe) + a[1]) - q * d[1]
    c = ieee_divide(r, d[0])
    return q + c if math.isfinite(c) else q


def magnitude(x: float, y: float) -> tuple[float, float]:
    hi, lo = two_sum(x, -y)
    if not math.isfinite(hi):
        lo = 0.0
    return abs(hi), (-lo if hi < 0 else lo)


def weigh(mag: tuple[float, float], w: float) -> tuple[float, float]:
    hi = mag[0] * w
    return hi, (fma(mag[0], w, -hi) + mag[1] * w) if math.isfinite(hi) else 0.0


def warp_reduce(values: list) -> list:
    """``__shfl_down_sync`` tree: lanes past the end keep their own value."""
    values = list(values)
    offset = 16
    while offset:
        values = [
            dd_add(values[i], values[i + offset] if i + offset < 32 else values[i])
            for i in range(32)
        ]
        offset //= 2
    return values


def block_reduce(per_thread: list) -> tuple:
    warps = len(per_thread) // 32
    firsts = [warp_reduce(per_thread[32 * k : 32 * k + 32])[0] for k in range(warps)]
    lanes = firsts + [(0.0, 0.0)] * (32 - warps)
    return warp_reduce(lanes)[0]


def accumulate(acc: tuple[float, float], term: tuple[float, float], compensated: bool):
    """A thread adds one term: TwoSum-compensated for float64, a plain float64 sum otherwise."""
    if compensated:
        high, error = two_sum(acc[0], term[0])
        return high, acc[1] + (error + term[1])
    return acc[0] + term[0], acc[1]


def model_sum(
    terms: list, part: Partition, compensated: bool, finish_threads: int
) -> tuple[float, float]:
    """One row of double-word terms summed as the kernels do: each thread takes the
    partition's elements in order, blocks reduce along the shuffle tree, and a finish
    block of ``finish_threads`` adds the chunks' sums."""
    partials = []
    for chunk in range(part.chunks):
        per_thread = []
        for thread in range(part.threads):
            acc = (0.0, 0.0)
            for e in part.elements(chunk, thread):
                acc = accumulate(acc, terms[e], compensated)
            per_thread.append(acc)
        partials.append(block_reduce(per_thread))
    if part.chunks == 1:
        return partials[0]
    per_thread = []
    for thread in range(finish_threads):
        acc = (0.0, 0.0)
        for c in range(thread, part.chunks, finish_threads):
            acc = dd_add(acc, partials[c])
        per_thread.append(acc)
    return block_reduce(per_thread)


def ulps(value: float, exact: Fraction, dtype: str) -> float:
    spacing = float(np.spacing(np.abs(np.asarray(float(exact), dtype=dtype))))
    return abs(Fraction(value) - exact) / Fraction(spacing)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_modelled_mean_is_correctly_rounded_against_fractions(dtype: str) -> None:
    rng = np.random.default_rng(7)
    n = 9001
    scales = 2.0 ** rng.integers(-40, 40, n)
    x = (rng.standard_normal(n) * scales).astype(dtype)
    y = (rng.standard_normal(n) * scales).astype(dtype)
    w = rng.uniform(0.0, 3.0, n).astype(dtype)
    x64, y64, w64 = x.astype(float), y.astype(float), w.astype(float)
    compensated = dtype == "float64"
    if compensated:
        terms = [weigh(magnitude(a, b), c) for a, b, c in zip(x64, y64, w64, strict=True)]
    else:  # float32: the difference in float64, weighted by one rounded product
        terms = [(abs(a - b) * c, 0.0) for a, b, c in zip(x64, y64, w64, strict=True)]
    weights = [(c, 0.0) for c in w64]
    part = partition(1, n, np.dtype(dtype).itemsize)
    assert part.chunks > 1 and n % part.lanes  # several chunks and a partial last vector
    total = model_sum(terms, part, compensated, FINISH_THREADS)
    weight_total = model_sum(weights, part, compensated, FINISH_THREADS)
    mean = dd_div(total, weight_total)
    exact_sum = sum(
        Fraction(c) * abs(Fraction(a) - Fraction(b)) for a, b, c in zip(x64, y64, w64, strict=True)
    )
    exact = exact_sum / sum(Fraction(c) for c in w64)
    result = float(np.asarray(mean, dtype=dtype))
    bound = 0.5 if dtype == "float32" else 1.0
    assert ulps(result, exact, dtype) <= bound
    assert ulps(float(np.asarray(dd_value(total), dtype=dtype)), exact_sum, dtype) <= bound


def test_modelled_double_words_keep_cancelling_float64_terms_exact() -> None:
    terms = [(1e16, 0.0), (1.0, 0.0), (-1e16, 0.0), (1.0, 0.0)] * 3000
    part = partition(1, len(terms), 8)
    assert part.chunks > 1
    total = model_sum(terms, part, True, FINISH_THREADS)
    assert dd_value(total) == 6000.0  # a plain float64 sum loses every 1.0


def test_modelled_non_finite_terms_propagate() -> None:
    inf, nan = math.inf, math.nan

    def total(terms: list) -> float:
        return dd_value(model_sum(terms, partition(1, len(terms), 8), True, FINISH_THREADS))

    assert math.isnan(total([magnitude(inf, inf), (1.0, 0.0)]))
    assert total([magnitude(inf, 0.0), (1.0, 0.0)] * 5000) == inf
    assert math.isnan(dd_div((0.0, 0.0), (0.0, 0.0)))  # empty mean
    assert math.isnan(total([magnitude(nan, 1.0)]))


def dd_hypot(re: tuple[float, float], im: tuple[float, float]) -> tuple[float, float]:
    ar, ai = abs(re[0]), abs(im[0])
    if math.isinf(ar) or math.isinf(ai):
        return math.inf, 0.0
    if math.isnan(ar) or math.isnan(ai):
        return ar + ai, 0.0
    big = max(ar, ai)
    if big == 0.0:
        return 0.0, 0.0
    e = math.frexp(big)[1] - 1
    rh, rl, ih, il = (math.ldexp(v, -e) for v in (re[0], re[1], im[0], im[1]))
    p1 = rh * rh
    e1 = fma(rh, rh, -p1)
    p2 = ih * ih
    e2 = fma(ih, ih, -p2)
    s_hi, s_lo = two_sum(p1, p2)
    lo = ((s_lo + e1) + e2) + 2.0 * (rh * rl + ih * il)
    root = math.sqrt(s_hi)
    residual = fma(-root, root, s_hi) + lo
    return scalbn(root, e), scalbn(residual / (2.0 * root), e)


def scalbn(value: float, exponent: int) -> float:
    """CUDA's scalbn: overflows to inf where Python's ldexp raises."""
    try:
        return math.ldexp(value, exponent)
    except OverflowError:
        return math.copysign(math.inf, value)


def exact_modulus_error(value: tuple[float, float], re: Fraction, im: Fraction) -> Fraction:
    square = re * re + im * im
    approx = Fraction(value[0]) + Fraction(value[1])
    # |approx - sqrt(square)| = |approx^2 - square| / (approx + sqrt(square)) <= ... / approx
    return abs(approx * approx - square) / (2 * approx * approx)


def test_double_word_modulus_is_accurate_far_beyond_float64() -> None:
    rng = np.random.default_rng(11)
    for _ in range(300):
        a, b, c, d = rng.standard_normal(4) * 2.0 ** rng.integers(-600, 600, 4)
        re, im = two_sum(a, -b), two_sum(c, -d)
        value = dd_hypot(re, im)
        relative = exact_modulus_error(value, Fraction(a) - Fraction(b), Fraction(c) - Fraction(d))
        assert relative < Fraction(1, 2**100)
    assert dd_hypot((3.0, 0.0), (4.0, 0.0)) == (5.0, 0.0)
    assert dd_hypot((math.inf, 0.0), (math.nan, 0.0))[0] == math.inf
    assert math.isnan(dd_hypot((math.nan, 0.0), (1.0, 0.0))[0])
    huge = dd_hypot((1.5e308, 0.0), (1.5e308, 0.0))
    assert huge[0] == math.inf  # the true modulus overflows, as hypot's does


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numba_cuda_kernels_sum_in_the_modelled_order(dtype: str) -> None:
    """The numba-cuda backend's double words are the model's, bit for bit."""
    cuda = pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")
    if not (os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" or cuda.is_available()):
        pytest.skip("no CUDA device and NUMBA_ENABLE_CUDASIM=1 is not set")
    from l1backends._backends.numba_cuda import _backend, backend
    from l1backends.semantics import make_plan

    rng = np.random.default_rng(5)
    n = 1500
    x = (rng.standard_normal(n) * 2.0 ** rng.integers(-30, 30, n)).astype(dtype)
    y = rng.standard_normal(n).astype(dtype)
    w = rng.uniform(0.0, 3.0, n).astype(dtype)
    plan = make_plan((n,), dtype, (n,), dtype, "sum", (n,), dtype)
    words = [
        float(part.copy_to_host()[()])
        for part in backend.partials(plan, *(cuda.to_device(a) for a in (x, y, w)))
    ]
    compensated = dtype == "float64"
    x64, y64, w64 = x.astype(float), y.astype(float), w.astype(float)
    if compensated:
        terms = [weigh(magnitude(a, b), c) for a, b, c in zip(x64, y64, w64, strict=True)]
    else:
        terms = [(abs(a - b) * c, 0.0) for a, b, c in zip(x64, y64, w64, strict=True)]
    part = partition(1, n, np.dtype(dtype).itemsize, _backend._MAX_THREADS)
    assert part.chunks > 1
    finish = _backend._FINISH_THREADS
    expected = [
        *model_sum(terms, part, compensated, finish),
        *model_sum([(c, 0.0) for c in w64], part, compensated, finish),
    ]
    assert words == expected


def _numba_device():
    """numba-cuda's device functions, callable from Python under the simulator."""
    pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")
    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        pytest.skip("device functions run from the host only under the simulator")
    from l1backends._backends.numba_cuda import _device

    return _device


def test_numba_double_word_modulus_is_accurate_far_beyond_float64() -> None:
    """numba-cuda's complex128 modulus (the kernel's own code) within 2**-100 of the truth."""
    device = _numba_device()
    rng = np.random.default_rng(13)
    for _ in range(300):
        a, b, c, d = rng.standard_normal(4) * 2.0 ** rng.integers(-600, 600, 4)
        re, im = two_sum(a, -b), two_sum(c, -d)
        value = device.dd_hypot(*re, *im)
        relative = exact_modulus_error(value, Fraction(a) - Fraction(b), Fraction(c) - Fraction(d))
        assert relative < Fraction(1, 2**100)
    assert device.dd_hypot(3.0, 0.0, 4.0, 0.0) == (5.0, 0.0)
    assert device.dd_hypot(math.inf, 0.0, math.nan, 0.0)[0] == math.inf
    assert math.isnan(device.dd_hypot(math.nan, 0.0, 1.0, 0.0)[0])
    assert device.dd_hypot(1.5e308, 0.0, 1.5e308, 0.0)[0] == math.inf


def test_complex128_loss_is_within_one_ulp_where_rounded_differences_lose_bits() -> None:
    """Differences that float64 cannot hold exactly, summed: each modulus is a double word
    within 2**-100 (of the TwoSum-exact difference), the sums are compensated and rounded
    once, so the result is within 1 ulp (the declared bound is 2)."""
    _numba_device()
    from numba import cuda

    import l1backends as l1
    from l1backends.conformance.reference import distance_in_ulps, exact_loss
    from l1backends.semantics import make_plan

    rng = np.random.default_rng(17)
    n = 600
    x = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    y = (rng.standard_normal(n) + 1j * rng.standard_normal(n)) * 2.0 ** rng.integers(-60, -20, n)
    rounded = [
        Fraction((a - b).real) != Fraction(a.real) - Fraction(b.real)
        for a, b in zip(x, y, strict=True)
    ]
    assert sum(rounded) > n // 2  # most differences are rounded in float64
    for reduction in ("sum", "mean"):
        plan = make_plan((n,), "complex128", (n,), "complex128", reduction)
        (exact,) = exact_loss(plan, x, y, None)
        got = l1.l1_loss(cuda.to_device(x), cuda.to_device(y), reduction).copy_to_host()[()]
        assert distance_in_ulps(float(got), exact, "float64") <= 1.0
