"""The iteration space of a call, shared by every kernel backend (pure Python, no array import).

Kernels see each operand as a 1-D buffer, an element offset and element strides
along the axes of the loss shape (0 where the operand is broadcast).  This module
builds that description once, with one rule for every backend:

* axes of size 1 are dropped, and a space with a zero-size axis is empty;
* the *kept* axes (one output row per multi-index) stay in the output's C order;
* the *reduced* axes (the elements summed into a row) are sorted by the lead
  operand's strides, largest first, so that the innermost loop walks memory;
* neighbouring axes that every operand walks as one are merged, so that common
  layouts collapse to a single dimension.

Dimension limit: the numba-cpu kernels walk any number of dimensions; the CUDA
kernels walk at most :data:`MAX_GROUP_DIMS` per group, and decline (``can_run``)
a plan with more axes of size > 1 in a group than that, counted on the plan alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "MAX_GROUP_DIMS",
    "Space",
    "broadcast_strides",
    "build_space",
    "c_strides",
    "element_strides",
    "group_limit_reason",
    "reduced_axis_strides",
]

#: The most dimensions per group (kept, reduced) a CUDA kernel walks.
MAX_GROUP_DIMS = 8


def c_strides(shape: Sequence[int], unit: int = 1) -> tuple[int, ...]:
    """Element strides of a C-contiguous ``shape``, times ``unit`` (2 for complex parts)."""
    strides = []
    step = unit
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


def element_strides(byte_strides: Sequence[int], itemsize: int) -> tuple[int, ...] | None:
    """Byte strides in elements of ``itemsize`` bytes, or None when one is not a multiple."""
    if any(stride % itemsize for stride in byte_strides):
        return None
    return tuple(stride // itemsize for stride in byte_strides)


def broadcast_strides(
    shape: Sequence[int], strides: Sequence[int], full_shape: Sequence[int]
) -> tuple[int, ...]:
    """Strides of an array of ``shape`` broadcast to ``full_shape`` (0 where it repeats).

    Raises
    ------
    ValueError
        If ``shape`` does not broadcast to ``full_shape``.
    """
    lead = len(full_shape) - len(shape)
    if lead < 0:
        raise ValueError(f"shape {tuple(shape)} does not broadcast to {tuple(full_shape)}")
    result = [0] * lead
    for n, stride, full in zip(shape, strides, full_shape[lead:], strict=True):
        if n not in (1, full):
            raise ValueError(f"shape {tuple(shape)} does not broadcast to {tuple(full_shape)}")
        result.append(0 if n == 1 else stride)
    return tuple(result)


def reduced_axis_strides(
    ndim: int, kept_axes: Sequence[int], strides: Sequence[int]
) -> tuple[int, ...]:
    """Strides along all ``ndim`` axes of an array laid out over ``kept_axes`` only.

    For an array of the reduced shape (a loss, ``grad_output``, Σw): its strides go on
    the kept axes, 0 on the reduced ones, which it does not vary along.
    """
    full = [0] * ndim
    for axis, stride in zip(kept_axes, strides, strict=True):
        full[axis] = stride
    return tuple(full)


@dataclass(frozen=True)
class Space:
    """A merged iteration space and each operand's strides in it.

    Attributes
    ----------
    kept_shape, reduced_shape : tuple of int
        Sizes of the merged kept and reduced dimensions, outermost first.
    kept_strides, reduced_strides : tuple of tuple of int
        Per operand, its stride along each kept (reduced) dimension.
    """

    kept_shape: tuple[int, ...]
    reduced_shape: tuple[int, ...]
    kept_strides: tuple[tuple[int, ...], ...]
    reduced_strides: tuple[tuple[int, ...], ...]

    @property
    def rows(self) -> int:
        """Number of output rows (product of the kept sizes)."""
        return math.prod(self.kept_shape)

    @property
    def count(self) -> int:
        """Elements per row (product of the reduced sizes)."""
        return math.prod(self.reduced_shape)

    def unit_inner(self, operand: int) -> bool:
        """Whether ``operand`` walks the innermost reduced dimension with stride 1 or 0."""
        return not self.reduced_shape or self.reduced_strides[operand][-1] in (0, 1)

    def padded(self, dims: int, reduced_dims: int | None = None) -> Space:
        """The same space with both groups padded in front to ``dims`` dimensions.

        ``reduced_dims``, when given, pads the reduced group to that many instead.

        Raises
        ------
        ValueError
            If a group has more dimensions than it is padded to.
        """
        limits = (("kept", self.kept_shape, dims), ("reduced", self.reduced_shape, reduced_dims))
        for name, shape, limit in limits:
            limit = dims if limit is None else limit
            if len(shape) > limit:
                raise ValueError(f"the {name} group needs {len(shape)} dimensions, over {limit}")

        def pad(sizes: tuple[int, ...], strides: tuple[tuple[int, ...], ...], to: int):
            extra = to - len(sizes)
            return (1,) * extra + sizes, tuple((0,) * extra + s for s in strides)

        kept_shape, kept_strides = pad(self.kept_shape, self.kept_strides, dims)
        reduced_dims = dims if reduced_dims is None else reduced_dims
        reduced_shape, reduced_strides = pad(self.reduced_shape, self.reduced_strides, reduced_dims)
        return Space(kept_shape, reduced_shape, kept_strides, reduced_strides)


def _merge(
    axes: Sequence[int], shape: Sequence[int], strides: Sequence[Sequence[int]]
) -> tuple[tuple[int, ...], tuple[tuple[int, ...], ...]]:
    """Merge neighbouring ``axes`` (outer first) that every operand walks as one."""
    sizes: list[int] = []
    merged: list[list[int]] = [[] for _ in strides]
    for axis in axes:
        n = shape[axis]
        if n == 1:
            continue
        if sizes and all(m[-1] == op[axis] * n for m, op in zip(merged, strides, strict=True)):
            sizes[-1] *= n
            for m, op in zip(merged, strides, strict=True):
                m[-1] = op[axis]
            continue
        sizes.append(n)
        for m, op in zip(merged, strides, strict=True):
            m.append(op[axis])
    if 0 in sizes:  # an empty group: one dimension of size 0
        return (0,), tuple((0,) for _ in strides)
    return tuple(sizes), tuple(tuple(m) for m in merged)


def build_space(
    shape: Sequence[int],
    kept_axes: Sequence[int],
    reduced_axes: Sequence[int],
    strides: Sequence[Sequence[int]],
    lead: int = 0,
) -> Space:
    """Build the merged iteration space of ``shape`` for operands with these strides.

    Parameters
    ----------
    shape : sequence of int
        The full (broadcast) shape.
    kept_axes : sequence of int
        Axes enumerated by rows, in the output's C order.
    reduced_axes : sequence of int
        Axes walked within a row; reordered by the ``lead`` operand's strides, the
        largest outermost (ties keep their order), before merging.
    strides : sequence of sequence of int
        Per operand, its strides along every axis of ``shape`` (0 where broadcast).
    lead : int
        The operand whose memory order decides the reduced axes' order.

    Returns
    -------
    Space
        The merged space; its enumeration visits each element of ``shape`` once.
    """
    ordered = sorted(reduced_axes, key=lambda axis: -abs(strides[lead][axis]))
    kept_shape, kept = _merge(kept_axes, shape, strides)
    reduced_shape, reduced = _merge(ordered, shape, strides)
    return Space(kept_shape, reduced_shape, kept, reduced)


def group_limit_reason(
    shape: Sequence[int], kept_axes: Sequence[int], reduced_axes: Sequence[int]
) -> str | None:
    """Why a CUDA kernel cannot walk this plan's groups (over :data:`MAX_GROUP_DIMS`), or None."""
    for name, axes in (("kept", kept_axes), ("reduced", reduced_axes)):
        dims = sum(1 for axis in axes if shape[axis] != 1)
        if dims > MAX_GROUP_DIMS:
            return (
                f"the {name} axes have {dims} dimensions of size > 1, over the "
                f"{MAX_GROUP_DIMS} the CUDA kernels walk; reshape or reduce fewer axes at once"
            )
    return None
