"""Strided iteration spaces for the CUDA kernels (pure Python, no CUDA import).

The kernels see every operand as a 1-D buffer starting at its lowest address,
an element offset and element strides over a fixed 4 + 4 dimensional space:
four "kept" dimensions (one output row per multi-index) and four "reduced"
dimensions (the elements summed into a row).  This module builds that space
for any layout (negative, zero and non-unit strides) without copying, merging
dimensions that every operand walks contiguously so that common layouts
collapse to one dimension.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["GROUP_DIMS", "Space", "broadcast_strides", "build_space", "c_strides"]

GROUP_DIMS = 4


def c_strides(shape: Sequence[int]) -> tuple[int, ...]:
    """C-order element strides of ``shape``."""
    strides = []
    step = 1
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


def broadcast_strides(
    shape: Sequence[int], strides: Sequence[int], full_shape: Sequence[int]
) -> tuple[int, ...]:
    """Element strides of an array of ``shape`` broadcast to ``full_shape`` (0 where repeated)."""
    lead = len(full_shape) - len(shape)
    result = [0] * lead
    for n, stride, full in zip(shape, strides, full_shape[lead:], strict=True):
        result.append(0 if n == 1 and full != 1 else stride)
    return tuple(result)


@dataclass(frozen=True)
class Space:
    """A 4 + 4 dimensional iteration space and each operand's strides in it.

    Attributes
    ----------
    kept_shape, reduced_shape : tuple of int
        Four sizes each (padded with 1).
    kept, reduced : tuple of tuple of int
        Per operand, four element strides each.
    rows, count : int
        Products of the kept and reduced sizes.
    """

    kept_shape: tuple[int, ...]
    reduced_shape: tuple[int, ...]
    kept: tuple[tuple[int, ...], ...]
    reduced: tuple[tuple[int, ...], ...]

    @property
    def rows(self) -> int:
        return math.prod(self.kept_shape)

    @property
    def count(self) -> int:
        return math.prod(self.reduced_shape)

    def flat(self, operand: int) -> bool:
        """Whether the reduced space is one dimension walked with unit stride by ``operand``."""
        sizes = [n for n in self.reduced_shape if n != 1]
        if len(sizes) > 1 or self.rows != 1:
            return False
        strides = [
            s for n, s in zip(self.reduced_shape, self.reduced[operand], strict=True) if n != 1
        ]
        return not strides or strides[0] == 1


def _coalesce(
    dims: list[int], shape: Sequence[int], strides: Sequence[Sequence[int]]
) -> tuple[tuple[int, ...], tuple[tuple[int, ...], ...]]:
    """Merge neighbouring dimensions that every operand walks as one; pad to GROUP_DIMS."""
    sizes: list[int] = []
    merged: list[list[int]] = [[] for _ in strides]
    for dim in dims:
        n = shape[dim]
        if n == 1:
            continue
        if sizes and all(merged[k][-1] == op[dim] * n for k, op in enumerate(strides)):
            sizes[-1] *= n
            for k, op in enumerate(strides):
                merged[k][-1] = op[dim]
            continue
        sizes.append(n)
        for k, op in enumerate(strides):
            merged[k].append(op[dim])
    if 0 in sizes:
        sizes = [0]
        merged = [[0] for _ in strides]
    if len(sizes) > GROUP_DIMS:
        raise ValueError(
            f"this layout needs {len(sizes)} separate dimensions in one group; the "
            f"numba-cuda kernels walk at most {GROUP_DIMS}: make the arrays contiguous first"
        )
    pad = GROUP_DIMS - len(sizes)
    return (1,) * pad + tuple(sizes), tuple((0,) * pad + tuple(op) for op in merged)


def build_space(
    shape: Sequence[int],
    kept_axes: Sequence[int],
    reduced_axes: Sequence[int],
    strides: Sequence[Sequence[int]],
    lead: int = 0,
) -> Space:
    """Build the iteration space of ``shape`` for operands with these element strides.

    Parameters
    ----------
    shape : sequence of int
        The full (broadcast) shape.
    kept_axes : sequence of int
        Axes enumerated by rows, in the order of the output (C order).
    reduced_axes : sequence of int
        Axes summed within a row; reordered so that operand ``lead`` walks them
        with the smallest stride innermost.
    strides : sequence of sequence of int
        Per operand, element strides over ``shape`` (0 on broadcast axes).
    lead : int
        The operand whose memory order decides the reduced axes' order.

    Returns
    -------
    Space
        The padded, coalesced space.
    """
    ordered = sorted(reduced_axes, key=lambda ax: -abs(strides[lead][ax]))
    kept_shape, kept = _coalesce(list(kept_axes), shape, strides)
    reduced_shape, reduced = _coalesce(ordered, shape, strides)
    return Space(kept_shape, reduced_shape, kept, reduced)
