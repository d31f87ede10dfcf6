"""Every CUDA C++ specialization of the CuPy backend compiles with NVRTC, without a driver.

cuda-python's NVRTC bindings (``cuda.bindings.nvrtc``, with the cu12 NVRTC of the
``nvidia-cuda-nvrtc-cu12`` wheel) compile the backend's source to PTX for
compute_70, compute_80 and compute_90, with the options CuPy's ``RawModule``
uses (CuPy's own ``-ftz=true`` last), once per architecture and test session.
The PTX is checked for local memory, flushing float32 arithmetic, uncontracted
exact-error products, and the dense kernels' main loops (128-bit loads and stores,
no division); ``ptxas -v`` for sm_80 and sm_90 reports registers, spills and the
bytes of loads each SM keeps in flight.  The source includes no header, so no
include path is needed.
"""

from __future__ import annotations

import re

import pytest
from _cuda_checks import (
    DIVISION,
    LOCAL,
    WIDE_LOAD,
    WIDE_STORE,
    Assembled,
    contractible_exact_products,
    count,
    entries,
    main_loop,
    over_registers,
    ptxas_path,
    ptxas_report,
    short_of_loads,
    slow_tails,
    spilling,
)

from l1backends._backends._cuda_launch import Op
from l1backends._backends.cupy._source import (
    COMPILE_OPTIONS,
    DENSE_TAGS,
    SOURCE,
    TAGS,
    dense_variants,
    name_expressions,
    specialization,
)
from l1backends.semantics import Finish

nvrtc = pytest.importorskip("cuda.bindings.nvrtc", reason="cuda-python (cuda-bindings) is absent")

ARCHITECTURES_COMPILED = ("70", "80", "90")
#: The hot kernels: float16 and float32 mean, and mean's loss_and_grad.
HOT = [
    specialization("l1_dense", dtype, ops, Finish.MEAN_BY_COUNT)
    for dtype in ("float16", "float32")
    for ops in (Op.LOSS, Op.LOSS | Op.GRAD)
]
MIN_IN_FLIGHT = 32 * 1024
#: An f32 or f16 instruction that flushes subnormals (what CuPy's -ftz=true would cause).
FLUSHING = re.compile(r"\.ftz(?:\.\w+)*\.f(?:32|16)\b")
_PTX: dict[str, tuple[str, dict[str, str]]] = {}


def _compile(arch: str) -> tuple[str, dict[str, str]]:
    """PTX of every specialization for ``compute_<arch>`` and the lowered names (cached)."""
    if arch in _PTX:
        return _PTX[arch]
    names = name_expressions()
    error, program = nvrtc.nvrtcCreateProgram(SOURCE.encode(), b"l1backends_cupy.cu", 0, [], [])
    assert error == nvrtc.nvrtcResult.NVRTC_SUCCESS, error
    try:
        for name in names:
            (error,) = nvrtc.nvrtcAddNameExpression(program, name.encode())
            assert error == nvrtc.nvrtcResult.NVRTC_SUCCESS, (name, error)
        # what CuPy's RawModule passes: our options, then its own "-ftz=true"
        options = [f"--gpu-architecture=compute_{arch}".encode()]
        options += [option.encode() for option in (*COMPILE_OPTIONS, "-ftz=true")]
        (result,) = nvrtc.nvrtcCompileProgram(program, len(options), options)
        error, size = nvrtc.nvrtcGetProgramLogSize(program)
        log = b" " * size
        nvrtc.nvrtcGetProgramLog(program, log)
        assert result == nvrtc.nvrtcResult.NVRTC_SUCCESS, log.decode(errors="replace")
        lowered = {}
        for name in names:
            error, mangled = nvrtc.nvrtcGetLoweredName(program, name.encode())
            assert error == nvrtc.nvrtcResult.NVRTC_SUCCESS, (name, error)
            lowered[name] = mangled.decode()
        error, size = nvrtc.nvrtcGetPTXSize(program)
        output = b" " * size
        nvrtc.nvrtcGetPTX(program, output)
    finally:
        nvrtc.nvrtcDestroyProgram(program)
    _PTX[arch] = (output.rstrip(b"\0 ").decode(), lowered)
    return _PTX[arch]


@pytest.fixture(scope="module", params=ARCHITECTURES_COMPILED)
def compiled(request: pytest.FixtureRequest) -> tuple[str, str, dict[str, str]]:
    """(architecture, PTX, each specialization's kernel body)."""
    ptx, lowered = _compile(request.param)
    bodies = entries(ptx)
    assert set(lowered.values()) <= set(bodies), "a specialization has no kernel entry"
    return request.param, ptx, {name: bodies[mangled] for name, mangled in lowered.items()}


def test_every_specialization_compiles_without_local_memory_or_flushing(compiled) -> None:
    arch, ptx, bodies = compiled
    assert len(bodies) == 3 * len(dense_variants()) + 2 * len(TAGS)
    assert count(LOCAL, ptx.splitlines()) == 0, f"a kernel uses local memory for {arch}"
    # under CuPy's -ftz=true, float32 arithmetic or a plain cast would flush subnormals:
    # conversions are inline cvt instructions, which keep them
    assert not FLUSHING.search(ptx), FLUSHING.search(ptx)
    for instruction in ("cvt.f64.f32", "cvt.rn.f32.f64", "cvt.f64.f16", "cvt.rn.f16.f64"):
        assert instruction in ptx, instruction


def test_exact_products_are_never_contracted_into_fmas(compiled) -> None:
    arch, _, bodies = compiled
    for name, body in bodies.items():
        assert contractible_exact_products(body) == [], (arch, name)
        if "l1_finish" in name or "C128" in name or f", {int(Finish.MEAN_BY_COUNT)}>" in name:
            assert "mul.rn.f64" in body, (arch, name)


def test_dense_main_loops_move_128_bits_and_never_divide(compiled) -> None:
    arch, _, bodies = compiled
    for dtype in DENSE_TAGS:
        for ops, finish in dense_variants():
            name = specialization("l1_dense", dtype, ops, finish)
            loop = main_loop(bodies[name])
            elementwise_g = ops & Op.ELEMENTWISE and ops & Op.G_ARRAY
            streams = 1 if ops & Op.WEIGHT_SUM else 2 + bool(ops & Op.WEIGHT) + bool(elementwise_g)
            assert count(WIDE_LOAD, loop) == streams, (arch, name, loop)
            stores = bool(ops & Op.GRAD) + bool(ops & Op.NONE_OUT)
            assert count(WIDE_STORE, loop) == stores, (arch, name)
            assert count(DIVISION, loop) == 0, (arch, name)


@pytest.fixture(scope="module", params=("sm_80", "sm_90"))
def resources(request: pytest.FixtureRequest):
    """Every specialization as ptxas assembles it for the architecture."""
    if ptxas_path() is None:
        pytest.skip("ptxas is not installed (nvidia-cuda-nvcc-cu12, in the cuda extra)")
    arch = request.param
    ptx, lowered = _compile(arch[3:])
    report = ptxas_report(ptx, arch)
    bodies = entries(ptx)
    found = {
        name: Assembled(
            report[mangled], count(WIDE_LOAD, main_loop(bodies[mangled])),
            name.startswith("l1_dense"),
        )
        for name, mangled in lowered.items()
    }  # fmt: skip
    return arch, found


def test_no_kernel_spills(resources) -> None:
    arch, found = resources
    assert spilling(found) == [], arch


def test_hot_float32_and_float16_kernels_fit_in_48_registers(resources) -> None:
    arch, found = resources
    assert over_registers(found, HOT) == [], arch


def test_dense_kernels_keep_32_kib_of_loads_in_flight_per_sm(resources) -> None:
    arch, found = resources
    assert short_of_loads(arch, found) == [], arch


def test_the_last_wave_costs_under_ten_percent_at_two_to_the_28(resources) -> None:
    arch, found = resources
    assert slow_tails(arch, found, HOT) == [], arch
