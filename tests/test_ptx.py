"""Compile-only checks of the numba-cuda kernels: PTX for compute capabilities 7.0, 8.0 and 9.0.

``numba.cuda.compile_ptx`` needs NVVM but no GPU; it is unavailable under the CUDA
simulator, so the kernels are compiled by ``_numba_ptx.py`` in a subprocess whose
environment has ``NUMBA_ENABLE_CUDASIM`` removed (once per capability and test
session).  Every case is checked for local memory, shuffles and uncontracted
exact-error products; the dense kernels' main loops for 128-bit loads and stores
and no division; and, with ``ptxas -v`` for sm_80 and sm_90, for spills,
registers and the bytes of 128-bit loads each SM keeps in flight.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _cuda_checks import (
    DIVISION,
    LOCAL,
    SHUFFLE,
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

pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")

CCS = ((7, 0), (8, 0), (9, 0))
#: The architectures whose ptxas reports are asserted.
ARCHS = ("sm_80", "sm_90")
SCRIPT = Path(__file__).with_name("_numba_ptx.py")
HOT = [
    f"dense {what} {dtype}"
    for what in ("mean", "loss_and_grad")
    for dtype in ("float16", "float32")
]
#: Bytes of 128-bit loads one SM must keep in flight (the issue's bar; Little's law needs ~18 KiB).
MIN_IN_FLIGHT = 32 * 1024


_COMPILED: dict[tuple[int, int], list[dict]] = {}


def _compile(cc: tuple[int, int], folder: Path) -> list[dict]:
    """Every case for sm_80 and sm_90, a core set for sm_70; once per test session."""
    if cc not in _COMPILED:
        env = {key: value for key, value in os.environ.items() if key != "NUMBA_ENABLE_CUDASIM"}
        command = [sys.executable, str(SCRIPT), str(cc[0]), str(cc[1]), str(folder)]
        if cc >= (8, 0):
            command.append("--all")
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
        if result.returncode and "NVVM" in result.stderr and "not found" in result.stderr.lower():
            pytest.skip(f"NVVM is not installed: {result.stderr.strip().splitlines()[-1]}")
        assert result.returncode == 0, result.stderr[-4000:]
        cases = json.loads(result.stdout.strip().splitlines()[-1])
        for case in cases:
            case["text"] = Path(case["ptx"]).read_text()
            (case["body"],) = entries(case["text"]).values()
        _COMPILED[cc] = cases
    return _COMPILED[cc]


@pytest.fixture(scope="module", params=CCS, ids=lambda cc: f"sm_{cc[0]}{cc[1]}")
def compiled(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """(capability, its compiled cases with their PTX text)."""
    cc = request.param
    return cc, _compile(cc, tmp_path_factory.mktemp(f"ptx{cc[0]}{cc[1]}"))


def test_no_local_memory_and_shuffles_only_where_asked(compiled) -> None:
    cc, cases = compiled
    assert len(cases) >= 6
    for case in cases:
        lines = case["body"].splitlines()
        assert count(LOCAL, case["text"].splitlines()) == 0, (cc, case["label"], "local memory")
        op = Op(case["op"])
        sums = case["kernel"] == "finish_pass" or op & (Op.LOSS | Op.WEIGHT_SUM | Op.GRAD_SUM)
        shuffles = count(SHUFFLE, lines)
        assert (shuffles > 0) == (case["shuffle"] and bool(sums)), (cc, case["label"], shuffles)


def test_absent_operands_are_one_pointer_parameter_each(compiled) -> None:
    """The launcher passes None as one null pointer: the kernel must take exactly that."""
    cc, cases = compiled
    assert any(case["absent"] for case in cases)
    for case in cases:
        header = case["text"].split(".entry", 1)[1].split(")", 1)[0]
        assert header.count(".param") == case["parameters"], (cc, case["label"])


def test_dense_main_loops_move_128_bits_and_never_divide(compiled) -> None:
    cc, cases = compiled
    for case in cases:
        if case["kernel"] != "dense_pass":
            continue
        loop = main_loop(case["body"])
        op = Op(case["op"])
        streams = (
            1
            if op & Op.WEIGHT_SUM
            else 2 + bool(op & Op.WEIGHT) + bool(op & Op.G_ARRAY and op & Op.ELEMENTWISE)
        )
        assert count(WIDE_LOAD, loop) == streams, (cc, case["label"], loop)
        stores = bool(op & Op.GRAD) + bool(op & Op.NONE_OUT)
        assert count(WIDE_STORE, loop) == stores, (cc, case["label"], loop)
        assert count(DIVISION, loop) == 0, (
            cc,
            case["label"],
            [ln for ln in loop if DIVISION.search(ln)],
        )


def test_exact_products_are_never_contracted_into_fmas(compiled) -> None:
    cc, cases = compiled
    protected = 0
    for case in cases:
        assert contractible_exact_products(case["body"]) == [], (cc, case["label"])
        if case["finish"] in ("MEAN_BY_COUNT", "MEAN_BY_WEIGHT") or "complex128" in case["label"]:
            # the double-word division (and hypot) take their product errors from mul.rn.f64
            assert "mul.rn.f64" in case["body"], (cc, case["label"])
            protected += 1
    assert protected >= 2


@pytest.fixture(scope="module", params=ARCHS)
def resources(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Every case as ptxas assembles it for the architecture (sm_80 and sm_90)."""
    arch = request.param
    if ptxas_path() is None:
        pytest.skip("ptxas is not installed (nvidia-cuda-nvcc-cu12, in the cuda extra)")
    cc = (int(arch[3]), int(arch[4]))
    found = {}
    for case in _compile(cc, tmp_path_factory.mktemp(f"ptx{arch}")):
        (report,) = ptxas_report(case["text"], arch).values()
        loads = count(WIDE_LOAD, main_loop(case["body"]))
        found[case["label"]] = Assembled(report, loads, case["kernel"] == "dense_pass")
    assert all(label in found for label in HOT)
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
