"""The CuPy backend: runs the kernels of :mod:`._source` through CuPy's ``RawModule``.

Every launch goes to the current stream of the input's device; nothing is copied
to the host and nothing waits for the device, so results (0-d arrays included)
are ready when the stream gets there.  Inputs whose dtype differs from the
compute dtype (integers, mixed precisions) are cast first, as the specification
says; every other input is read in place, whatever its strides.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import cupy
import numpy as np

from ..._typing import Array
from ...semantics import Plan
from .._cuda_launch import THREADS_PER_BLOCK
from .._fused import FusedPassBackend
from ._plan import (
    Launch,
    Operand,
    c_strides,
    elementwise_launch,
    full_strides,
    out_strides,
    reduction_launch,
    scale_flags,
)
from ._source import (
    COMPILE_OPTIONS,
    FLAG_RAW,
    FLAG_WEIGHT,
    FLAG_WRITE_GRAD,
    FLAG_WRITE_LOSS,
    OP_GRADSUM,
    OP_LOSS,
    OP_WSUM,
    SOURCE,
)

__all__ = ["CupyBackend", "backend"]


_modules: dict[str, cupy.RawModule] = {}
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


def _operand(array: Array | None, shape: tuple[int, ...]) -> tuple[Array | None, Operand]:
    """The array (copied if its strides are not whole elements or it is not element-aligned)
    and its operand.

    The kernels load whole elements of their natural CUDA alignment (16 bytes for
    ``double2``), which a view such as ``float64[1:].view(complex128)`` does not have.
    """
    if array is None:
        return None, Operand((0,) * len(shape))
    strides = full_strides(array.shape, array.strides, array.itemsize, shape)
    if strides is None or array.data.ptr % array.itemsize:
        array = array.copy()  # C-contiguous, in a fresh (aligned) allocation
        strides = full_strides(array.shape, array.strides, array.itemsize, shape)
    return array, Operand(strides, array.data.ptr, array.itemsize)


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
        compute, result = plan.compute_dtype, plan.result_dtype
        self.x, x_operand = _operand(_cast(input, compute), shape)
        self.y, y_operand = _operand(_cast(target, compute), shape)
        self.w, w_operand = _operand(None if weight is None else _cast(weight, result), shape)
        self.g_scalar = 1.0
        self.g = None
        g_strides: tuple[int, ...] = (0,) * len(shape)
        if isinstance(grad_output, (int, float)):
            # Rounded to the result dtype on the host, as an array of that dtype would be.
            self.g_scalar = float(np.asarray(grad_output, dtype=result))
        elif grad_output is not None:
            self.g = _cast(grad_output, result)
            if not self.g.flags.c_contiguous or self.g.data.ptr % self.g.itemsize:
                self.g = self.g.copy()
            if self.g.ndim:
                kept = plan.kept_axes if plan.reduction != "none" else tuple(range(len(shape)))
                g_strides = out_strides(shape, kept, c_strides(self.g.shape))
        g_operand = Operand(g_strides, 0 if self.g is None else self.g.data.ptr, _itemsize(result))
        self.operands = [x_operand, y_operand, w_operand, g_operand]

    def with_outputs(self, divisor_strides: tuple[int, ...], gx: Array | None) -> list[Operand]:
        """The six operands, with the divisor's and the gradient's layouts."""
        gx_operand = (
            Operand((0,) * len(self.plan.shape))
            if gx is None
            else Operand(c_strides(self.plan.shape), gx.data.ptr, gx.itemsize)
        )
        return [*self.operands, Operand(divisor_strides, 0, 8), gx_operand]

    def launch(
        self,
        launch: Launch,
        gx: Array | None = None,
        loss: Array | None = None,
        divisor: Array | None = None,
        divisor_in: Array | None = None,
    ) -> None:
        """Launch ``launch`` (and its finishing pass) on the current stream."""
        any_array = self.x  # stands in for absent pointers; never dereferenced
        pointers = [
            self.w,
            self.g,
            divisor_in,
            gx,
            loss,
            divisor,
        ]
        pointers = [any_array if p is None else p for p in pointers]
        if launch.kernel.startswith("l1_elementwise"):
            w, g, _, gx_, loss_, _ = pointers
            args = (launch.geometry, self.x, self.y, w, g, gx_, loss_)
            _function(launch.kernel)(launch.grid, launch.block, args)
            return
        partials = any_array
        if launch.partials:
            partials = cupy.empty(launch.partials, dtype=cupy.float64)
        args = (launch.geometry, self.x, self.y, *pointers, partials)
        _function(launch.kernel)(launch.grid, launch.block, args)
        if launch.finish is not None:
            _, _, _, gx_, loss_, divisor_ = pointers
            finish_args = (launch.geometry, partials, gx_, loss_, divisor_)
            _function(launch.finish)(launch.finish_grid, (THREADS_PER_BLOCK,), finish_args)


def _itemsize(dtype: str) -> int:
    return np.dtype(dtype).itemsize


def _cast(array: Array, dtype: str) -> Array:
    return array if array.dtype.name == dtype else array.astype(dtype)


class CupyBackend(FusedPassBackend):
    """L1 loss and subgradient with fused CUDA kernels, for ``cupy.ndarray``."""

    name = "cupy"

    def partials(
        self, plan: Plan, input: Array, target: Array, weight: Array | None
    ) -> tuple[Array, Array, Array | None, Array | None]:
        """Unrounded float64 double words of Σ w·|d| and Σ w over the reduced axes."""
        with input.device:
            call = _Call(plan, input, target, weight, None)
            flags = FLAG_WRITE_LOSS | FLAG_RAW | (FLAG_WEIGHT if weight is not None else 0)
            words = cupy.empty((*plan.out_shape, 4), dtype=cupy.float64)
            if words.size:
                launch = reduction_launch(
                    OP_LOSS,
                    plan.compute_dtype,
                    plan.shape,
                    plan.kept_axes,
                    plan.reduced_axes,
                    call.with_outputs((0,) * len(plan.shape), None),
                    flags,
                )
                call.launch(launch, divisor=words)
            high, low = words[..., 0].copy(), words[..., 1].copy()
            if weight is None:
                return high, low, None, None
            return high, low, words[..., 2].copy(), words[..., 3].copy()

    def _run(
        self,
        plan: Plan,
        input: Array,
        target: Array,
        weight: Array | None,
        grad_output: Array | float | None,
        *,
        want_loss: bool,
        want_grad: bool,
    ) -> tuple[Array | None, Array | None]:
        with input.device:
            call = _Call(plan, input, target, weight, grad_output)
            if plan.reduction == "none":
                return self._none(call, want_loss, want_grad)
            return self._reduce(call, want_loss, want_grad)

    @staticmethod
    def _none(call: _Call, want_loss: bool, want_grad: bool) -> tuple[Array | None, Array | None]:
        plan = call.plan
        loss = cupy.empty(plan.shape, dtype=plan.result_dtype) if want_loss else None
        gx = None
        fused_grad = want_grad and not plan.input_broadcast
        if want_grad:
            gx = cupy.empty(plan.input_shape, dtype=plan.compute_dtype)
        flags = scale_flags("none", call.w is not None, call.g is not None)
        flags |= (FLAG_WRITE_LOSS if want_loss else 0) | (FLAG_WRITE_GRAD if fused_grad else 0)
        if plan.size and (want_loss or fused_grad):
            launch = elementwise_launch(
                plan.compute_dtype,
                plan.shape,
                call.with_outputs((0,) * len(plan.shape), gx if fused_grad else None),
                flags,
                call.g_scalar,
                loss_pointer=0 if loss is None else loss.data.ptr,
                loss_itemsize=_itemsize(plan.result_dtype),
            )
            call.launch(launch, gx=gx if fused_grad else None, loss=loss)
        if want_grad and not fused_grad:
            _grad_sum(call, gx, None)
        return loss, gx

    @staticmethod
    def _reduce(call: _Call, want_loss: bool, want_grad: bool) -> tuple[Array | None, Array | None]:
        plan = call.plan
        weighted = call.w is not None
        rows = math.prod(plan.out_shape)
        divisor_strides = out_strides(plan.shape, plan.kept_axes, c_strides(plan.out_shape))
        loss = cupy.empty(plan.out_shape, dtype=plan.result_dtype) if want_loss else None
        gx = cupy.empty(plan.input_shape, dtype=plan.compute_dtype) if want_grad else None
        divisor = None
        if want_grad and weighted and plan.reduction == "mean":
            # The gradient's scale w / Σw needs the weight sums before the fused pass.
            divisor = cupy.empty(plan.out_shape, dtype=cupy.float64)
            if rows:
                launch = reduction_launch(
                    OP_WSUM,
                    plan.compute_dtype,
                    plan.shape,
                    plan.kept_axes,
                    plan.reduced_axes,
                    call.with_outputs(divisor_strides, None),
                    FLAG_WEIGHT,
                )
                call.launch(launch, divisor=divisor)
        fused_grad = want_grad and not plan.input_broadcast
        if rows and (want_loss or (fused_grad and plan.size)):
            flags = scale_flags(plan.reduction, weighted, call.g is not None)
            flags |= (FLAG_WRITE_LOSS if want_loss else 0) | (FLAG_WRITE_GRAD if fused_grad else 0)
            launch = reduction_launch(
                OP_LOSS,
                plan.compute_dtype,
                plan.shape,
                plan.kept_axes,
                plan.reduced_axes,
                call.with_outputs(divisor_strides, gx if fused_grad else None),
                flags,
                call.g_scalar,
                float(plan.count),
            )
            call.launch(launch, gx=gx if fused_grad else None, loss=loss, divisor_in=divisor)
        if want_grad and not fused_grad:
            _grad_sum(call, gx, divisor)
        return loss, gx


def _grad_sum(call: _Call, gx: Array, divisor: Array | None) -> None:
    """The gradient of a broadcast input: each element sums its broadcast copies' gradients."""
    plan = call.plan
    if not gx.size:
        return
    summed = plan.input_broadcast_axes
    kept = tuple(axis for axis in range(len(plan.shape)) if axis not in summed)
    if plan.reduction == "none":
        divisor_strides = (0,) * len(plan.shape)
    else:
        divisor_strides = out_strides(plan.shape, plan.kept_axes, c_strides(plan.out_shape))
    launch = reduction_launch(
        OP_GRADSUM,
        plan.compute_dtype,
        plan.shape,
        kept,
        summed,
        call.with_outputs(divisor_strides, None),
        scale_flags(plan.reduction, call.w is not None, call.g is not None),
        call.g_scalar,
        float(plan.count),
    )
    call.launch(launch, gx=gx, divisor_in=divisor)


backend = CupyBackend()
