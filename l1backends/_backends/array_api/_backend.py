"""The generic backend: any Array-API namespace, through array-api-compat.

It serves every array that no faster backend claims (array-api-strict, PyTorch,
JAX, and NumPy when numba is absent).  Everything is plain array operations in
the inputs' own namespace and on their device, so nothing moves.  Exactness
comes from :mod:`l1backends.numerics`: differences are split exactly, sums are
carried as double words along a pairwise tree, and the result is rounded once.
It trades speed for that generality: several full-size temporaries per call.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..._typing import Array
from ...numerics import accumulate_dtype, compensated_sum, dd_divide, dd_value, two_sum
from ...semantics import Plan
from .. import out_declined

__all__ = ["ArrayAPIBackend", "backend"]


class _Call:
    """One call's namespace, device and the accumulation dtype."""

    def __init__(self, plan: Plan, input: Array) -> None:
        import array_api_compat

        self.plan = plan
        self.xp = array_api_compat.array_namespace(input)
        self.device = array_api_compat.device(input)
        self.acc_name = accumulate_dtype(self.xp)
        self.acc = getattr(self.xp, self.acc_name)

    def dtype(self, name: str) -> Any:
        return getattr(self.xp, name)

    def full(self, value: float) -> Array:
        return self.xp.asarray(value, dtype=self.acc, device=self.device)

    def cast(self, array: Array, name: str) -> Array:
        dtype = self.dtype(name)
        return array if array.dtype == dtype else self.xp.astype(array, dtype)

    def to_acc(self, array: Array, via: str) -> Array:
        """Cast ``array`` to the dtype ``via`` (rounding as the spec says), then exactly to acc."""
        return self.cast(self.cast(array, via), self.acc_name)

    def broadcast(self, array: Array) -> Array:
        shape = self.plan.shape
        return array if tuple(array.shape) == shape else self.xp.broadcast_to(array, shape)

    def differences(self, input: Array, target: Array) -> tuple[Array, ...]:
        """``input - target`` at full shape in acc: (high, low) for real, (re, im) for complex."""
        plan, xp = self.plan, self.xp
        x = self.broadcast(self.cast(input, plan.compute_dtype))
        y = self.broadcast(self.cast(target, plan.compute_dtype))
        if plan.is_complex:
            re = self.cast(xp.real(x), self.acc_name) - self.cast(xp.real(y), self.acc_name)
            im = self.cast(xp.imag(x), self.acc_name) - self.cast(xp.imag(y), self.acc_name)
            return re, im
        return two_sum(self.cast(x, self.acc_name), -self.cast(y, self.acc_name))

    def magnitudes(self, parts: tuple[Array, ...]) -> tuple[Array, Array]:
        """|input - target| as a double word (high, low)."""
        xp = self.xp
        if self.plan.is_complex:
            modulus = xp.hypot(*parts)
            return modulus, xp.zeros_like(modulus)
        high, low = parts
        return xp.abs(high), xp.where(high < 0, -low, low)

    def weight(self, weight: Array) -> Array:
        return self.broadcast(self.to_acc(weight, self.plan.result_dtype))

    def reduce(self, high: Array, low: Array) -> tuple[Array, Array]:
        """Sum double words over the plan's reduced axes."""
        plan, xp = self.plan, self.xp
        order = plan.kept_axes + plan.reduced_axes
        if order != tuple(range(len(order))):
            high = xp.permute_dims(high, order)
            low = xp.permute_dims(low, order)
        flat = (*plan.out_shape, plan.count)
        return compensated_sum(xp, xp.reshape(high, flat), xp.reshape(low, flat))

    def grad_output(self, grad_output: Array | float | None) -> Array | None:
        """The upstream gradient in acc, shaped to broadcast against the full shape."""
        if grad_output is None:
            return None
        xp, plan = self.xp, self.plan
        if not hasattr(grad_output, "shape"):
            grad_output = xp.asarray(
                grad_output, dtype=self.dtype(plan.result_dtype), device=self.device
            )
        value = self.to_acc(grad_output, plan.result_dtype)
        if value.ndim:
            value = xp.reshape(value, plan.keepdims_shape)
        return value

    def finish(self, array: Array, name: str) -> Array:
        """Cast to the result dtype and make sure a 0-d result is an array, not a scalar."""
        return self.xp.asarray(self.cast(array, name))


class ArrayAPIBackend:
    """L1 loss and subgradient with Array-API operations only."""

    name = "array-api"

    def can_run(self, plan: Plan) -> str | None:
        """Every plan but one with ``out=``: results are the namespace's own fresh arrays."""
        return out_declined(plan)

    def loss(self, plan: Plan, input: Array, target: Array, weight: Array | None) -> Array:
        """Return the loss described by ``plan``."""
        with np.errstate(all="ignore"):
            call = _Call(plan, input)
            parts = call.differences(input, target)
            return self._loss(call, parts, weight)[0]

    def grad(
        self,
        plan: Plan,
        input: Array,
        target: Array,
        weight: Array | None,
        grad_output: Array | float | None,
    ) -> Array:
        """Return the subgradient with respect to ``input`` described by ``plan``."""
        with np.errstate(all="ignore"):
            call = _Call(plan, input)
            parts = call.differences(input, target)
            weight_sum = None
            if plan.reduction == "mean" and weight is not None:
                weight_sum = self._weight_sum(call, weight)
            return self._grad(call, parts, weight, grad_output, weight_sum)

    def loss_and_grad(
        self,
        plan: Plan,
        input: Array,
        target: Array,
        weight: Array | None,
        grad_output: Array | float | None,
    ) -> tuple[Array, Array]:
        """Return ``(loss, grad)``, sharing the differences and the weight sum."""
        with np.errstate(all="ignore"):
            call = _Call(plan, input)
            parts = call.differences(input, target)
            loss, weight_sum = self._loss(call, parts, weight)
            return loss, self._grad(call, parts, weight, grad_output, weight_sum)

    def partials(
        self, plan: Plan, input: Array, target: Array, weight: Array | None
    ) -> tuple[Array, Array, Array | None, Array | None]:
        """Unrounded partial sums for composite backends such as Dask.

        Returns ``(high, low, weight_high, weight_low)``: Σ w·|d| and Σ w over the
        plan's reduced axes as double words in the accumulation dtype, of shape
        ``plan.out_shape``; the weight words are None when unweighted.
        """
        with np.errstate(all="ignore"):
            call = _Call(plan, input)
            high, low = call.magnitudes(call.differences(input, target))
            if weight is None:
                return (*call.reduce(high, low), None, None)
            w = call.weight(weight)
            return (*call.reduce(high * w, low * w), *self._weight_sum(call, weight))

    @staticmethod
    def _weight_sum(call: _Call, weight: Array) -> Array:
        w = call.weight(weight)
        return call.reduce(w, call.xp.zeros_like(w))

    def _loss(
        self, call: _Call, parts: tuple[Array, ...], weight: Array | None
    ) -> tuple[Array, tuple[Array, Array] | None]:
        plan, xp = call.plan, call.xp
        high, low = call.magnitudes(parts)
        weight_sum = None
        if weight is not None:
            w = call.weight(weight)
            high, low = high * w, low * w
        if plan.reduction == "none":
            return call.finish(dd_value(xp, high, low), plan.result_dtype), None
        total_high, total_low = call.reduce(high, low)
        if plan.reduction == "sum":
            value = dd_value(xp, total_high, total_low)
        elif weight is None:
            count = call.full(float(plan.count))
            value = dd_divide(xp, total_high, total_low, count, call.full(0.0), call.acc_name)
        else:
            weight_sum = self._weight_sum(call, weight)
            value = dd_divide(xp, total_high, total_low, *weight_sum, call.acc_name)
        return call.finish(value, plan.result_dtype), weight_sum

    def _grad(
        self,
        call: _Call,
        parts: tuple[Array, ...],
        weight: Array | None,
        grad_output: Array | float | None,
        weight_sum: tuple[Array, Array] | None,
    ) -> Array:
        plan, xp = call.plan, call.xp
        # The scale is g * (w / Σw): dividing the weight first keeps a tiny weight from
        # underflowing in g * w before the division brings it back to scale.
        weights = None if weight is None else call.weight(weight)
        if plan.reduction == "mean":
            if weight_sum is not None:
                divisor = xp.reshape(dd_value(xp, *weight_sum), plan.keepdims_shape)
            else:
                divisor = call.full(float(plan.count))
            weights = (call.full(1.0) if weights is None else weights) / divisor
        scale = call.grad_output(grad_output)
        if weights is not None:
            scale = weights if scale is None else scale * weights

        if plan.is_complex:
            re, im = parts
            modulus = xp.hypot(re, im)
            finite = xp.isfinite(modulus)
            safe = xp.where(modulus == 0, call.full(1.0), modulus)
            nan = call.full(math.nan)
            unit_re = xp.where(finite, re / safe, nan)
            unit_im = xp.where(finite, im / safe, nan)
            if scale is not None:
                unit_re, unit_im = unit_re * scale, unit_im * scale
            unit_re = xp.broadcast_to(unit_re, plan.shape)
            unit_im = xp.broadcast_to(unit_im, plan.shape)
            unit_re, unit_im = self._sum_back(call, unit_re), self._sum_back(call, unit_im)
            real = call.dtype(plan.result_dtype)
            complex_dtype = call.dtype(plan.compute_dtype)
            unit = xp.astype(xp.astype(unit_re, real), complex_dtype)
            imaginary = xp.astype(xp.astype(unit_im, real), complex_dtype)
            return xp.asarray(unit + imaginary * xp.asarray(1j, dtype=complex_dtype))

        high = parts[0]
        sign = xp.where(
            high > 0, call.full(1.0), xp.where(high < 0, call.full(-1.0), call.full(0.0))
        )
        sign = xp.where(xp.isnan(high), call.full(math.nan), sign)
        gradient = sign if scale is None else xp.broadcast_to(sign * scale, plan.shape)
        return call.finish(self._sum_back(call, gradient), plan.compute_dtype)

    @staticmethod
    def _sum_back(call: _Call, gradient: Array) -> Array:
        """Sum a full-shape gradient back to the input's shape (for ``broadcast=True``)."""
        plan, xp = call.plan, call.xp
        if not plan.input_broadcast:
            return gradient
        axes = plan.input_broadcast_axes
        kept = tuple(ax for ax in range(len(plan.shape)) if ax not in axes)
        moved = xp.permute_dims(gradient, kept + axes)
        count = math.prod(plan.shape[ax] for ax in axes)
        flat = xp.reshape(moved, (*(plan.shape[ax] for ax in kept), count))
        high, low = compensated_sum(xp, flat, xp.zeros_like(flat))
        return xp.reshape(dd_value(xp, high, low), plan.input_shape)


backend = ArrayAPIBackend()
