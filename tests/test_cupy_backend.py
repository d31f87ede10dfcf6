"""The CuPy backend without a GPU: probe, host-side planning, and the kernels' numerics.

Nothing here launches a kernel.  The host logic (launch planning, specialization
choice, the by-value ``Geometry`` argument) is pure Python and tested directly.
The kernels' arithmetic is checked through a line-by-line Python model of the CUDA
code (same thread, warp and block structure, same operation order) against exact
``fractions.Fraction`` references; the conformance suite runs the real kernels
wherever a device exists.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

from l1backends._backends import _cuda_launch as launch_config
from l1backends._backends.cupy import _plan, _source, probe
from l1backends._backends.cupy._plan import (
    GEOMETRY_DTYPE,
    Operand,
    elementwise_launch,
    full_strides,
    reduction_launch,
    scale_flags,
)
from l1backends._backends.cupy._source import (
    FLAG_DIVISOR_ARRAY,
    FLAG_G_ARRAY,
    FLAG_MEAN,
    FLAG_WEIGHT,
    FLAG_WRITE_GRAD,
    FLAG_WRITE_LOSS,
    OP_GRADSUM,
    OP_LOSS,
    OP_WSUM,
    name_expressions,
)

# ----- probe and laziness --------------------------------------------------------------------


def test_probe_reports_the_real_reason_or_none() -> None:
    reason = probe()
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
    except ImportError as error:
        assert reason == f"ImportError: {error}"
    except Exception as error:
        assert reason == f"{type(error).__name__}: {error}"
    else:
        assert (reason is None) == (count > 0)


def test_probe_without_cupy_gives_the_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)
    reason = probe()
    assert reason is not None and re.match(r"(ModuleNotFound|Import)Error: .*cupy", reason)


def test_importing_l1backends_and_the_backend_package_imports_no_cupy() -> None:
    code = (
        "import sys, l1backends; from l1backends._backends.cupy import probe; "
        "assert callable(probe); print('cupy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_backends_lists_cupy_unavailable_with_the_driver_error_when_no_device() -> None:
    pytest.importorskip("cupy", reason="CuPy is not installed")
    import l1backends

    row = next(b for b in l1backends.backends() if b.name == "cupy")
    if row.available:
        pytest.skip("a CUDA device is present; the conformance suite covers it")
    assert row.reason == probe()
    assert re.match(r"\w+(Error|Exception)?: ", row.reason), row.reason


# ----- source and geometry agree ---------------------------------------------------------------


def test_python_constants_match_the_cuda_defines() -> None:
    defines = dict(re.findall(r"#define (L1_\w+) (\d+)", _source.SOURCE))
    assert int(defines["L1_MAXD"]) == _source.MAX_DIMS
    assert int(defines["L1_NOPS"]) == len(_source.OPERANDS)
    for name in ("X", "Y", "W", "G", "D", "GX"):
        assert int(defines[f"L1_{name}"]) == _source.OPERANDS.index(name.lower())
    for name in ("LOSS", "GRADSUM", "WSUM"):
        assert int(defines[f"L1_OP_{name}"]) == getattr(_source, f"OP_{name}")
    for name in ("WEIGHT", "G_ARRAY", "WRITE_GRAD", "WRITE_LOSS", "MEAN", "DIVISOR_ARRAY", "RAW"):
        assert int(defines[f"L1_{name}"]) == getattr(_source, f"FLAG_{name}")


def test_geometry_dtype_mirrors_the_struct_layout() -> None:
    body = re.search(r"struct Geometry \{(.*?)\};", _source.SOURCE, re.S).group(1)
    fields = re.findall(r"(long long|double) ([^;]+);", body)
    names = []
    for _, declared in fields:
        names += [re.sub(r"\[.*", "", part.strip()) for part in declared.split(",")]
    assert names == list(GEOMETRY_DTYPE.names)
    d, ops = _source.MAX_DIMS, len(_source.OPERANDS)
    assert GEOMETRY_DTYPE.itemsize == 8 * (8 + 2 * d + 2 * ops * d + 2)
    assert GEOMETRY_DTYPE.isalignedstruct or all(
        GEOMETRY_DTYPE.fields[name][1] % 8 == 0 for name in GEOMETRY_DTYPE.names
    )


# ----- strides, axes and launches --------------------------------------------------------------


def test_full_strides_zero_broadcast_axes_and_keep_negative_steps() -> None:
    assert full_strides((3, 4), (16, 4), 4, (3, 4)) == (4, 1)
    assert full_strides((4,), (-8,), 8, (2, 3, 4)) == (0, 0, -1)
    assert full_strides((3, 1), (4, 4), 4, (3, 5)) == (1, 0)
    assert full_strides((1, 1), (4, 4), 4, (1, 1)) == (0, 0)
    assert full_strides((3,), (6,), 4, (3,)) is None  # not a whole number of elements


class _DeviceArrayStub:
    """What ``_operand`` reads of a ``cupy.ndarray``; ``copy`` lands on a fresh, aligned block."""

    def __init__(self, shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int, ptr: int):
        self.shape, self.strides, self.itemsize = shape, strides, itemsize
        self.data = type("Pointer", (), {"ptr": ptr})()

    def copy(self) -> _DeviceArrayStub:
        strides = tuple(step * self.itemsize for step in _plan.c_strides(self.shape))
        return _DeviceArrayStub(self.shape, strides, self.itemsize, 1 << 20)


def test_misaligned_or_fractionally_strided_operands_are_copied_before_typed_loads() -> None:
    pytest.importorskip("cupy", reason="CuPy is not installed")
    from l1backends._backends.cupy._backend import _operand

    aligned = _DeviceArrayStub((4,), (16,), 16, 4096)
    array, operand = _operand(aligned, (4,))
    assert array is aligned and operand == Operand((1,), 4096, 16)
    # float64[1:].view(complex128): 8-byte aligned, but the kernels load 16-byte double2
    shifted = _DeviceArrayStub((4,), (16,), 16, 4104)
    array, operand = _operand(shifted, (4,))
    assert array is not shifted and operand == Operand((1,), 1 << 20, 16)
    fractional = _DeviceArrayStub((3,), (6,), 4, 4096)
    array, operand = _operand(fractional, (2, 3))
    assert operand == Operand((0, 1), 1 << 20, 4)


def _dense(shape, pointer=256, itemsize=4, weight_itemsize=4):
    c = _plan.c_strides(shape)
    zeros = (0,) * len(shape)
    return [
        Operand(c, pointer, itemsize),
        Operand(c, pointer, itemsize),
        Operand(c, pointer, weight_itemsize),
        Operand(zeros, 0, weight_itemsize),
        Operand(zeros, 0, 8),
        Operand(c, pointer, itemsize),
    ]


def test_contiguous_full_reduction_uses_128_bit_loads_and_two_stages() -> None:
    n = 10_000_000
    launch = reduction_launch(OP_LOSS, "float32", (n,), (), (0,), _dense((n,)), FLAG_WRITE_LOSS)
    expected = launch_config.flat_launch(n, 4)
    assert launch.kernel == "l1_rows<F32, 4>"
    assert launch.grid == (expected.blocks, 1) and launch.block == (expected.threads,)
    assert launch.finish == "l1_finish<F32>" and launch.finish_grid == (1,)
    assert launch.partials == 4 * expected.blocks
    geometry = launch.geometry[0]
    assert (geometry["rows"], geometry["count"], geometry["chunks"]) == (1, n, expected.blocks)
    assert (geometry["nk"], geometry["nr"]) == (0, 1)
    assert list(geometry["rstride"][:, 0]) == [1, 1, 1, 0, 0, 1]


def test_misaligned_or_strided_inputs_pick_scalar_or_strided_specializations() -> None:
    shape = (64, 33)
    misaligned = _dense(shape, pointer=260)
    launch = reduction_launch(OP_LOSS, "float32", shape, (), (0, 1), misaligned, FLAG_WRITE_LOSS)
    assert launch.kernel == "l1_rows<F32, 1>"
    transposed = _dense(shape)
    transposed[0] = Operand((1, 64), 256, 4)
    launch = reduction_launch(OP_LOSS, "float32", shape, (), (0, 1), transposed, FLAG_WRITE_LOSS)
    assert launch.kernel == "l1_rows<F32, 0>"
    geometry = launch.geometry[0]
    assert geometry["nr"] == 2 and list(geometry["rshape"][:2]) == [64, 33]
    assert list(geometry["rstride"][0][:2]) == [1, 64]


def test_many_rows_get_one_block_each_and_finish_in_place() -> None:
    shape = (5000, 64)
    launch = reduction_launch(OP_LOSS, "float64", shape, (0,), (1,), _dense(shape, itemsize=8), 8)
    assert launch.kernel == "l1_rows<F64, 2>" and launch.finish is None
    config = launch_config.segmented_launch(5000, 64)
    assert launch.grid == (1, config.blocks) and launch.block == (config.threads,)
    assert launch.geometry[0]["kstride"][0][0] == 64


def test_few_long_rows_are_split_into_chunks_and_finished_per_row() -> None:
    shape = (2, 1_000_000)
    launch = reduction_launch(OP_LOSS, "float32", shape, (0,), (1,), _dense(shape), 8)
    _, chunks = launch_config.chunked_launch(2, 1_000_000, 4)
    assert chunks > 1 and launch.grid == (chunks, 2) and launch.finish_grid == (2,)
    assert launch.partials == 4 * 2 * chunks


def test_gradient_only_pass_writes_no_partials() -> None:
    n = 1 << 20
    flags = FLAG_WRITE_GRAD | FLAG_MEAN
    launch = reduction_launch(OP_LOSS, "float32", (n,), (), (0,), _dense((n,)), flags)
    assert launch.finish is None and launch.partials == 0


def test_weight_sum_pass_follows_the_weight_layout() -> None:
    shape = (8, 16)
    operands = _dense(shape)
    operands[0] = Operand((1, 8), 256, 4)  # x transposed: irrelevant, only w is read
    launch = reduction_launch(OP_WSUM, "float32", shape, (0,), (1,), operands, FLAG_WEIGHT)
    assert launch.kernel == "l1_rows<F32, 4>"


def test_gradient_sum_back_is_strided_with_rows_over_the_input() -> None:
    shape = (4, 3, 5)
    operands = _dense(shape)
    operands[0] = Operand((0, 1, 0), 256, 4)  # input of shape (3, 1)
    launch = reduction_launch(OP_GRADSUM, "complex64", shape, (1,), (0, 2), operands, 0)
    geometry = launch.geometry[0]
    assert launch.kernel == "l1_rows<C64, 0>"
    assert (geometry["rows"], geometry["count"]) == (3, 20)


def test_elementwise_launches() -> None:
    shape = (7, 9)
    launch = elementwise_launch("float16", shape, _dense(shape, itemsize=2), FLAG_WRITE_LOSS)
    assert launch.kernel == "l1_elementwise<F16, 8>" and launch.geometry[0]["rows"] == 63
    strided = _dense(shape, itemsize=2)
    strided[1] = Operand((1, 7), 256, 2)  # transposed target
    launch = elementwise_launch("float16", shape, strided, FLAG_WRITE_LOSS)
    assert launch.kernel == "l1_elementwise<F16, 0>"
    assert launch.geometry[0]["nk"] == 2
    scalar = elementwise_launch("complex128", (), _dense((), itemsize=16), FLAG_WRITE_LOSS)
    assert scalar.kernel == "l1_elementwise<C128, 1>" and scalar.geometry[0]["rows"] == 1


def test_scale_flags() -> None:
    assert scale_flags("sum", False, False) == 0
    assert scale_flags("mean", False, True) == FLAG_MEAN | FLAG_G_ARRAY
    assert scale_flags("mean", True, False) == FLAG_MEAN | FLAG_WEIGHT | FLAG_DIVISOR_ARRAY
    assert scale_flags("none", True, True) == FLAG_WEIGHT | FLAG_G_ARRAY


def test_every_planned_specialization_is_compiled_by_the_nvrtc_test() -> None:
    compiled = set(name_expressions())
    planned = set()
    for dtype in _source.TAGS:
        itemsize = np.dtype(dtype).itemsize
        for pointer in (256, 256 + itemsize):
            for shape, kept, reduced in (((4096,), (), (0,)), ((16, 64), (0,), (1,))):
                operands = _dense(shape, pointer, itemsize, itemsize)
                for op in (OP_LOSS, OP_WSUM, OP_GRADSUM):
                    launch = reduction_launch(op, dtype, shape, kept, reduced, operands, 8)
                    planned |= {launch.kernel, launch.finish} - {None}
                planned.add(elementwise_launch(dtype, shape, operands, 8).kernel)
    assert planned <= compiled
    assert len(compiled) == 33


def test_chunked_launch_is_size_driven_and_bounded() -> None:
    config, chunks = launch_config.chunked_launch(1, 10**8, 4)
    assert chunks == launch_config.MAX_BLOCKS and config.blocks == 1
    config, chunks = launch_config.chunked_launch(10**6, 3)
    assert chunks == 1 and config.blocks == launch_config.MAX_BLOCKS and config.threads == 32
    config, chunks = launch_config.chunked_launch(8, 10**7)
    assert chunks == launch_config.MAX_BLOCKS // 8 and config.blocks == 8


# ----- a Python model of the kernels' arithmetic -------------------------------------------------


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


def model_sum(terms: list, lanes: int, threads: int, chunks: int) -> tuple[float, float]:
    """``l1_rows`` over one row of double-word terms (contiguous, ``lanes`` per load), finished."""
    count = len(terms)
    vectors = count // lanes
    partials = []
    for chunk in range(chunks):
        per_thread = []
        for t in range(threads):
            acc = (0.0, 0.0)
            for v in range(chunk * threads + t, vectors, chunks * threads):
                for lane in range(lanes):
                    acc = dd_add(acc, terms[v * lanes + lane])
            for r in range(vectors * lanes + chunk * threads + t, count, chunks * threads):
                acc = dd_add(acc, terms[r])
            per_thread.append(acc)
        partials.append(block_reduce(per_thread))
    if chunks == 1:
        return partials[0]
    finish_threads = launch_config.THREADS_PER_BLOCK
    per_thread = []
    for t in range(finish_threads):
        acc = (0.0, 0.0)
        for c in range(t, chunks, finish_threads):
            acc = dd_add(acc, partials[c])
        per_thread.append(acc)
    return block_reduce(per_thread)


def ulps(value: float, exact: Fraction, dtype: str) -> float:
    spacing = float(np.spacing(np.abs(np.asarray(float(exact), dtype=dtype))))
    return abs(Fraction(value) - exact) / Fraction(spacing)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_modelled_mean_is_correctly_rounded_against_fractions(dtype: str) -> None:
    rng = np.random.default_rng(7)
    n = 3001
    scales = 2.0 ** rng.integers(-40, 40, n)
    x = (rng.standard_normal(n) * scales).astype(dtype)
    y = (rng.standard_normal(n) * scales).astype(dtype)
    w = rng.uniform(0.0, 3.0, n).astype(dtype)
    x64, y64, w64 = x.astype(float), y.astype(float), w.astype(float)
    terms = [weigh(magnitude(a, b), c) for a, b, c in zip(x64, y64, w64, strict=True)]
    weights = [(c, 0.0) for c in w64]
    lanes = _source.TAGS[dtype][1]
    # force several chunks and the tail path: 64 threads, 3 chunks
    total = model_sum(terms, lanes, 64, 3)
    weight_total = model_sum(weights, lanes, 64, 3)
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
    terms = [(1e16, 0.0), (1.0, 0.0), (-1e16, 0.0), (1.0, 0.0)] * 300
    total = model_sum(terms, 2, 32, 2)
    assert dd_value(total) == 600.0  # a plain float64 sum loses every 1.0


def test_modelled_non_finite_terms_propagate() -> None:
    inf, nan = math.inf, math.nan
    assert math.isnan(dd_value(model_sum([magnitude(inf, inf), (1.0, 0.0)], 1, 32, 1)))
    assert dd_value(model_sum([magnitude(inf, 0.0), (1.0, 0.0)] * 5, 2, 32, 2)) == inf
    assert math.isnan(dd_div((0.0, 0.0), (0.0, 0.0)))  # empty mean
    assert math.isnan(dd_value(model_sum([magnitude(nan, 1.0)], 1, 32, 1)))


# ----- float16 conversions on raw bits, as in the kernel source --------------------------------


def half_to_double(bits: int) -> float:
    exponent, mantissa = (bits >> 10) & 0x1F, bits & 0x3FF
    if exponent == 0x1F:
        magnitude_ = math.nan if mantissa else math.inf
    elif exponent == 0:
        magnitude_ = mantissa * 5.9604644775390625e-08
    else:
        magnitude_ = math.ldexp(1024 + mantissa, exponent - 25)
    return -magnitude_ if bits & 0x8000 else magnitude_


def double_to_half(v: float) -> int:
    sign = 0x8000 if math.copysign(1.0, v) < 0 else 0
    a = abs(v)
    if math.isnan(a):
        return sign | 0x7E00
    if a >= 65520.0:
        return sign | 0x7C00
    if a < 6.103515625e-05:
        return sign | int(np.rint(a * 16777216.0))
    e = math.frexp(a)[1] - 1
    m = int(np.rint(math.ldexp(a, 10 - e)))
    return sign | (((e + 15) << 10) + (m - 1024))


def test_half_to_double_is_exact_for_every_bit_pattern() -> None:
    bits = np.arange(1 << 16, dtype=np.uint16)
    reference = bits.view(np.float16).astype(np.float64)
    ours = np.array([half_to_double(int(b)) for b in bits])
    np.testing.assert_array_equal(ours, reference)


def test_double_to_half_rounds_once_to_nearest_even() -> None:
    rng = np.random.default_rng(3)
    halves = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    finite = halves[np.isfinite(halves)].astype(np.float64)
    neighbours = np.nextafter(finite, np.inf)
    values = np.concatenate(
        [
            finite,
            neighbours,
            np.nextafter(finite, -np.inf),
            rng.standard_normal(2000) * 2.0 ** rng.integers(-30, 18, 2000),
            [65504.0, 65519.99, 65520.0, 1e300, -0.0, 2.0**-25, 2.0**-25 * 1.0000001, np.nan],
        ]
    )
    sorted_halves = np.unique(finite)
    ties = (sorted_halves[:-1] + sorted_halves[1:]) / 2  # exact in float64
    values = np.concatenate([values, ties])
    ours = np.array([double_to_half(float(v)) for v in values], dtype=np.uint16)
    with np.errstate(over="ignore"):
        reference = values.astype(np.float16).view(np.uint16)
    same = (ours == reference) | (np.isnan(values) & ((ours & 0x7FFF) > 0x7C00))
    assert same.all(), values[~same][:5]


# ----- float32 conversions on raw bits (CuPy's -ftz=true must not flush subnormals) --------------


def float_to_double(bits: int) -> float:
    exponent, mantissa = (bits >> 23) & 0xFF, bits & 0x7FFFFF
    if exponent == 0xFF:
        magnitude_ = math.nan if mantissa else math.inf
    elif exponent == 0:
        magnitude_ = mantissa * 1.401298464324817e-45
    else:
        double_bits = ((exponent - 127 + 1023) << 52) | (mantissa << 29)
        magnitude_ = float(np.uint64(double_bits).view(np.float64))
    return -magnitude_ if bits >> 31 else magnitude_


def double_to_float(v: float) -> int:
    sign = 0x80000000 if math.copysign(1.0, v) < 0 else 0
    a = abs(v)
    if math.isnan(a):
        return sign | 0x7FC00000
    if a < 1.1754943508222875e-38:
        return sign | int(np.rint(a * 7.1362384635297994e44))
    bits = int(np.float64(a).view(np.uint64))
    rounded = (bits + 0x0FFFFFFF + ((bits >> 29) & 1)) >> 29
    single = rounded - (896 << 23)
    return sign | min(single, 0x7F800000)


def _float32_edge_bits() -> np.ndarray:
    rng = np.random.default_rng(5)
    around = np.concatenate([np.arange(0, 4096), np.arange(0x7FF000, 0x801000)])  # subnormal edge
    specials = [0x7F7FFFFF, 0x7F800000, 0x7F800001, 0x7FC00000, 0x00000001, 0x3F800000]
    random = rng.integers(0, 1 << 31, 20000)
    bits = np.concatenate([around, specials, random]).astype(np.uint32)
    return np.concatenate([bits, bits | np.uint32(0x80000000)])


def test_float_to_double_is_exact_subnormals_included() -> None:
    bits = _float32_edge_bits()
    with np.errstate(invalid="ignore"):
        reference = bits.view(np.float32).astype(np.float64)
    ours = np.array([float_to_double(int(b)) for b in bits])
    np.testing.assert_array_equal(ours, reference)
    assert float_to_double(1) == 2.0**-149  # the smallest subnormal, which FTZ would zero


def test_double_to_float_rounds_once_to_nearest_even_subnormals_included() -> None:
    singles = np.abs(_float32_edge_bits().view(np.float32))
    finite = np.unique(singles[np.isfinite(singles)].astype(np.float64))
    ties = (finite[:-1] + finite[1:]) / 2  # exact in float64
    largest = float(np.finfo(np.float32).max)
    values = np.concatenate(
        [
            finite,
            np.nextafter(finite, np.inf),
            np.nextafter(finite, -np.inf),
            ties,
            np.nextafter(ties, np.inf),
            np.nextafter(ties, -np.inf),
            [largest + 2.0**103, np.nextafter(largest + 2.0**103, 0), 1e300, 2.0**-150, 2.0**-151],
        ]
    )
    values = np.concatenate([values, -values, [np.nan, np.inf, -np.inf, -0.0]])
    ours = np.array([double_to_float(float(v)) for v in values], dtype=np.uint64).astype(np.uint32)
    with np.errstate(over="ignore"):
        reference = values.astype(np.float32).view(np.uint32)
    same = (ours == reference) | (np.isnan(values) & ((ours & 0x7FFFFFFF) > 0x7F800000))
    assert same.all(), values[~same][:5]
    assert double_to_float(2.0**-149) == 1  # a subnormal result, which FTZ would write as 0


# ----- the complex modulus as a double word -----------------------------------------------------


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
