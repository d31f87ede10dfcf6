"""Every CUDA C++ specialization of the CuPy backend compiles with NVRTC, without a driver.

cuda-python's NVRTC bindings (``cuda.bindings.nvrtc``, with the cu12 NVRTC of the
``nvidia-cuda-nvrtc-cu12`` wheel) compile the backend's source for sm_70, sm_80 and
sm_90: to PTX (which CuPy's RawModule would JIT) and to SASS with ptxas's verbose
report, to show that the 128-bit vector paths really use 128-bit loads and that no
kernel spills to local memory.  The source includes no header, so no include path
is needed.
"""

from __future__ import annotations

import re

import pytest

from l1backends.backends.cupy._source import SOURCE, TAGS, name_expressions

nvrtc = pytest.importorskip("cuda.bindings.nvrtc", reason="cuda-python (cuda-bindings) is absent")

ARCHITECTURES = ("70", "80", "90")
STORAGE_BYTES = {"F16": 2, "F32": 4, "F64": 8, "C64": 8, "C128": 16}


def _compile(target: str) -> tuple[str, bytes, dict[str, str]]:
    """Compile every specialization for ``target``; return the log, the output and lowered names."""
    names = name_expressions()
    error, program = nvrtc.nvrtcCreateProgram(SOURCE.encode(), b"l1backends_cupy.cu", 0, [], [])
    assert error == nvrtc.nvrtcResult.NVRTC_SUCCESS, error
    try:
        for name in names:
            (error,) = nvrtc.nvrtcAddNameExpression(program, name.encode())
            assert error == nvrtc.nvrtcResult.NVRTC_SUCCESS, (name, error)
        options = [f"--gpu-architecture={target}".encode(), b"-std=c++17"]
        if target.startswith("sm_"):
            options.append(b"-Xptxas=-v")
        (result,) = nvrtc.nvrtcCompileProgram(program, len(options), options)
        error, size = nvrtc.nvrtcGetProgramLogSize(program)
        log = b" " * size
        nvrtc.nvrtcGetProgramLog(program, log)
        log_text = log.decode(errors="replace")
        assert result == nvrtc.nvrtcResult.NVRTC_SUCCESS, f"NVRTC failed for {target}:\n{log_text}"
        lowered = {}
        for name in names:
            error, mangled = nvrtc.nvrtcGetLoweredName(program, name.encode())
            assert error == nvrtc.nvrtcResult.NVRTC_SUCCESS, (name, error)
            lowered[name] = mangled.decode()
        if target.startswith("sm_"):
            error, size = nvrtc.nvrtcGetCUBINSize(program)
            output = b" " * size
            nvrtc.nvrtcGetCUBIN(program, output)
        else:
            error, size = nvrtc.nvrtcGetPTXSize(program)
            output = b" " * size
            nvrtc.nvrtcGetPTX(program, output)
        return log_text, output, lowered
    finally:
        nvrtc.nvrtcDestroyProgram(program)


def _entries(ptx: str) -> dict[str, str]:
    """The body of every kernel entry in ``ptx``, by mangled name."""
    bodies = {}
    for match in re.finditer(r"\.entry (\S+)\(", ptx):
        end = ptx.find("\n}", match.end())
        bodies[match.group(1)] = ptx[match.end() : end]
    return bodies


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_specialization_compiles_to_ptx_with_vector_loads(arch: str) -> None:
    _, ptx_bytes, lowered = _compile(f"compute_{arch}")
    ptx = ptx_bytes.rstrip(b"\0 ").decode()
    bodies = _entries(ptx)
    assert set(lowered.values()) <= set(bodies), "a specialization has no kernel entry"
    assert ".local" not in ptx, "a kernel uses local memory"
    for dtype, (tag, lanes) in TAGS.items():
        for kernel in ("l1_rows", "l1_elementwise"):
            for vec in sorted({1, lanes}):
                body = bodies[lowered[f"{kernel}<{tag}, {vec}>"]]
                if vec * STORAGE_BYTES[tag] == 16:
                    # a contiguous 16-byte pack must be one 128-bit, read-only-cached load
                    assert re.search(r"ld\.global\.nc\.v(4\.u32|2\.(u64|f64))", body), (
                        f"{kernel}<{tag}, {vec}> ({dtype}) has no 128-bit load"
                    )


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_no_kernel_spills_registers(arch: str) -> None:
    log, cubin, lowered = _compile(f"sm_{arch}")
    assert cubin.startswith(b"\x7fELF"), "NVRTC produced no CUBIN"
    reports = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    assert len(reports) >= len(lowered), log
    assert all(stores == "0" and loads == "0" for stores, loads in reports), log
