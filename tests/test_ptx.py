"""Compile-only checks of the numba-cuda kernels: PTX for compute capabilities 7.0, 8.0 and 9.0.

``numba.cuda.compile_ptx`` needs NVVM and NVRTC but no GPU; it is unavailable
under the CUDA simulator, so the compilation runs in a subprocess whose
environment has ``NUMBA_ENABLE_CUDASIM`` removed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")

CCS = ((7, 0), (8, 0), (9, 0))

_SCRIPT = textwrap.dedent(
    """
    import json, re, sys
    from types import SimpleNamespace
    import numba.cuda.dispatcher as dispatcher
    from numba import cuda
    from numba.cuda import types as t

    # Device functions ask the current device for its compute capability while they are
    # typed; with no driver, answer with the capability being compiled for.
    cc = tuple(json.loads(sys.argv[1]))
    dispatcher.get_current_device = lambda: SimpleNamespace(compute_capability=cc)
    from l1backends._backends.numba_cuda import _kernels as k

    i64, f64 = t.int64, t.float64
    T4 = t.UniTuple(i64, 4)
    words = f64[:, ::1]

    def strided(x, w, out, y=None):
        op = lambda a: (a[::1], i64, T4, T4)
        return (*op(x), *op(y or x), *op(w), *op(f64), *op(f64), *op(out), *op(out),
                T4, T4, i64, i64, i64, i64, f64, words, i64, out[::1], i64, i64, words)

    def contiguous(x, out):
        return (x[::1], x[::1], f64[::1], f64[::1], f64[::1], out[::1], out[::1],
                i64, i64, i64, i64, f64, i64, words, i64, out[::1], words)

    cases = []
    for real in (t.float16, t.float32, t.float64):
        cases.append(("contiguous_pass", real.name, contiguous(real, real)))
        cases.append(("strided_pass", real.name, strided(real, real, real)))
    for cplx, real in ((t.complex64, t.float32), (t.complex128, t.float64)):
        cases.append(("strided_pass", cplx.name, strided(cplx, real, real)))
    cases.append(("strided_pass", "int64", strided(t.int64, t.int32, t.float64)))
    finish = (words, i64, i64, i64, i64, t.float32[::1], i64, i64, words)
    cases.append(("finish_pass", "float32", finish))

    LOCAL = r"(^|\\s)\\.local\\s|ld\\.local|st\\.local"
    report = []
    for shuffle in (True, False):
        kernels = k.make_kernels(shuffle)
        for name, dtype, signature in cases:
            ptx, _ = cuda.compile_ptx(getattr(kernels, name), signature, cc=cc)
            lines = [line.strip() for line in ptx.splitlines()]
            registers = {m.group(1): int(m.group(2)) for line in lines
                         if (m := re.match(r"\\.reg \\.(\\w+)\\s+%\\w+<(\\d+)>;", line))}
            report.append({
                "kernel": name, "dtype": dtype, "shuffle": shuffle,
                "loads": sorted({ln.split()[0] for ln in lines if ln.startswith("ld.global")}),
                "local": [ln for ln in lines if re.search(LOCAL, ln)],
                "shuffles": sum("shfl.sync" in line for line in lines),
                "registers": registers,
            })
    print(json.dumps(report))
    """
)


@pytest.fixture(scope="module", params=CCS, ids=lambda cc: f"sm_{cc[0]}{cc[1]}")
def ptx_report(request: pytest.FixtureRequest) -> tuple[tuple[int, int], list[dict]]:
    env = {key: value for key, value in os.environ.items() if key != "NUMBA_ENABLE_CUDASIM"}
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT, json.dumps(request.param)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    if result.returncode and "NVVM" in result.stderr and "not found" in result.stderr.lower():
        pytest.skip(f"NVVM is not installed: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stderr[-4000:]
    return request.param, json.loads(result.stdout.strip().splitlines()[-1])


def test_every_kernel_compiles_without_local_memory(ptx_report) -> None:
    cc, report = ptx_report
    assert len(report) == 2 * 10  # 10 signatures, two block reductions
    for entry in report:
        assert entry["local"] == [], (
            f"sm_{cc}: {entry['kernel']} {entry['dtype']} uses local memory"
        )


def test_contiguous_path_loads_128_bits(ptx_report) -> None:
    cc, report = ptx_report
    wide = {
        "float16": "ld.global.v4.b32",
        "float32": "ld.global.v4.f32",
        "float64": "ld.global.v2.f64",
    }
    for entry in report:
        if entry["kernel"] == "contiguous_pass":
            assert wide[entry["dtype"]] in entry["loads"], (cc, entry["dtype"], entry["loads"])


def test_shuffle_path_shuffles_and_shared_path_does_not(ptx_report) -> None:
    cc, report = ptx_report
    for entry in report:
        if entry["shuffle"]:
            assert entry["shuffles"] > 0, (cc, entry["kernel"], entry["dtype"])
        else:
            assert entry["shuffles"] == 0, (cc, entry["kernel"], entry["dtype"])
