"""The CuPy backend: runs the kernels of :mod:`._source` through CuPy's ``RawModule``.

Every launch goes to the current stream of the input's device; nothing is copied
to the host and nothing waits for the device, so results (0-d arrays included)
are ready when the stream gets there.  A call allocates at most three buffers
from CuPy's memory pool (the loss, the gradient, and one scratch buffer for Σw
and the chunk sums), plus a cast copy of any input whose dtype differs from the
compute dtype (integers, mixed precisions), as the specification says; every
other input is read in place, whatever its strides.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import cupy
import numpy as np

from ..._typing import Array
from ...semantics import Plan
from .. import out_declined
from .._cuda_launch import THREADS_PER_BLOCK, limit_reason
from .._cuda_passes import PassPlan, partials_pass, path_names, plan_passes, scratch_words
from .._fused import FusedPassBackend, Request
from .._iteration import (
    broadcast_strides,
    c_strides,
    element_strides,
    reduced_axis_strides,
)
from .._paths import KernelPaths
from ._plan import FINISH_BLOCK, Launch, Operand, plan_launch
from ._source import COMPILE_OPTIONS, SOURCE

__all__ = ["PATHS", "CupyBackend", "backend"]

#: The kernel paths (the same as numba-cuda's, see ``_cuda_passes.path_names``): ``dense``
#: for real operands of the compute dtype, 16-byte aligned, rows back to back; ``strided``
#: otherwise (complex, strided, misaligned, broadcast weight); ``strided:grad-sum`` for an
#: input broadcast against the target; ``finish`` for rows of more than 256 x 4 vectors.
PATHS = KernelPaths(path_names())

_modules: dict[str, Any] = {}
_modules_lock = threading.Lock()


def _function(name: str) -> Any:
    """The compiled kernel ``name`` (one small module per specialization, built on first use)."""
    module = _modules.get(name)
    if module is None:
        with _modules_lock:
            module = _modules.get(name)
            if module is None:
                module = cupy.RawModule(
                    code=SOURCE, options=COMPILE_OPTIONS, name_expressions=(name,)
                )
                _modules[name] = module
    return module.get_function(name)


def _operand(array: Array, strides: tuple[int, ...] | None = None) -> tuple[Array, Operand]:
    """The array (copied if its strides are not whole elements or it is not element-aligned)
    and its operand, with ``strides`` along the plan's shape (or its own).

    The kernels load whole elements of their natural CUDA alignment (16 bytes for
    ``double2``), which a view such as ``float64[1:].view(complex128)`` does not have.
    """
    own = element_strides(array.strides, array.itemsize)
    if own is None or array.data.ptr % array.itemsize:
        array = array.copy()  # C-contiguous, in a fresh (aligned) allocation
        own = element_strides(array.strides, array.itemsize)
    assert own is not None
    return array, Operand(own if strides is None else strides, array.data.ptr, array.dtype.name)


def _cast(array: Array, dtype: str) -> Array:
    return array if array.dtype.name == dtype else array.astype(dtype)


class _Call:
    """One call's arrays, cast as the plan says, and their operand descriptions."""

    def __init__(
        self,
        plan: Plan,
        input: Array,
        target: Array,
        weight: Array | None,
        grad_output: Array | float | None,
    ) -> None:
        self.plan = plan
        shape = plan.shape
        self.arrays: dict[str, Array] = {}
        self.operands: dict[str, Operand] = {}
        roles = {"x": (input, plan.compute_dtype), "y": (target, plan.compute_dtype)}
        if weight is not None:
            roles["w"] = (weight, plan.result_dtype)
        for name, (array, dtype) in roles.items():
            array, operand = _operand(_cast(array, dtype))
            operand = Operand(broadcast_strides(array.shape, operand.strides, shape),
                              operand.pointer, operand.dtype)  # fmt: skip
            self.arrays[name], self.operands[name] = array, operand
        self.g_scalar = 1.0
        if isinstance(grad_output, (int, float)):
            # Rounded to the result dtype on the host, as an array of that dtype would be.
            self.g_scalar = float(np.asarray(grad_output, dtype=plan.result_dtype))
        elif grad_output is not None:
            g, operand = _operand(_cast(grad_output, plan.result_dtype))
            # grad_output has the loss's shape (its axes are the kept axes), or is 0-d.
            strides = (0,) * len(shape)
            if g.ndim:
                strides = reduced_axis_strides(len(shape), plan.kept_axes, operand.strides)
            self.arrays["g"] = g
            self.operands["g"] = Operand(strides, operand.pointer, operand.dtype)

    def output(self, name: str, array: Array) -> None:
        """Add a fresh C-contiguous output of the plan's shape (the gradient, the 'none' loss)."""
        self.arrays[name] = array
        self.operands[name] = Operand(c_strides(self.plan.shape), array.data.ptr, array.dtype.name)

    def scratch(self, passes: list[PassPlan]) -> Array | None:
        """One float64 buffer for Σw (operand ``sw``, per loss row) and the chunk sums."""
        rows_sw, partial_words = scratch_words(passes)
        if not rows_sw + partial_words:
            return None
        scratch = cupy.empty(rows_sw + partial_words, dtype=cupy.float64)
        if rows_sw:
            plan = self.plan
            strides = reduced_axis_strides(
                len(plan.shape), plan.kept_axes, c_strides(plan.out_shape)
            )
            self.arrays["sw"] = scratch
            self.operands["sw"] = Operand(strides, scratch.data.ptr, "float64")
        return scratch[rows_sw:]

    def launch(
        self, launch: Launch, sinks: dict[str, Array | None], partials: Array | None
    ) -> None:
        """Launch one pass (and its finish pass) on the current stream."""
        PATHS.visit(launch.path)
        x = self.arrays["x"]  # stands in for absent pointers; never dereferenced
        pointers = [self.arrays.get(name, x) for name in ("x", "y", "w", "g", "sw")]
        gx, none = sinks.get("grad", x), sinks.get("none", x)
        out, words = sinks.get("loss", x), sinks.get("words", x)
        args = (launch.layout, *pointers, gx, none, out, words, x if partials is None else partials)
        _function(launch.kernel)(launch.grid, launch.block, args)
        if launch.finish is not None:
            PATHS.visit("finish")
            finish_args = (launch.layout, partials, gx, out, words)
            _function(launch.finish)(launch.finish_grid, FINISH_BLOCK, finish_args)


class CupyBackend(FusedPassBackend):
    """L1 loss and subgradient with fused CUDA kernels, for ``cupy.ndarray``."""

    name = "cupy"
    paths = PATHS

    def can_run(self, plan: Plan) -> str | None:
        """Why the kernels cannot take ``plan`` (``out=``, too many dimensions), or None."""
        return out_declined(plan) or limit_reason(plan)

    def _words(self, request: Request) -> list[Array]:
        """The unrounded double words of the plan's rows, each an array of the loss's shape."""
        plan = request.plan
        with request.input.device:
            call = _Call(plan, request.input, request.target, request.weight, None)
            words = cupy.empty((4, math.prod(plan.out_shape)), dtype=cupy.float64)
            _run_passes(call, [partials_pass(plan, THREADS_PER_BLOCK)], {"words": words})
            return [words[k].reshape(plan.out_shape) for k in range(4)]

    def _run(self, request: Request) -> tuple[Array | None, Array | None]:
        plan, want_loss, want_grad = request.plan, request.want_loss, request.want_grad
        with request.input.device:
            call = _Call(plan, request.input, request.target, request.weight, request.grad_output)
            passes = plan_passes(
                plan, g_array="g" in call.arrays, want_loss=want_loss, want_grad=want_grad,
                max_threads=THREADS_PER_BLOCK,
            )  # fmt: skip
            loss = cupy.empty(plan.out_shape, dtype=plan.result_dtype) if want_loss else None
            grad = cupy.empty(plan.input_shape, dtype=plan.compute_dtype) if want_grad else None
            if loss is not None and plan.elementwise:
                call.output("none", loss)
            if grad is not None and not plan.input_broadcast:
                call.output("grad", grad)
            _run_passes(call, passes, {"loss": loss, "grad": grad, "none": loss})
            return loss, grad


def _run_passes(call: _Call, passes: list[PassPlan], sinks: dict[str, Array | None]) -> None:
    """Take the scratch buffer, then launch every pass in order."""
    plan = call.plan
    partials = call.scratch(passes)
    if "sw" in call.arrays:
        sinks = {**sinks, "words": call.arrays["sw"]}  # the Σw pass writes where sw reads
    for step in passes:
        if not step.empty:
            launch = plan_launch(step, plan.compute_dtype, plan.shape, call.operands, call.g_scalar)
            call.launch(launch, sinks, partials)


backend = CupyBackend()
