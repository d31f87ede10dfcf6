"""What a CUDA pass computes, and how its work is cut: shared by numba-cuda and CuPy.

Pure Python, no CUDA import: the same codes and the same partition drive both
backends' kernels, and they are unit-tested without a GPU.

Partition
---------
A pass reduces ``rows`` independent rows of ``count`` elements (an elementwise
pass is one row that sums nothing).  Each row is read as *vectors* of
``lanes = 16 // itemsize`` elements (one 128-bit load each when the row is dense
and aligned); vectors are dealt to ``chunks`` blocks of ``threads`` threads,
``iters`` vectors per thread: thread ``t`` of chunk ``c`` takes vectors
``c * threads * iters + t + k * threads`` for ``k = 0 .. iters - 1``, lanes in
order, and adds them to its own float64 sums in that order.  Blocks reduce their
threads' sums along one fixed tree; a second pass adds a row's chunk sums in a
fixed order.  Everything here depends on ``rows``, ``count`` and the compute
dtype's item size alone: never on pointer alignment, strides or the device.  So
the dense (128-bit) and the strided kernels of either backend add the same terms
in the same order, and the partial sums that Dask combines are the same bits for
contiguous, strided and misaligned views of the same data, on every GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag

from ..semantics import Finish, GradScale, Plan
from ._iteration import MAX_GROUP_DIMS, group_limit_reason

__all__ = [
    "FINISH_THREADS",
    "MAX_CHUNKS",
    "MAX_GRID",
    "MIN_ITERS",
    "THREADS_PER_BLOCK",
    "WARP_SIZE",
    "Op",
    "Partition",
    "cuda_constants",
    "group_dims",
    "lanes_of",
    "limit_reason",
    "partition",
    "sum_back_axes",
]

THREADS_PER_BLOCK = 256
WARP_SIZE = 32
# Finish passes (chunk sums to row results) use one block of this many threads per row.
FINISH_THREADS = THREADS_PER_BLOCK
# Each thread streams at least this many vectors before a row is cut into more chunks.
MIN_ITERS = 4
# A row is cut into at most this many chunks.  At n = 2**28 float32 elements that is
# 16384 blocks of 16 vectors per thread: over 15 waves of the 1056 blocks an H100 can
# hold at once (132 SMs x 8), so the last, partial wave costs under 7 %.
MAX_CHUNKS = 16384
# Blocks launched at most; a grid-stride loop over work items covers the rest (this
# changes no bits: each work item is summed by one block, in the same order).
MAX_GRID = 1 << 24
_VECTOR_BYTES = 16


class Op(IntFlag):
    """What one pass computes; kernels receive these bits as compile-time constants.

    The CUDA C++ source of the CuPy backend gets them, with :class:`Finish` and
    :class:`GradScale`, from :func:`cuda_constants`.
    """

    LOSS = 1  #: accumulate Σ w·|d| per row (and Σ w when weighted)
    GRAD = 2  #: write the gradient of each element
    NONE_OUT = 4  #: write the elementwise loss w·|d|
    WEIGHT = 8  #: a weight operand is read
    ELEMENTWISE = 16  #: rows are elements: grad_output is read per element, nothing is summed
    WEIGHT_SUM = 32  #: accumulate Σ w only (input and target are not read)
    GRAD_SUM = 64  #: accumulate the gradient itself (an input broadcast along the row)
    G_ARRAY = 128  #: grad_output is an array (else one number for every row)


def lanes_of(itemsize: int) -> int:
    """Elements per 128-bit vector for ``itemsize``-byte elements (1 for 16-byte complex)."""
    return max(1, _VECTOR_BYTES // itemsize)


@dataclass(frozen=True)
class Partition:
    """How a pass's rows are cut into blocks, threads and vectors.

    Attributes
    ----------
    rows, count : int
        Rows, and elements per row.
    lanes : int
        Elements per vector.
    threads : int
        Threads per block (a multiple of the warp size).
    iters : int
        Vectors each thread takes per chunk.
    chunks : int
        Blocks per row; their partial sums are added by a finish pass when > 1.
    """

    rows: int
    count: int
    lanes: int
    threads: int
    iters: int
    chunks: int

    @property
    def vectors(self) -> int:
        """Vectors per row (the last one may be partial)."""
        return -(-self.count // self.lanes)

    @property
    def items(self) -> int:
        """Work items (row, chunk), one block each."""
        return self.rows * self.chunks

    @property
    def blocks(self) -> int:
        """Blocks to launch (a grid-stride loop covers items beyond :data:`MAX_GRID`)."""
        return max(1, min(self.items, MAX_GRID))

    def elements(self, chunk: int, thread: int) -> list[int]:
        """The elements of one row that ``thread`` of ``chunk`` adds, in its order."""
        first = chunk * self.threads * self.iters + thread
        order = []
        for k in range(self.iters):
            v = first + k * self.threads
            order += [e for e in range(v * self.lanes, (v + 1) * self.lanes) if e < self.count]
        return order


def partition(
    rows: int, count: int, itemsize: int, max_threads: int = THREADS_PER_BLOCK
) -> Partition:
    """Cut ``rows`` rows of ``count`` elements of ``itemsize`` bytes into blocks.

    Parameters
    ----------
    rows, count : int
        Rows, and elements per row.
    itemsize : int
        Bytes per element of the compute dtype.
    max_threads : int
        Threads per block for long rows (the CUDA simulator uses a warp).

    Returns
    -------
    Partition
        Short rows get fewer threads (down to a warp) so that each thread still
        takes :data:`MIN_ITERS` vectors; long rows are cut into up to
        :data:`MAX_CHUNKS` chunks, all full but the last.
    """
    lanes = lanes_of(itemsize)
    threads = WARP_SIZE
    while threads < max_threads and threads * lanes * MIN_ITERS < count:
        threads *= 2
    vectors = -(-count // lanes)
    chunks = min(MAX_CHUNKS, max(1, -(-vectors // (threads * MIN_ITERS))))
    iters = max(1, -(-vectors // (chunks * threads)))
    chunks = max(1, -(-vectors // (threads * iters)))
    return Partition(rows, count, lanes, threads, iters, chunks)


def cuda_constants() -> str:
    """``#define`` lines for the CUDA C++ source, generated from the Python enums.

    Returns
    -------
    str
        ``L1_OP_*`` (from :class:`Op`), ``L1_FINISH_*`` (from
        :class:`~l1backends.semantics.Finish`) and ``L1_SCALE_*`` (from
        :class:`~l1backends.semantics.GradScale`), one per line.
    """
    lines = []
    enums: tuple[tuple[str, type[IntEnum] | type[IntFlag]], ...] = (
        ("OP", Op),
        ("FINISH", Finish),
        ("SCALE", GradScale),
    )
    for prefix, enum in enums:
        for member in enum:
            name = member.name
            assert name is not None
            lines.append(f"#define L1_{prefix}_{name} {int(member)}")
    return "\n".join(lines) + "\n"


def sum_back_axes(plan: Plan) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The (kept, reduced) axes of the pass that sums a broadcast input's gradient back."""
    summed = plan.input_broadcast_axes
    kept = tuple(axis for axis in range(len(plan.shape)) if axis not in summed)
    return kept, summed


def limit_reason(plan: Plan) -> str | None:
    """Why the CUDA kernels cannot walk ``plan`` (too many dimensions in a group), or None.

    Every pass a call may need is checked: the loss's (the elementwise one walks all
    axes as one group) and the one that sums a broadcast input's gradient back.
    """
    axes = tuple(range(len(plan.shape)))
    groups = [((), axes) if plan.elementwise else (plan.kept_axes, plan.reduced_axes)]
    if plan.input_broadcast:
        groups.append(sum_back_axes(plan))
    for kept, reduced in groups:
        reason = group_limit_reason(plan.shape, kept, reduced)
        if reason is not None:
            return reason
    return None


def group_dims(dims: int) -> int:
    """The dimensions a kernel walks for a group of ``dims``: 1, 2, 4 or 8 (fewer variants)."""
    padded = 1
    while padded < dims:
        padded *= 2
    if padded > MAX_GROUP_DIMS:
        raise ValueError(f"a group of {dims} dimensions is over the {MAX_GROUP_DIMS} walked")
    return padded
