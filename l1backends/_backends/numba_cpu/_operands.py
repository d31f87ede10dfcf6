"""Host side of the numba-CPU general kernel: operand records, modes and the work layout.

An operand record is ``(address, mode)``: the address of the array's first
element (no copy, whatever its strides or byte order) and the mode that says how
to read or write a value there.  The operands' byte strides along the merged
dimensions of the call's iteration space form one table, a row per operand.  The
caller keeps the arrays alive while a kernel runs on their addresses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._iteration import broadcast_strides, build_space
from ._scalars import MODE_SWAP, ROUND_EXACT, ROUND_F16, ROUND_F32, ROUND_F64, STORAGE

__all__ = [
    "MAX_CHUNKS",
    "MIN_CHUNK",
    "Record",
    "Space",
    "chunking",
    "mode",
    "space_records",
    "splits_rows",
]

# Chunking depends on the element count alone (never on the thread count).
MIN_CHUNK = 1 << 14
MAX_CHUNKS = 64
# Rows at or above which tasks take whole rows (in at most MAX_ROW_BLOCKS blocks) instead
# of splitting each row into chunks.
ROW_BLOCKS_FROM = 64
MAX_ROW_BLOCKS = 256

Record = tuple[int, int]
_ROUNDING = {"float16": ROUND_F16, "float32": ROUND_F32, "float64": ROUND_F64}
_PRECISION = {"float16": 0, "float32": 1, "float64": 2}
_REAL = {"complex64": "float32", "complex128": "float64"}


def chunking(count: int) -> tuple[int, int]:
    """``(nchunks, chunk)`` for ``count`` elements: a function of ``count`` alone."""
    nchunks = max(1, min(MAX_CHUNKS, count // MIN_CHUNK))
    return nchunks, -(-count // nchunks) if count else 1


def splits_rows(rows: int, count: int) -> bool:
    """Whether a launch of ``rows`` rows of ``count`` elements splits each row into chunks."""
    return rows < ROW_BLOCKS_FROM and chunking(count)[0] > 1


def mode(dtype: np.dtype, target: str) -> int:
    """The mode reading ``dtype`` rounded to the real dtype ``target`` (or writing it).

    Integers, and floats wider than ``target``, are rounded to ``target`` on load;
    narrower floats widen exactly.  Non-native byte order is swapped in registers.
    """
    name = dtype.name
    rounding = ROUND_EXACT
    if dtype.kind in "iu" or _PRECISION[_REAL.get(name, name)] > _PRECISION[target]:
        rounding = _ROUNDING[target]
    swapped = 0 if dtype.isnative else MODE_SWAP
    return STORAGE[name] | rounding << 4 | swapped


@dataclass
class Space:
    """The merged iteration space of one kernel launch and its operands' records.

    Attributes
    ----------
    shape : numpy.ndarray
        Kept dimensions, then reduced ones (int64).
    nkept : int
        How many of them are kept (enumerate output rows).
    records : list
        One record per operand, in the order given, None where absent.
    strides : numpy.ndarray
        (operands, dimensions) byte strides (int64), zeros where absent.
    rows, count : int
        Products of the kept and reduced sizes.
    """

    shape: np.ndarray
    nkept: int
    records: list[Record | None]
    strides: np.ndarray
    rows: int
    count: int

    def layout(self) -> tuple[int, int, int, int, int, int]:
        """``(rows, count, nblocks, nchunks, chunk, nkept)``: tasks depend on the sizes alone."""
        if not splits_rows(self.rows, self.count):
            blocks = min(self.rows, MAX_ROW_BLOCKS)
            return self.rows, self.count, blocks, 1, max(self.count, 1), self.nkept
        nchunks, chunk = chunking(self.count)
        return self.rows, self.count, self.rows, nchunks, chunk, self.nkept


def space_records(
    shape: tuple[int, ...],
    kept_axes: tuple[int, ...],
    reduced_axes: tuple[int, ...],
    operands: list[tuple[np.ndarray, int] | None],
    strides: list[tuple[int, ...] | None] | None = None,
    lead: int = 0,
) -> Space:
    """Build the space of ``shape`` and a record for each ``(array, mode)`` operand.

    Parameters
    ----------
    shape : tuple of int
        The full (broadcast) shape the operands are iterated over.
    kept_axes, reduced_axes : tuple of int
        A partition of the axes: rows enumerate ``kept_axes`` in C order.
    operands : list
        ``(array, mode)`` per operand, or None when absent.
    strides : list, optional
        Per operand, byte strides along ``shape`` that replace the array's own
        broadcast strides (for arrays laid out over the kept axes only).
    lead : int
        The operand whose memory order decides the reduced axes' order.
    """
    present = [k for k, operand in enumerate(operands) if operand is not None]
    full = []
    for k in present:
        array = operands[k][0]  # type: ignore[index]  # present operands are tuples
        given = None if strides is None else strides[k]
        full.append(given if given is not None else broadcast_strides(
            array.shape, array.strides, shape
        ))  # fmt: skip
    lead_index = present.index(lead) if lead in present else 0
    space = build_space(shape, kept_axes, reduced_axes, full, lead_index)
    # The kernel walks at least one reduced dimension: a row of one element has size 1.
    inner = space.reduced_shape or (1,)
    dims = space.kept_shape + inner
    records: list[Record | None] = [None] * len(operands)
    table = np.zeros((len(operands), len(dims)), dtype=np.int64)
    for position, k in enumerate(present):
        array, operand_mode = operands[k]  # type: ignore[misc]  # present operands are tuples
        records[k] = (array.__array_interface__["data"][0], operand_mode)
        table[k] = space.kept_strides[position] + (space.reduced_strides[position] or (0,))
    return Space(
        shape=np.array(dims, dtype=np.int64),
        nkept=len(space.kept_shape),
        records=records,
        strides=table,
        rows=math.prod(space.kept_shape),
        count=math.prod(inner),
    )
