"""Host side of the numba-CPU general kernel: the passes of one call, and their operands.

A call takes at most three passes of the general kernel, each over the plan's
shape with its own grouping of axes into rows:

* the main pass: the loss (elementwise outputs, or per-row finished sums) and,
  unless the input is broadcast, the gradient elements;
* for a broadcast input, the sum-back pass: one row per input element, summing
  the gradient terms of the elements it was copied to;
* for a weighted mean's gradient when its rows are split into chunks (or summed
  back), a first pass summing Σw per loss row.  Rows taken whole sum their own
  Σw inside the main pass and need no such array.

No pass allocates more than its outputs, O(chunks) partials, and the Σw words of
the third kind (two double words per loss row).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from ..._typing import Array
from ...semantics import Finish, GradScale, Plan
from .._iteration import reduced_axis_strides
from .._paths import KernelPaths
from . import _kernels as kern
from ._operands import Record, Space, mode, space_records, splits_rows
from ._scalars import C64, C128, F32, F64
from ._threads import run_tasks

__all__ = [
    "GENERAL_PARALLEL_MIN",
    "PARALLEL_MIN",
    "PLAIN_PARALLEL_MIN",
    "Settings",
    "empty_loss",
    "general_call",
    "partial_words",
    "threads_for",
]

# Operand positions in the kernel's records: reads x, y, w, s, sw; writes out, gr, row.
X, Y, W, S, SW, OUT, GR, ROW = range(8)
_COMPLEX_PARTS = {C64: F32, C128: F64}
#: Elements below which a flat-kernel launch runs in the calling thread alone.  The flat
#: kernels are memory-bound: ``l1backends bench --threshold`` found two threads slower than
#: one below 2**19 to 2**20 elements on the 2-core VM (handing chunks to the pool costs
#: 20-100 us there), and no faster at any size when the second core brought no bandwidth.
PARALLEL_MIN = 1 << 20
#: The same for the general kernel, which is compute-bound (about 10 ns per element in
#: that sweep): threads pay from its first split into chunks.  Measure these again when a
#: kernel changes.
GENERAL_PARALLEL_MIN = 1 << 15
#: The same for the general kernel's plain passes (:func:`plain_storage`), memory-bound at
#: about 1-2 ns per element: two threads were slower below 2**19 elements.
PLAIN_PARALLEL_MIN = 1 << 19


def threads_for(size: int, minimum: int | None = None) -> int:
    """Threads for a launch over ``size`` elements: 1 below ``minimum`` (:data:`PARALLEL_MIN`)."""
    if size < (PARALLEL_MIN if minimum is None else minimum):
        return 1
    return int(__import__("numba").get_num_threads())


def real_dtype(name: str) -> str:
    """The real dtype of a compute dtype (complex64 -> float32)."""
    return {"complex64": "float32", "complex128": "float64"}.get(name, name)


def empty_loss(plan: Plan) -> np.ndarray:
    """The loss array before the pass: what empty reductions return."""
    fill = math.nan if plan.finish in (Finish.MEAN_BY_COUNT, Finish.MEAN_BY_WEIGHT) else 0.0
    return np.full(plan.out_shape, fill, dtype=plan.result_dtype)


class Settings:
    """The kernel's settings for one pass (the tuple ``kern.general_tasks`` takes)."""

    def __init__(self, plan: Plan, flags: int) -> None:
        # float16 sums exactly in double words, float64 needs them for accuracy; float32
        # differences carry 2**-53 relative error anyway, far below a float32 ulp.
        if plan.result_dtype != "float32":
            flags |= kern.COMPENSATE
        if plan.is_complex:
            flags |= kern.COMPLEX
        self.flags = flags
        self.plan = plan
        self.x_scale = self.w_scale = self.out_scale = 1.0

    def tuple(self) -> tuple[int, int, int, float, float, float, int, int]:
        plan = self.plan
        return (
            self.flags,
            int(plan.finish),
            plan.count,
            self.x_scale,
            self.w_scale,
            self.out_scale,
            np.dtype(plan.compute_dtype).itemsize // 2,  # bytes to a complex's imaginary part
            int(plan.grad_scale),
        )


class _Call:
    """One call's operands and the passes of the general kernel over them."""

    def __init__(self, plan: Plan, input: Array, target: Array, weight: Array | None) -> None:
        self.plan = plan
        compute = real_dtype(plan.compute_dtype)
        self.operands: list[Any] = [None] * 8
        self.strides: list[tuple[int, ...] | None] = [None] * 8
        self.operands[X] = (input, mode(input.dtype, compute))
        self.operands[Y] = (target, mode(target.dtype, compute))
        if weight is not None:
            self.operands[W] = (weight, mode(weight.dtype, plan.result_dtype))
        self.w_scale = 1.0  # a power of two when Σw overflowed float64

    def set(self, position: int, array: Array | None, strides: tuple[int, ...] | None = None):
        """Set operand ``position`` (an output when at or beyond OUT), or clear it with None."""
        self.strides[position] = strides
        if array is None:
            self.operands[position] = None
            return
        real = self.plan.result_dtype if position in (S, OUT) else real_dtype(array.dtype.name)
        self.operands[position] = (array, mode(array.dtype, real))

    def run(
        self,
        kept: tuple[int, ...],
        reduced: tuple[int, ...],
        settings: Settings,
        words: np.ndarray | None = None,
        paths: KernelPaths | None = None,
    ) -> None:
        """One pass over the plan's shape, rows over ``kept`` axes, ``reduced`` summed in each."""
        operands = list(self.operands)
        if settings.flags & kern.ACC_WEIGHT:
            operands[X] = operands[Y] = None  # only the weight is read
        lead = W if operands[X] is None else X
        space = space_records(self.plan.shape, kept, reduced, operands, self.strides, lead)
        if space.rows == 0 or (space.count == 0 and words is None and operands[ROW] is None):
            return
        settings.w_scale = self.w_scale
        _launch(space, settings, words, paths)


def _launch(
    space: Space, settings: Settings, words: np.ndarray | None, paths: KernelPaths | None
) -> None:
    records = space.records
    layout = space.layout()
    ntasks = layout[2] * layout[3]
    partials = np.empty((ntasks if layout[3] > 1 else 0, 4))
    plain = plain_storage(records, settings)
    minimum = PLAIN_PARALLEL_MIN if plain else GENERAL_PARALLEL_MIN
    threads = threads_for(space.rows * space.count, minimum)
    if paths is not None:
        paths.visit("row-chunks" if layout[3] > 1 or space.rows == 1 else "row-blocks")
        paths.visit("general-parallel" if threads > 1 else "general-serial")
        if plain:
            paths.visit("plain-pass")
    reads = tuple(records[:5])
    writes = tuple(records[5:])
    values = (*settings.tuple(), plain)
    run_tasks(
        ntasks, threads, kern.general_tasks,
        space.shape, space.strides, reads, writes, values, layout, partials, words,
    )  # fmt: skip
    if layout[3] > 1 and (records[ROW] is not None or words is not None):
        # Rows split into chunks, and sums wanted: combine the partials in a fixed order.
        kern.general_combine(
            space.shape, space.strides, records[ROW], values, layout, partials, words
        )


def plain_storage(records: list[Record | None], settings: Settings) -> int:
    """The inputs' storage (F32, F64, C64 or C128) when a pass is plain, else 0.

    A plain pass writes ``|x - y|`` and/or (real data) ``sign(x - y) · g``, or
    (real data) the loss ``w·|x - y|`` alone, elementwise; it sums nothing, and
    every operand is native and exact, the inputs of one storage and the other
    operands of its real dtype.  One rounding of ``x - y`` (computed in float64)
    to float32 or float64 is then the correctly rounded result (float64 has more
    than 2·24 + 2 bits, so rounding a float32 difference twice cannot land on a
    float32 tie), and ``sign · g`` is exact; a weighted term is the general
    element's double word, rounded once.  The kernel reads typed values.  A
    complex modulus is ``hypot`` of the parts' differences, as the general
    element computes it.
    """
    summing = kern.ACC_LOSS | kern.ACC_GRAD | kern.ACC_WEIGHT
    if settings.flags & summing or settings.x_scale != 1.0 or settings.w_scale != 1.0:
        return 0
    x, y, w, s, sw, out, gr, row = records
    if x is None or y is None or sw is not None or row is not None:
        return 0
    storage = x[1]
    real = _COMPLEX_PARTS.get(storage, storage)
    if real not in (F32, F64) or y[1] != storage or (out is not None and out[1] != real):
        return 0
    if w is not None and (real != storage or w[1] != storage or gr is not None or out is None):
        return 0
    if gr is not None:
        plain_gradient = settings.plan.grad_scale is GradScale.PLAIN and real == storage
        if not (plain_gradient and gr[1] == storage and s is not None and s[1] == storage):
            return 0
    return storage


def _row_strides(plan: Plan, array: np.ndarray) -> tuple[int, ...]:
    """Byte strides along the plan's shape of an array laid out over the loss's kept axes."""
    if array.ndim == 0:
        return (0,) * len(plan.shape)
    return reduced_axis_strides(len(plan.shape), plan.kept_axes, array.strides)


def _input_strides(plan: Plan, gradient: np.ndarray) -> tuple[int, ...]:
    """Byte strides along the plan's shape of the input-shaped gradient (0 where broadcast)."""
    lead = len(plan.shape) - len(plan.input_shape)
    return (0,) * lead + tuple(
        0 if n == 1 and plan.shape[lead + axis] != 1 else stride
        for axis, (n, stride) in enumerate(zip(plan.input_shape, gradient.strides, strict=True))
    )


def _grad_output(plan: Plan, grad_output: Any) -> np.ndarray:
    """``grad_output`` as an operand: the caller's array in place, or a 0-d scalar."""
    if grad_output is not None and np.ndim(grad_output) > 0:
        return grad_output
    value = 1.0 if grad_output is None else grad_output
    with np.errstate(over="ignore"):  # a value beyond the result dtype rounds to inf
        return np.array(value, dtype=plan.result_dtype)


def _weight_sums(call: _Call, paths: KernelPaths | None) -> np.ndarray:
    """Σw per loss row as double words (complex128: high, low), before the gradient pass.

    If Σw overflows float64, ``call``'s weights are scaled by a power of two from then on.
    """
    plan = call.plan
    if paths is not None:
        paths.visit("weight-sum")
    summing = _Call(plan, call.operands[X][0], call.operands[Y][0], call.operands[W][0])
    words = np.zeros((math.prod(plan.out_shape), 4))
    summing.run(plan.kept_axes, plan.reduced_axes, Settings(plan, kern.ACC_WEIGHT), words)
    if np.isinf(words[:, 2]).any():  # Σw beyond float64: weights scaled by a power of two
        call.w_scale = summing.w_scale = 2.0 ** -(max(1, plan.count).bit_length() + 1)
        summing.run(plan.kept_axes, plan.reduced_axes, Settings(plan, kern.ACC_WEIGHT), words)
    sums = np.empty(plan.out_shape, np.complex128)
    sums.real = words[:, 2].reshape(plan.out_shape)
    sums.imag = words[:, 3].reshape(plan.out_shape)
    return sums


def general_call(
    plan: Plan,
    input: Array,
    target: Array,
    weight: Array | None,
    grad_output: Any,
    want: tuple[bool, bool],
    paths: KernelPaths | None = None,
    outputs: tuple[Array | None, Array | None] = (None, None),
) -> tuple[Any, Any]:
    """``(loss, gradient)`` of any call by the general kernel (None for what is not wanted).

    ``outputs`` are the caller's buffers for the loss and the gradient (None: fresh arrays).
    """
    want_loss, want_grad = want
    call = _Call(plan, input, target, weight)
    loss: Any = outputs[0]
    gradient: Any = outputs[1]
    if want_loss and loss is None:
        loss = np.empty(plan.shape, plan.result_dtype) if plan.elementwise else empty_loss(plan)
    elif want_loss and not plan.elementwise:
        loss[...] = empty_loss(plan)  # what rows of nothing hold
    if want_grad and gradient is None:
        gradient = np.empty(plan.input_shape, dtype=plan.compute_dtype)
    fused = want_grad and not plan.input_broadcast
    if fused:  # the main pass writes the gradient, so it reads the gradient's scale
        _scale_operands(call, grad_output, paths)
        call.set(GR, gradient)
    if plan.elementwise:
        call.set(OUT, loss)
        if want_loss or fused:
            flags = kern.ELEMENT_SCALE
            call.run((), tuple(range(len(plan.shape))), Settings(plan, flags), paths=paths)
    elif want_loss or fused:
        call.set(ROW, loss, None if loss is None else _row_strides(plan, loss))
        _reduce(call, kern.ACC_LOSS if want_loss else 0, loss, paths)
    if want_grad and plan.input_broadcast:
        _scale_operands(call, grad_output, paths)
        _sum_back(call, gradient, paths)
    return loss, gradient


def _scale_operands(call: _Call, grad_output: Any, paths: KernelPaths | None) -> None:
    """Set ``grad_output`` and, where rows are not summed whole, Σw per loss row.

    Only passes that write gradients get these operands: each operand present or
    absent is another kernel signature to compile.
    """
    plan = call.plan
    g = _grad_output(plan, grad_output)
    call.set(S, g, None if plan.elementwise else _row_strides(plan, g))
    rows, count = math.prod(plan.out_shape), plan.count
    if plan.needs_weight_sum and (plan.input_broadcast or splits_rows(rows, count)):
        sums = _weight_sums(call, paths)
        call.set(SW, sums, _row_strides(plan, sums))


def _reduce(call: _Call, accumulate: int, loss: Any, paths: KernelPaths | None) -> None:
    """The reduction pass; a float64 result that overflowed is computed again, scaled."""
    plan = call.plan
    call.run(plan.kept_axes, plan.reduced_axes, Settings(plan, accumulate), paths=paths)
    if loss is None or plan.result_dtype != "float64" or np.isfinite(loss).all():
        return
    # Every term finite but a sum beyond float64: the loss alone again, with the inputs
    # scaled by a power of two (exact), and the result scaled back.
    if paths is not None:
        paths.visit("overflow-rescale")
    # A broadcast input's sum-back pass runs after this one, on the call's own operands.
    settings = Settings(plan, kern.ACC_LOSS)
    shift = max(1, plan.count).bit_length() + 2
    settings.x_scale = 2.0**-shift
    # The weight's scale cancels in a weighted mean, and not in a weighted sum.
    both = plan.weighted and plan.finish is Finish.SUM
    settings.out_scale = 2.0 ** (2 * shift if both else shift)
    rescaled = np.empty_like(loss)
    again = copy.copy(call)  # the loss alone: the gradient's operands stay with ``call``
    again.operands, again.strides = list(call.operands), list(call.strides)
    for position in (S, SW, GR):
        again.set(position, None)
    again.set(ROW, rescaled, _row_strides(plan, rescaled))
    with np.errstate(over="ignore"):
        again.w_scale = 2.0**-shift
        again.run(plan.kept_axes, plan.reduced_axes, settings)
    overflowed = ~np.isfinite(loss)
    loss[overflowed] = rescaled[overflowed]


def _sum_back(call: _Call, gradient: np.ndarray, paths: KernelPaths | None) -> None:
    """A broadcast input's gradient: each element sums the gradient terms it was copied to."""
    plan = call.plan
    if paths is not None:
        paths.visit("sum-back")
    summed = plan.input_broadcast_axes
    kept = tuple(axis for axis in range(len(plan.shape)) if axis not in summed)
    call.set(OUT, None)
    call.set(GR, None)
    call.set(ROW, gradient, _input_strides(plan, gradient))
    call.run(kept, summed, Settings(plan, kern.ACC_GRAD | kern.ELEMENT_SCALE), paths=paths)


def partial_words(
    plan: Plan, input: Array, target: Array, weight: Array | None, paths: KernelPaths | None
) -> np.ndarray:
    """Unrounded double words (rows, 4) of Σ w·|d| and Σ w per loss row."""
    words = np.zeros((math.prod(plan.out_shape), 4))
    call = _Call(plan, input, target, weight)
    call.run(plan.kept_axes, plan.reduced_axes, Settings(plan, kern.ACC_LOSS), words, paths)
    return words
