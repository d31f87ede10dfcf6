"""Host-side planning of the CuPy backend's launches, in pure Python (no CuPy, no GPU).

A call's passes come from :func:`~l1backends._backends._cuda_passes.plan_passes`
(shared with numba-cuda); this module turns one pass and its operands (element
strides along the plan's shape, pointer, dtype) into the kernel to launch, its
grid, and the by-value ``Layout`` argument.  Everything here is unit-tested
without a device.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .._cuda_launch import FINISH_THREADS, MAX_GRID, Op
from .._cuda_passes import OPERANDS, Access, PassPlan, is_dense
from .._iteration import MAX_GROUP_DIMS, Space, build_space
from ._source import specialization

__all__ = ["LAYOUT_DTYPE", "Launch", "Operand", "dense_ops", "plan_launch"]

# Mirrors ``struct Layout`` of the kernel source, field by field (all 8-byte fields, so
# NumPy's packed layout is the C layout).
LAYOUT_DTYPE = np.dtype(
    [
        *((name, "<i8") for name in ("rows", "count", "lanes", "iters", "chunks")),
        *((name, "<i8") for name in ("op", "finish", "scale", "nk", "nr")),
        ("kshape", "<i8", (MAX_GROUP_DIMS,)),
        ("rshape", "<i8", (MAX_GROUP_DIMS,)),
        ("kstride", "<i8", (len(OPERANDS), MAX_GROUP_DIMS)),
        ("rstride", "<i8", (len(OPERANDS), MAX_GROUP_DIMS)),
        ("g_scalar", "<f8"),
        ("scale_count", "<f8"),
    ]
)
_VECTOR_BYTES = 16


@dataclass(frozen=True)
class Operand:
    """One array argument as the kernels see it.

    Attributes
    ----------
    strides : tuple of int
        Element strides along each axis of the plan's shape (0 where broadcast).
    pointer : int
        Device address of element 0.
    dtype : str
        Its dtype name.
    """

    strides: tuple[int, ...]
    pointer: int = 0
    dtype: str = "float64"


@dataclass(frozen=True)
class Launch:
    """One pass's launch: the kernel, its grid, its ``Layout``, and the finish pass.

    Attributes
    ----------
    kernel : str
        The C++ name expression, such as ``"l1_dense<F32, 1, 2>"``.
    grid, block : tuple of int
        CUDA grid and block dimensions.
    layout : numpy.ndarray
        A one-element array of :data:`LAYOUT_DTYPE`, passed by value.
    path : str
        The kernel path it takes (``dense:loss``, ``strided:grad``, ...).
    finish : str or None
        The ``l1_finish`` specialization to launch next when rows are cut into chunks.
    finish_grid : tuple of int
        Its grid.
    """

    kernel: str
    grid: tuple[int, ...]
    block: tuple[int, ...]
    layout: np.ndarray
    path: str
    finish: str | None = None
    finish_grid: tuple[int, ...] = (1,)

    @property
    def chunks(self) -> int:
        """Blocks sharing each row."""
        return int(self.layout["chunks"][0])


def dense_ops(op: Op) -> Op:
    """The dense kernel's template bits: a reduction reads grad_output once per row, at run time."""
    return op if op & Op.ELEMENTWISE else op & ~Op.G_ARRAY


def _layout(step: PassPlan, space: Space, g_scalar: float) -> np.ndarray:
    layout = np.zeros(1, dtype=LAYOUT_DTYPE)
    part = step.partition
    values = {
        "rows": part.rows, "count": part.count, "lanes": part.lanes, "iters": part.iters,
        "chunks": part.chunks, "op": int(step.op), "finish": int(step.finish),
        "scale": int(step.scale), "nk": len(space.kept_shape), "nr": len(space.reduced_shape),
        "g_scalar": g_scalar, "scale_count": step.scale_count,
    }  # fmt: skip
    for name, value in values.items():
        layout[name][0] = value
    for prefix, shape, strides in (
        ("k", space.kept_shape, space.kept_strides),
        ("r", space.reduced_shape, space.reduced_strides),
    ):
        layout[f"{prefix}shape"][0, : len(shape)] = shape
        for name, operand_strides in zip(step.operands, strides, strict=True):
            layout[f"{prefix}stride"][0, OPERANDS.index(name), : len(operand_strides)] = (
                operand_strides
            )
    return layout


def plan_launch(
    step: PassPlan,
    dtype: str,
    shape: Sequence[int],
    operands: Mapping[str, Operand],
    g_scalar: float = 1.0,
) -> Launch:
    """Plan one pass: the dense kernel where its operands allow, else the strided one.

    Parameters
    ----------
    step : PassPlan
        The pass.
    dtype : str
        The compute dtype.
    shape : sequence of int
        The plan's (broadcast) shape.
    operands : mapping of str to Operand
        At least every operand the pass takes.
    g_scalar : float
        grad_output when it is a number.

    Returns
    -------
    Launch
        The kernel, grid, layout and, for rows cut into chunks, the finishing launch.
    """
    strides = [operands[name].strides for name in step.operands]
    lead = step.operands.index(step.lead)
    space = build_space(shape, step.kept, step.reduced, strides, lead)
    access = {
        name: Access(operands[name].dtype, operands[name].pointer % _VECTOR_BYTES == 0)
        for name in step.operands
    }
    dense = is_dense(step, dtype, space, access)
    if dense:
        kernel = specialization("l1_dense", dtype, dense_ops(step.op), step.finish)
    else:
        kernel = specialization("l1_strided", dtype)
    part = step.partition
    launch = Launch(
        kernel=kernel,
        grid=(part.blocks,),
        block=(part.threads,),
        layout=_layout(step, space, g_scalar),
        path=f"{'dense' if dense else 'strided'}:{step.kind}",
    )
    if not step.chunked:
        return launch
    return Launch(
        kernel=launch.kernel,
        grid=launch.grid,
        block=launch.block,
        layout=launch.layout,
        path=launch.path,
        finish=specialization("l1_finish", dtype),
        finish_grid=(min(part.rows, MAX_GRID),),
    )


#: Threads per block of the finish pass.
FINISH_BLOCK = (FINISH_THREADS,)
