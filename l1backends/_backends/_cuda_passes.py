"""The passes of one call, planned once for both CUDA backends (pure Python, no CUDA import).

A call is one to three kernel passes over the plan's shape, each described by a
:class:`PassPlan`: what it computes (its :class:`~._cuda_launch.Op` bits, finish
and gradient scale), which axes its rows keep and sum, which operands it reads
and writes, and where each row's result goes.  The numba-cuda and CuPy backends
turn the same list into their own launches, and take the same kernel paths
(:func:`path_names`): a ``dense`` kernel with 128-bit loads where every streamed
operand is aligned, of the compute dtype, and laid out row after row
(:func:`is_dense`), else a ``strided`` one; a ``finish`` pass where rows are cut
into several chunks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..semantics import Finish, GradScale, Plan
from ._cuda_launch import Op, Partition, partition, sum_back_axes
from ._iteration import Space

__all__ = [
    "OPERANDS",
    "Access",
    "PassPlan",
    "is_dense",
    "partials_pass",
    "path_names",
    "plan_passes",
    "scratch_words",
]

#: Every operand a kernel may take, in argument order: input, target, weight,
#: grad_output, Σw (per loss row), the gradient and the elementwise loss.
OPERANDS = ("x", "y", "w", "g", "sw", "grad", "none")

_KINDS = ("loss", "grad", "elementwise", "weight-sum")


def path_names() -> list[str]:
    """The kernel paths of a CUDA backend: ``kernel:pass`` for each kind of pass, and finish."""
    dense_or_strided = [f"{kernel}:{kind}" for kernel in ("dense", "strided") for kind in _KINDS]
    return [*dense_or_strided, "strided:grad-sum", "finish"]


@dataclass(frozen=True)
class PassPlan:
    """One pass of a call.

    Attributes
    ----------
    op : Op
        What it computes.
    finish : Finish
        How its rows are finished (``Finish.NONE`` in a summing pass: the unrounded
        double words are stored instead).
    scale : GradScale
        What the gradient's ``sign(d)`` is scaled by.
    kept, reduced : tuple of int
        Axes of the plan's shape enumerated by rows, and summed within a row.
    operands : tuple of str
        The operands it takes (names from :data:`OPERANDS`).
    lead : str
        The operand whose strides order the reduced axes.
    sink : str or None
        Where each row's result goes: "loss", "words" (four planes of double words),
        "weight-sum" (Σw per row, in scratch memory), "grad" (the summed-back
        gradient), or None for a pass that sums nothing.
    scale_count : float
        The count a mean's gradient is divided by.
    partition : Partition
        How its rows are cut.
    """

    op: Op
    finish: Finish
    scale: GradScale
    kept: tuple[int, ...]
    reduced: tuple[int, ...]
    operands: tuple[str, ...]
    lead: str
    sink: str | None
    scale_count: float
    partition: Partition

    @property
    def sums(self) -> bool:
        """Whether its rows are summed (and finished)."""
        return bool(self.op & (Op.LOSS | Op.WEIGHT_SUM | Op.GRAD_SUM))

    @property
    def chunked(self) -> bool:
        """Whether it sums rows cut into several chunks (a finish pass follows)."""
        return self.sums and self.partition.chunks > 1

    @property
    def partial_words(self) -> int:
        """Scratch float64 words its chunk sums take."""
        return 4 * self.partition.items if self.chunked else 0

    @property
    def kind(self) -> str:
        """The pass's part of its path name."""
        for bit, name in (
            (Op.LOSS, "loss"), (Op.WEIGHT_SUM, "weight-sum"), (Op.GRAD_SUM, "grad-sum"),
            (Op.ELEMENTWISE, "elementwise"),
        ):  # fmt: skip
            if self.op & bit:
                return name
        return "grad"

    @property
    def empty(self) -> bool:
        """Whether it has nothing to do (no rows, or empty rows and nothing to finish)."""
        return self.partition.rows == 0 or (self.partition.count == 0 and not self.sums)


def _make(
    plan: Plan,
    op: Op,
    axes: tuple[tuple[int, ...], tuple[int, ...]],
    operands: Sequence[str],
    max_threads: int,
    **details: object,
) -> PassPlan:
    kept, reduced = axes
    rows = math.prod(plan.shape[axis] for axis in kept)
    count = math.prod(plan.shape[axis] for axis in reduced)
    itemsize = np.dtype(plan.compute_dtype).itemsize
    return PassPlan(
        op=op,
        finish=details.get("finish", Finish.NONE),  # type: ignore[arg-type]
        scale=details.get("scale", GradScale.PLAIN),  # type: ignore[arg-type]
        kept=kept,
        reduced=reduced,
        operands=tuple(name for name in OPERANDS if name in operands),
        lead=str(details.get("lead", "x")),
        sink=details.get("sink"),  # type: ignore[arg-type]
        scale_count=float(plan.count),
        partition=partition(rows, count, itemsize, max_threads),
    )


def plan_passes(
    plan: Plan, *, g_array: bool, want_loss: bool, want_grad: bool, max_threads: int
) -> list[PassPlan]:
    """The passes of one call, in launch order.

    Parameters
    ----------
    plan : Plan
        The call's plan.
    g_array : bool
        Whether grad_output is a device array (else a number, or absent).
    want_loss, want_grad : bool
        What the call returns.
    max_threads : int
        Threads per block for long rows.

    Returns
    -------
    list of PassPlan
        Σw first when a weighted mean's gradient needs it; then the pass that makes
        the loss and the gradient; then, for an input broadcast against the target,
        the pass that sums its gradient back.
    """
    bits = (Op.WEIGHT if plan.weighted else Op(0)) | (Op.G_ARRAY if g_array else Op(0))
    inputs = ["x", "y"] + (["w"] if plan.weighted else []) + (["g"] if g_array else [])
    axes = (plan.kept_axes, plan.reduced_axes)
    passes = []
    if want_grad and plan.needs_weight_sum:
        op = Op.WEIGHT_SUM | Op.WEIGHT
        passes.append(
            _make(plan, op, axes, ["w"], max_threads, finish=Finish.SUM, lead="w",
                  sink="weight-sum")
        )  # fmt: skip
    scaled = ["sw"] if plan.needs_weight_sum else []
    fused_grad = want_grad and not plan.input_broadcast
    op = bits | (Op.GRAD if fused_grad else Op(0))
    scale = plan.grad_scale if fused_grad else GradScale.PLAIN
    outputs = ["grad"] if fused_grad else []
    if plan.elementwise:
        op |= Op.ELEMENTWISE | (Op.NONE_OUT if want_loss else Op(0))
        outputs += ["none"] if want_loss else []
        if want_loss or fused_grad:
            every = ((), tuple(range(len(plan.shape))))
            passes.append(_make(plan, op, every, inputs + outputs, max_threads, scale=scale))
    elif want_loss or fused_grad:
        op |= Op.LOSS if want_loss else Op(0)
        finish = plan.finish if want_loss else Finish.NONE
        operands = inputs + outputs + (scaled if fused_grad else [])
        sink = "loss" if want_loss else None
        passes.append(
            _make(plan, op, axes, operands, max_threads, finish=finish, scale=scale, sink=sink)
        )
    if want_grad and plan.input_broadcast:
        op = bits | Op.GRAD_SUM
        back = sum_back_axes(plan)
        passes.append(
            _make(plan, op, back, inputs + scaled, max_threads, finish=Finish.SUM,
                  scale=plan.grad_scale, sink="grad")
        )  # fmt: skip
    return passes


def partials_pass(plan: Plan, max_threads: int) -> PassPlan:
    """The pass that stores each row's unrounded Σ w·|d| and Σ w (for Dask)."""
    op = Op.LOSS | (Op.WEIGHT if plan.weighted else Op(0))
    operands = ["x", "y"] + (["w"] if plan.weighted else [])
    axes = (plan.kept_axes, plan.reduced_axes)
    return _make(plan, op, axes, operands, max_threads, finish=Finish.NONE, sink="words")


def scratch_words(passes: Sequence[PassPlan]) -> tuple[int, int]:
    """The float64 words of a call's one scratch buffer: (Σw of each loss row, chunk sums).

    Σw comes first (the gradient reads it while later passes reuse the rest); passes
    run one after another on one stream, so they share the chunk-sum words.
    """
    weight_sum = next((step for step in passes if step.sink == "weight-sum"), None)
    rows = 0 if weight_sum is None else weight_sum.partition.rows
    return rows, max((step.partial_words for step in passes), default=0)


@dataclass(frozen=True)
class Access:
    """What the dense kernel needs to know of one operand.

    Attributes
    ----------
    dtype : str
        Its dtype name.
    aligned : bool
        Whether its element 0 is at offset 0 of a 16-byte aligned buffer.
    """

    dtype: str
    aligned: bool


def is_dense(step: PassPlan, dtype: str, space: Space, access: Mapping[str, Access]) -> bool:
    """Whether the dense (128-bit) kernel serves ``step``.

    Every streamed operand must be of the real compute ``dtype``, aligned, and hold
    row ``r``'s element ``e`` at ``r * count + e`` (``space`` has one operand per
    ``step.operands``); per-row operands (Σw, and grad_output of a reduction) may lie
    anywhere.  Rows after the first must start on a vector boundary.
    """
    if np.dtype(dtype).kind == "c" or step.op & Op.GRAD_SUM:
        return False
    if len(space.kept_shape) > 1 or len(space.reduced_shape) > 1:
        return False
    part = step.partition
    if part.rows > 1 and part.count % part.lanes:
        return False
    per_row = {"sw"} | (set() if step.op & Op.ELEMENTWISE else {"g"})
    for index, name in enumerate(step.operands):
        if name in per_row:
            continue
        kept = space.kept_strides[index]
        reduced = space.reduced_strides[index]
        if (
            access[name].dtype != dtype
            or not access[name].aligned
            or (kept and kept[0] != part.count)
            or (reduced and reduced[0] != 1)
        ):
            return False
    return True
