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

from l1backends._backends.cupy._source import COMPILE_OPTIONS, SOURCE, TAGS, name_expressions

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
        # what CuPy's RawModule passes: our options, then its own "-ftz=true"
        options = [f"--gpu-architecture={target}".encode()]
        options += [option.encode() for option in (*COMPILE_OPTIONS, "-ftz=true")]
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


def _contractible_exact_products(body: str) -> list[str]:
    """Products ``p = a * b`` whose exact error ``fma(a, b, -p)`` is taken, but which are plain
    ``mul.f64``: PTX lets ptxas contract those into an FMA with a later addition of ``p``,
    which would then count the product's rounding error twice.  They must be ``mul.rn.f64``.
    """
    definitions = {
        match.group(2): (match.group(1), [operand.strip() for operand in match.group(3).split(",")])
        for match in re.finditer(r"^\s*([a-z][\w.]*)\s+(%fd\d+),\s*([^;]+);", body, re.M)
    }
    loose = []
    for result, (opcode, operands) in definitions.items():
        if opcode != "fma.rn.f64" or definitions.get(operands[2], ("",))[0] != "neg.f64":
            continue
        product = definitions[operands[2]][1][0]
        product_opcode, factors = definitions.get(product, ("", []))
        if sorted(factors) == sorted(operands[:2]) and product_opcode != "mul.rn.f64":
            loose.append(f"{product_opcode} {product} = {' * '.join(factors)} (error in {result})")
    return loose


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_specialization_compiles_to_ptx_with_vector_loads(arch: str) -> None:
    _, ptx_bytes, lowered = _compile(f"compute_{arch}")
    ptx = ptx_bytes.rstrip(b"\0 ").decode()
    bodies = _entries(ptx)
    assert set(lowered.values()) <= set(bodies), "a specialization has no kernel entry"
    assert ".local" not in ptx, "a kernel uses local memory"
    # under CuPy's -ftz=true any float32 arithmetic or conversion would flush subnormals
    assert not re.search(r"\.ftz\b", ptx), "a kernel flushes float32 subnormals"
    assert "mul.rn.f64" in ptx, "no product is protected from contraction"
    for name, mangled in lowered.items():
        assert not _contractible_exact_products(bodies[mangled]), (
            name,
            _contractible_exact_products(bodies[mangled]),
        )
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
