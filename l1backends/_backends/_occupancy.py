"""A model of how many blocks a GPU holds at once, and what bandwidth that predicts.

Pure Python, no CUDA import.  The inputs are what ``ptxas -v`` reports for a
kernel (registers per thread, static shared memory per block) and the launch's
block size; the rules are those of NVIDIA's occupancy calculator.  The tests use
it to turn ptxas reports into properties (blocks and bytes in flight per SM), and
the README's predictions come from it; measurements on a GPU replace them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ARCHITECTURES",
    "H100",
    "Architecture",
    "MemoryModel",
    "modelled_fraction",
    "resident_blocks",
    "tail_cost",
]


@dataclass(frozen=True)
class Architecture:
    """Per-SM limits of one compute capability (from NVIDIA's occupancy calculator).

    Attributes
    ----------
    name : str
        Such as ``"sm_90"``.
    registers : int
        32-bit registers per SM.
    register_unit : int
        Registers are given to warps in multiples of this.
    max_threads, max_blocks : int
        Resident threads and blocks per SM.
    shared_bytes : int
        Shared memory per SM that blocks can use.
    shared_reserved : int
        Shared memory the system reserves per resident block.
    """

    name: str
    registers: int = 65536
    register_unit: int = 256
    max_threads: int = 2048
    max_blocks: int = 32
    shared_bytes: int = 167936
    shared_reserved: int = 1024


ARCHITECTURES = {
    "sm_80": Architecture("sm_80", shared_bytes=167936),  # A100: 164 KiB
    "sm_90": Architecture("sm_90", shared_bytes=233472),  # H100: 228 KiB
}


def resident_blocks(arch: Architecture, registers: int, shared_bytes: int, threads: int) -> int:
    """Blocks of ``threads`` threads one SM holds at once.

    Parameters
    ----------
    arch : Architecture
        The SM's limits.
    registers : int
        Registers per thread (ptxas's "Used N registers").
    shared_bytes : int
        Static shared memory per block (ptxas's "N bytes smem").
    threads : int
        Threads per block.

    Returns
    -------
    int
        The least of the register, shared-memory, thread and block limits.
    """
    warps = -(-threads // 32)
    per_warp = -(-registers * 32 // arch.register_unit) * arch.register_unit
    by_registers = (arch.registers // per_warp) // warps if per_warp else arch.max_blocks
    per_block = shared_bytes + arch.shared_reserved
    by_shared = arch.shared_bytes // per_block
    by_threads = arch.max_threads // threads
    return min(by_registers, by_shared, by_threads, arch.max_blocks)


@dataclass(frozen=True)
class MemoryModel:
    """Little's law for one GPU's memory system.

    Attributes
    ----------
    sms : int
        Streaming multiprocessors.
    peak_bytes_per_s : float
        Peak DRAM bandwidth.
    reachable_bytes_per_s : float
        What a copy kernel reaches (the targets are fractions of this).
    latency_s : float
        Loaded DRAM latency.
    clock_hz : float
        SM clock under load.
    """

    sms: int
    peak_bytes_per_s: float
    reachable_bytes_per_s: float
    latency_s: float
    clock_hz: float

    def issue_bound(self, instructions: int, bytes_per_vector: int) -> float:
        """Bytes per second a loop can read if issuing its instructions is what limits it.

        Each SM issues one warp instruction per cycle on each of its 4 schedulers;
        ``instructions`` is the loop's count per thread and vector it reads.
        """
        return self.sms * 4 * self.clock_hz * 32 / instructions * bytes_per_vector

    @property
    def bytes_in_flight_needed(self) -> float:
        """Bytes each SM must have in flight to sustain the peak."""
        return self.peak_bytes_per_s * self.latency_s / self.sms


#: The H100 SXM of the issue: 132 SMs, 3.35 TB/s peak, about 3.0 TB/s reachable, 700 ns,
#: and a 1.755 GHz clock under load.
H100 = MemoryModel(
    sms=132, peak_bytes_per_s=3.35e12, reachable_bytes_per_s=3.0e12, latency_s=700e-9,
    clock_hz=1.755e9,
)  # fmt: skip


def tail_cost(blocks: int, resident_per_sm: int, sms: int) -> float:
    """Fraction of a pass's time lost to its last, partly filled wave of blocks.

    With ``blocks`` equal blocks and ``resident_per_sm * sms`` slots, the pass
    takes ``ceil(waves)`` waves where ``waves`` would do.
    """
    slots = resident_per_sm * sms
    waves = blocks / slots
    full = -(-blocks // slots)
    return 1.0 - waves / full


def modelled_fraction(
    model: MemoryModel,
    bytes_in_flight_per_sm: float,
    tail: float,
    instructions: int = 0,
    bytes_per_vector: int = 0,
) -> float:
    """Predicted bandwidth as a fraction of the reachable one.

    Little's law caps the bandwidth at ``in flight x SMs / latency``; the memory
    system caps it at the reachable bandwidth; a loop of ``instructions`` per vector
    of ``bytes_per_vector`` caps it at :meth:`MemoryModel.issue_bound` (when given);
    the last wave's idle SMs cost ``tail``.
    """
    bound = min(model.reachable_bytes_per_s, bytes_in_flight_per_sm * model.sms / model.latency_s)
    if instructions:
        bound = min(bound, model.issue_bound(instructions, bytes_per_vector))
    return bound * (1.0 - tail) / model.reachable_bytes_per_s
