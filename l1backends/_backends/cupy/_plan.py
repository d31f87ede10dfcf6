"""Host-side planning of the CuPy backend's launches, in pure Python (no CuPy, no GPU).

A call is described by :class:`Operand` records (shape, element strides, pointer,
item size) and a :class:`~l1backends.semantics.Plan`; these functions turn them
into the kernel to launch, its specialization, grid, and the by-value
``Geometry`` argument.  Everything here is unit-tested without a device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .._cuda_launch import LaunchConfig, chunked_launch, flat_launch
from ._source import (
    FLAG_DIVISOR_ARRAY,
    FLAG_G_ARRAY,
    FLAG_MEAN,
    FLAG_WEIGHT,
    FLAG_WRITE_GRAD,
    FLAG_WRITE_LOSS,
    MAX_DIMS,
    OP_GRADSUM,
    OP_LOSS,
    OP_WSUM,
    OPERANDS,
    TAGS,
    specialization,
)

__all__ = [
    "GEOMETRY_DTYPE",
    "Launch",
    "Operand",
    "elementwise_launch",
    "full_strides",
    "reduction_launch",
    "scale_flags",
]

X, Y, W, G, D, GX = range(len(OPERANDS))
_VECTOR_BYTES = 16

# Mirrors ``struct Geometry`` of the kernel source, field by field (all 8-byte fields,
# so NumPy's packed layout is the C layout).
GEOMETRY_DTYPE = np.dtype(
    [
        ("op", "<i8"),
        ("flags", "<i8"),
        ("rows", "<i8"),
        ("count", "<i8"),
        ("chunks", "<i8"),
        ("nk", "<i8"),
        ("nr", "<i8"),
        ("reserved", "<i8"),
        ("kshape", "<i8", (MAX_DIMS,)),
        ("rshape", "<i8", (MAX_DIMS,)),
        ("kstride", "<i8", (len(OPERANDS), MAX_DIMS)),
        ("rstride", "<i8", (len(OPERANDS), MAX_DIMS)),
        ("g_scalar", "<f8"),
        ("mean_count", "<f8"),
    ]
)


@dataclass(frozen=True)
class Operand:
    """One array argument as the kernels see it.

    Attributes
    ----------
    strides : tuple of int
        Element strides along each axis of the full loss shape (0 where broadcast).
    pointer : int
        Device address of element 0 (for the alignment of vector loads).
    itemsize : int
        Bytes per element.
    """

    strides: tuple[int, ...]
    pointer: int = 0
    itemsize: int = 1


@dataclass(frozen=True)
class Launch:
    """One kernel launch: which specialization, its grid and its ``Geometry`` argument.

    Attributes
    ----------
    kernel : str
        The C++ name expression, such as ``"l1_rows<F32, 4>"``.
    grid, block : tuple of int
        CUDA grid and block dimensions.
    geometry : numpy.ndarray
        A one-element array of :data:`GEOMETRY_DTYPE`, passed by value.
    finish : str or None
        The ``l1_finish`` specialization to launch next when rows are split into chunks.
    finish_grid : tuple of int
        Its grid.
    partials : int
        Doubles of scratch space the chunk partial sums need (0 when not chunked).
    """

    kernel: str
    grid: tuple[int, ...]
    block: tuple[int, ...]
    geometry: np.ndarray
    finish: str | None = None
    finish_grid: tuple[int, ...] = (1,)
    partials: int = 0

    @property
    def chunks(self) -> int:
        """Blocks sharing each row."""
        return int(self.geometry["chunks"][0])


def full_strides(
    shape: Sequence[int], byte_strides: Sequence[int], itemsize: int, full_shape: Sequence[int]
) -> tuple[int, ...] | None:
    """Element strides of an array along the axes of the broadcast shape ``full_shape``.

    Broadcast axes (missing leading axes, and size-1 axes stretched) get stride 0.

    Returns
    -------
    tuple of int or None
        The strides, or None when a byte stride is not a multiple of the item size
        (the caller then makes a contiguous copy).
    """
    lead = len(full_shape) - len(shape)
    strides = [0] * len(full_shape)
    for axis, (n, step) in enumerate(zip(shape, byte_strides, strict=True)):
        if step % itemsize:
            return None
        if n != 1 or full_shape[lead + axis] == 1:
            strides[lead + axis] = step // itemsize if n != 1 else 0
    return tuple(strides)


def out_strides(plan_shape: Sequence[int], kept_axes: Sequence[int], strides: Sequence[int]):
    """Strides along the full shape of an array of the reduced shape (0 along reduced axes)."""
    full = [0] * len(plan_shape)
    for axis, step in zip(kept_axes, strides, strict=True):
        full[axis] = step
    return tuple(full)


def c_strides(shape: Sequence[int]) -> tuple[int, ...]:
    """Element strides of a C-contiguous array of ``shape``."""
    strides = []
    step = 1
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


def _collapse(
    shape: Sequence[int], axes: Sequence[int], strides: Sequence[Sequence[int]]
) -> tuple[list[int], list[list[int]]]:
    """Merge neighbouring ``axes`` that every operand walks as one, and drop size-1 axes.

    Returns the merged extents and, per operand, the merged strides, outer to inner; the
    C-order enumeration of the index space is unchanged.
    """
    extents: list[int] = []
    merged: list[list[int]] = [[] for _ in strides]
    for axis in axes:
        n = shape[axis]
        if n == 1:
            continue
        if extents and all(merged[k][-1] == strides[k][axis] * n for k in range(len(strides))):
            extents[-1] *= n
            for k in range(len(strides)):
                merged[k][-1] = strides[k][axis]
            continue
        extents.append(n)
        for k in range(len(strides)):
            merged[k].append(strides[k][axis])
    return extents, merged


def _lanes(dtype: str) -> int:
    return TAGS[dtype][1]


def _aligned(operands: Sequence[Operand], indices: Sequence[int], lanes: int) -> bool:
    return all(
        operands[k].pointer % min(_VECTOR_BYTES, lanes * operands[k].itemsize) == 0 for k in indices
    )


def _geometry(
    op: int,
    flags: int,
    rows: int,
    count: int,
    chunks: int,
    kept: tuple[list[int], list[list[int]]],
    reduced: tuple[list[int], list[list[int]]],
    g_scalar: float,
    mean_count: float,
) -> np.ndarray:
    geometry = np.zeros(1, dtype=GEOMETRY_DTYPE)
    for name, value in (
        ("op", op),
        ("flags", flags),
        ("rows", rows),
        ("count", count),
        ("chunks", chunks),
        ("nk", len(kept[0])),
        ("nr", len(reduced[0])),
        ("g_scalar", g_scalar),
        ("mean_count", mean_count),
    ):
        geometry[name][0] = value
    for prefix, (extents, strides) in (("k", kept), ("r", reduced)):
        geometry[f"{prefix}shape"][0, : len(extents)] = extents
        for k, operand_strides in enumerate(strides):
            geometry[f"{prefix}stride"][0, k, : len(operand_strides)] = operand_strides
    return geometry


def _too_many_dims(kept: Sequence[int], reduced: Sequence[int]) -> None:
    if len(kept) > MAX_DIMS or len(reduced) > MAX_DIMS:
        raise NotImplementedError(
            f"the cupy backend handles at most {MAX_DIMS} kept and {MAX_DIMS} reduced axes "
            "that cannot be merged; make the arrays contiguous first"
        )


def scale_flags(reduction: str, weighted: bool, g_array: bool) -> int:
    """The gradient-scale flags: weight, mean (divided by a weight sum when weighted), g array."""
    flags = FLAG_WEIGHT if weighted else 0
    if g_array:
        flags |= FLAG_G_ARRAY
    if reduction == "mean":
        flags |= FLAG_MEAN | (FLAG_DIVISOR_ARRAY if weighted else 0)
    return flags


def reduction_launch(
    op: int,
    dtype: str,
    shape: Sequence[int],
    kept_axes: Sequence[int],
    reduced_axes: Sequence[int],
    operands: Sequence[Operand],
    flags: int,
    g_scalar: float = 1.0,
    mean_count: float = 1.0,
) -> Launch:
    """Plan one ``l1_rows`` pass: rows over ``kept_axes``, each summing over ``reduced_axes``.

    Parameters
    ----------
    op : int
        OP_LOSS, OP_WSUM or OP_GRADSUM.
    dtype : str
        The compute dtype.
    shape : sequence of int
        The full (broadcast) loss shape.
    kept_axes, reduced_axes : sequence of int
        A partition of the axes of ``shape``: rows enumerate ``kept_axes`` in C order.
    operands : sequence of Operand
        x, y, w, g, d, gx, in that order, with strides along ``shape``.
    flags : int
        The FLAG_* bits.
    g_scalar, mean_count : float
        The grad_output when it is a number, and the divisor of an unweighted mean.

    Returns
    -------
    Launch
        The specialization, grid, geometry and, for chunked rows, the finishing launch.
    """
    if op == OP_WSUM:  # only w is read; the contiguous path indexes rows by x's layout
        operands = [operands[W], operands[W], *operands[W:]]
    strides = [operand.strides for operand in operands]
    kept = _collapse(shape, kept_axes, strides)
    reduced = _collapse(shape, reduced_axes, strides)
    _too_many_dims(kept[0], reduced[0])
    rows = math.prod(shape[axis] for axis in kept_axes)
    count = math.prod(shape[axis] for axis in reduced_axes)

    vec = 0
    if op != OP_GRADSUM:
        dense = [W] if op == OP_WSUM else [X, Y] + ([W] if flags & FLAG_WEIGHT else [])
        if op == OP_LOSS and flags & FLAG_WRITE_GRAD:
            dense.append(GX)
        if _contiguous_rows(kept, reduced, dense, count):
            vec = 1
            lanes = _lanes(dtype)
            if lanes > 1 and (rows == 1 or count % lanes == 0) and _aligned(operands, dense, lanes):
                vec = lanes
    config, chunks = chunked_launch(rows, count, max(vec, 1))
    geometry = _geometry(op, flags, rows, count, chunks, kept, reduced, g_scalar, mean_count)
    launch = Launch(
        kernel=specialization("l1_rows", dtype, vec),
        grid=(chunks, config.blocks),
        block=(config.threads,),
        geometry=geometry,
    )
    if chunks == 1 or (op == OP_LOSS and not flags & FLAG_WRITE_LOSS):
        return launch  # a gradient-only pass reduces nothing
    return Launch(
        kernel=launch.kernel,
        grid=launch.grid,
        block=launch.block,
        geometry=geometry,
        finish=specialization("l1_finish", dtype),
        finish_grid=(min(rows, config.blocks),),
        partials=4 * rows * chunks,
    )


def _contiguous_rows(
    kept: tuple[list[int], list[list[int]]],
    reduced: tuple[list[int], list[list[int]]],
    dense: Sequence[int],
    count: int,
) -> bool:
    """Whether every ``dense`` operand holds row ``r`` at ``r * count + 0 .. count - 1``.

    The per-row operands (g, d) need nothing: their offsets come from the row index.
    """
    (kept_extents, kept_strides), (reduced_extents, reduced_strides) = kept, reduced
    if len(kept_extents) > 1 or len(reduced_extents) > 1:
        return False
    return all(
        (not reduced_extents or reduced_strides[k][0] == 1)
        and (not kept_extents or kept_strides[k][0] == count)
        for k in dense
    )


def elementwise_launch(
    dtype: str,
    shape: Sequence[int],
    operands: Sequence[Operand],
    flags: int,
    g_scalar: float = 1.0,
    loss_pointer: int = 0,
    loss_itemsize: int = 1,
) -> Launch:
    """Plan the ``l1_elementwise`` pass of reduction="none" over the full ``shape``.

    The loss and the gradient are written C-contiguously; ``operands`` are x, y, w, g,
    d (unused) and gx, with strides along ``shape``.
    """
    strides = [operand.strides for operand in operands]
    kept = _collapse(shape, range(len(shape)), strides)
    _too_many_dims(kept[0], ())
    size = math.prod(shape)
    dense = [X, Y] + ([W] if flags & FLAG_WEIGHT else [])
    vec = 0
    extents, kept_strides = kept
    if len(extents) == 0 or (
        len(extents) == 1
        and all(kept_strides[k][0] == 1 for k in dense)
        and (not flags & FLAG_G_ARRAY or kept_strides[G][0] in (0, 1))
    ):
        vec = 1
        lanes = _lanes(dtype)
        loss_ok = loss_pointer % min(_VECTOR_BYTES, lanes * loss_itemsize) == 0
        if lanes > 1 and loss_ok and _aligned(operands, [*dense, GX], lanes):
            vec = lanes
        if not extents:
            kept = ([1], [[0] for _ in strides])
    config: LaunchConfig = flat_launch(size, max(vec, 1))
    geometry = _geometry(
        OP_LOSS, flags, size, 1, 1, kept, ([], [[] for _ in strides]), g_scalar, 1.0
    )
    return Launch(
        kernel=specialization("l1_elementwise", dtype, vec),
        grid=(config.blocks,),
        block=(config.threads,),
        geometry=geometry,
    )
