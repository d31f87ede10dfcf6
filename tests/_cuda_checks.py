"""Checks of compiled CUDA code shared by the compile-only tests of both GPU backends.

Reading PTX: each kernel entry's body, its loops (a label and the backward branch
to it), the main loop (the innermost loop with a 128-bit global load), and the
exact-error products that must not be contracted into FMAs.  Reading ptxas:
``ptxas -v`` (from the ``nvidia-cuda-nvcc-cu12`` wheel) reports registers, spills
and shared memory per kernel, which :mod:`l1backends._backends._occupancy` turns
into resident blocks and bytes in flight per SM.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from l1backends._backends._cuda_launch import THREADS_PER_BLOCK, partition
from l1backends._backends._occupancy import ARCHITECTURES, H100, resident_blocks, tail_cost

WIDE_LOAD = re.compile(r"\bld\.global(?:\.nc)?\.v(?:4\.[bfu]32|2\.[bfu]64)\b")
WIDE_STORE = re.compile(r"\bst\.global\.v(?:4\.[bfu]32|2\.[bfu]64)\b")
DIVISION = re.compile(r"\b(?:div|rem)\.")
LOCAL = re.compile(r"(^|\s)\.local\s|\bld\.local|\bst\.local")
SHUFFLE = re.compile(r"\bshfl\.sync")
#: Bytes of one 128-bit load.
VECTOR_BYTES = 16
#: Bytes of 128-bit loads one SM must keep in flight (the issue's bar; Little's law needs ~18 KiB).
MIN_IN_FLIGHT = 32 * 1024


def ptxas_path() -> Path | None:
    """ptxas from the ``nvidia-cuda-nvcc-cu12`` wheel, or None when it is not installed."""
    try:
        import nvidia.cuda_nvcc as nvcc
    except ImportError:
        return None
    for root in nvcc.__path__:
        candidate = Path(root) / "bin" / "ptxas"
        if candidate.exists():
            return candidate
    return None


@dataclass(frozen=True)
class Resources:
    """What ptxas reports for one kernel."""

    registers: int
    shared_bytes: int
    spill_stores: int
    spill_loads: int
    stack_bytes: int


def ptxas_report(ptx: str, arch: str) -> dict[str, Resources]:
    """Assemble ``ptx`` for ``arch`` (such as "sm_90") with ``ptxas -v``; resources by kernel."""
    ptxas = ptxas_path()
    assert ptxas is not None, "ptxas is not installed"
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "kernel.ptx"
        source.write_text(ptx)
        run = subprocess.run(
            [str(ptxas), "-v", f"-arch={arch}", str(source), "-o", str(Path(folder) / "k.cubin")],
            capture_output=True,
            text=True,
            check=False,
        )
    assert run.returncode == 0, run.stderr[-4000:]
    report = {}
    for block in re.split(r"Compiling entry function '", run.stderr)[1:]:
        name = block.split("'", 1)[0]
        frame = re.search(
            r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", block
        )
        used = re.search(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?", block)
        assert frame and used, block
        report[name] = Resources(
            registers=int(used.group(1)),
            shared_bytes=int(used.group(2) or 0),
            spill_stores=int(frame.group(2)),
            spill_loads=int(frame.group(3)),
            stack_bytes=int(frame.group(1)),
        )
    return report


def entries(ptx: str) -> dict[str, str]:
    """The body of every kernel entry in ``ptx``, by mangled name."""
    bodies = {}
    for match in re.finditer(r"\.entry (\S+)\(", ptx):
        end = ptx.find("\n}", match.end())
        bodies[match.group(1)] = ptx[match.end() : end]
    return bodies


def loops(body: str) -> list[list[str]]:
    """Every loop of a kernel body: the lines from a label to a backward branch to it."""
    lines = [line.strip() for line in body.splitlines()]
    labels = {line[:-1]: index for index, line in enumerate(lines) if re.fullmatch(r"\$\w+:", line)}
    found = []
    for index, line in enumerate(lines):
        match = re.search(r"\bbra(?:\.uni)?\s+(\$\w+);", line)
        if match and labels.get(match.group(1), index + 1) <= index:
            found.append(lines[labels[match.group(1)] : index + 1])
    return found


def main_loop(body: str) -> list[str]:
    """The innermost (shortest) loop with a 128-bit global load; empty when there is none."""
    candidates = [loop for loop in loops(body) if any(WIDE_LOAD.search(line) for line in loop)]
    return min(candidates, key=len, default=[])


def count(pattern: re.Pattern[str], lines: list[str]) -> int:
    return sum(1 for line in lines if pattern.search(line))


def contractible_exact_products(body: str) -> list[str]:
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


def bytes_in_flight(arch: str, resources: Resources, threads: int, loads: int) -> int:
    """Bytes of 128-bit loads one SM keeps in flight: resident threads x loads per iteration."""
    blocks = resident_blocks(
        ARCHITECTURES[arch], resources.registers, resources.shared_bytes, threads
    )
    return blocks * threads * loads * VECTOR_BYTES


@dataclass(frozen=True)
class Assembled:
    """One kernel as ptxas assembled it: its resources, and its main loop's 128-bit loads."""

    resources: Resources
    loads: int
    dense: bool


def spilling(found: dict[str, Assembled]) -> list[str]:
    """Kernels that spill or use a stack frame."""
    return [
        name
        for name, kernel in found.items()
        if kernel.resources.spill_stores or kernel.resources.spill_loads
        or kernel.resources.stack_bytes
    ]  # fmt: skip


def over_registers(found: dict[str, Assembled], names: list[str], limit: int = 48) -> list[str]:
    """Kernels among ``names`` that use more than ``limit`` registers."""
    return [name for name in names if found[name].resources.registers > limit]


def short_of_loads(arch: str, found: dict[str, Assembled]) -> list[str]:
    """Dense kernels whose SM keeps under 32 KiB of 128-bit loads in flight.

    A pass that streams one operand alone (the weight, for Σw) is held to what Little's
    law asks of an H100 instead (about 18 KiB).
    """
    short = []
    for name, kernel in found.items():
        if kernel.dense:
            in_flight = bytes_in_flight(arch, kernel.resources, THREADS_PER_BLOCK, kernel.loads)
            bar = MIN_IN_FLIGHT if kernel.loads >= 2 else H100.bytes_in_flight_needed
            if in_flight < bar:
                short.append(f"{name}: {in_flight} bytes in flight, {kernel}")
    return short


def slow_tails(arch: str, found: dict[str, Assembled], names: list[str]) -> list[str]:
    """Kernels among ``names`` whose last wave costs over 10 % at n = 2**28 float32 on an H100."""
    blocks = partition(1, 2**28, 4).blocks
    slow = []
    for name in names:
        resources = found[name].resources
        resident = resident_blocks(
            ARCHITECTURES[arch], resources.registers, resources.shared_bytes, THREADS_PER_BLOCK
        )
        if tail_cost(blocks, resident, H100.sms) > 0.10:
            slow.append(f"{name}: {resident} blocks per SM")
    return slow
