"""The generic backend: any Array-API namespace, through array-api-compat.

It serves every array that no faster backend claims (array-api-strict, and PyTorch,
JAX or NumPy when forced, or when their own backends cannot run).  Everything is
plain array operations in the inputs' own namespace and on their device, so nothing
moves.  Exactness comes from :mod:`l1backends.numerics` and from the width of the
accumulation dtype:

* **Wide** calls (float16, float32 and complex64 results, accumulated in float64):
  each ``|x - y|`` is formed in float64 (relative error 2**-53) and summed there.
  Sums of at most 2**25 terms are one namespace ``sum`` (even a sequential sum is
  then within 2**-28 ulp of the result dtype per unit of ``Σ|terms|``); longer ones
  are summed in two levels.  The result is rounded once.  This costs about three
  full-size passes more than the naive ``mean(abs(x - y))``, and on namespaces with
  mutable arrays (NumPy, CuPy, PyTorch) the float64 temporaries are updated in place.
* **Compensated** calls (float64 results, or float32 under JAX without
  ``jax_enable_x64``, where the accumulation dtype is no wider than the result):
  differences are split exactly (TwoSum), sums are carried as double words along a
  pairwise tree, and the mean divides by the count as a double word.

Gradients are the sign of ``x - y`` (from comparisons: exact, NaN where either is
NaN) times a scale computed once in float64 and rounded once.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..._typing import Array
from ...numerics import accumulate_dtype, dd_divide, dd_value, two_sum
from ...semantics import Plan
from .. import out_declined

__all__ = ["WIDE_SUM_LIMIT", "ArrayAPIBackend", "backend"]

#: Reductions of at most this many terms are one namespace ``sum`` in float64.
WIDE_SUM_LIMIT = 1 << 25
_BLOCK = 1 << 12


def _folded_sum(xp: Any, high: Array, low: Array) -> tuple[Array, Array]:
    """Sum double words over the last axis, keeping every rounding error (see numerics).

    Like :func:`l1backends.numerics.compensated_sum`, but it adds the first half of
    the terms to the second half, so that every step works on contiguous slices
    (no strided gathers, no padding copies); an odd term out is carried aside.
    """
    m = high.shape[-1]
    if m == 0:
        zeros = xp.sum(high, axis=-1)
        return zeros, zeros
    carry: tuple[Array, Array] | None = None
    while m > 1:
        if m % 2:
            last = (high[..., m - 1], low[..., m - 1])
            if carry is None:
                carry = last
            else:
                total, error = two_sum(carry[0], last[0])
                carry = (total, (carry[1] + last[1]) + error)
            m -= 1
            high, low = high[..., :m], low[..., :m]
        half = m // 2
        high, error = two_sum(high[..., :half], high[..., half:])
        low = (low[..., :half] + low[..., half:]) + error
        m = half
    high, low = high[..., 0], low[..., 0]
    if carry is not None:
        total, error = two_sum(high, carry[0])
        high, low = total, (low + carry[1]) + error
    return high, low


class _Call:
    """One call's namespace, device, accumulation dtype and whether it may update in place."""

    def __init__(self, plan: Plan, input: Array, target: Array | None = None) -> None:
        import array_api_compat

        self.plan = plan
        self.xp = array_api_compat.array_namespace(input)
        self.device = array_api_compat.device(input)
        self.acc_name = accumulate_dtype(self.xp)
        self.acc = getattr(self.xp, self.acc_name)
        #: float64 holds float16/float32 differences and their sums with room to spare.
        self.wide = self.acc_name == "float64" and plan.result_dtype != "float64"
        # Arrays this backend creates may be updated in place: NumPy and CuPy arrays, and
        # torch tensors outside autograd.  (JAX and array-api-strict make new arrays.)
        self.mutable = (
            array_api_compat.is_numpy_namespace(self.xp)
            or array_api_compat.is_cupy_namespace(self.xp)
            or (
                array_api_compat.is_torch_namespace(self.xp)
                and not getattr(input, "requires_grad", False)
                and not getattr(target, "requires_grad", False)
            )
        )
        self.jax = array_api_compat.is_jax_namespace(self.xp)

    def dtype(self, name: str) -> Any:
        return getattr(self.xp, name)

    def full(self, value: float, name: str | None = None) -> Array:
        dtype = self.acc if name is None else self.dtype(name)
        return self.xp.asarray(value, dtype=dtype, device=self.device)

    def cast(self, array: Array, name: str) -> Array:
        dtype = self.dtype(name)
        return array if array.dtype == dtype else self.xp.astype(array, dtype)

    def to_acc(self, array: Array, via: str) -> Array:
        """Cast ``array`` to the dtype ``via`` (rounding as the spec says), then exactly to acc."""
        return self.cast(self.cast(array, via), self.acc_name)

    def broadcast(self, array: Array) -> Array:
        shape = self.plan.shape
        return array if tuple(array.shape) == shape else self.xp.broadcast_to(array, shape)

    # ----- the wide path -------------------------------------------------------------------

    def wide_magnitudes(self, input: Array, target: Array) -> Array:
        """``|input - target|`` at full shape in float64: a fresh array, exact to 2**-53."""
        plan, xp = self.plan, self.xp
        x = self.cast(input, plan.compute_dtype)
        y = self.cast(target, plan.compute_dtype)
        if plan.is_complex:
            re = self.cast(xp.real(x), self.acc_name) - self.cast(xp.real(y), self.acc_name)
            im = self.cast(xp.imag(x), self.acc_name) - self.cast(xp.imag(y), self.acc_name)
            return self.broadcast(xp.hypot(re, im))
        difference = xp.astype(x, self.acc)  # a copy: astype copies by default
        if self.mutable and tuple(difference.shape) == plan.shape:
            difference -= y  # promotes y on the fly: no float64 copy of the target
        else:
            difference = difference - (self.cast(y, self.acc_name) if self.jax else y)
        return self.broadcast(self.absolute(difference))

    def absolute(self, array: Array) -> Array:
        if self.mutable:
            if isinstance(array, np.ndarray):
                return np.abs(array, out=array)
            in_place = getattr(array, "abs_", None)  # torch
            if in_place is not None:
                return in_place()
        return self.xp.abs(array)

    def multiply(self, array: Array, factor: Array) -> Array:
        """``array * factor``, in place when ``array`` is ours and has the full shape."""
        if self.mutable and tuple(array.shape) == self.plan.shape and array.dtype == factor.dtype:
            array *= factor
            return array
        return array * factor

    def wide_sum(self, array: Array) -> Array:
        """Sum a full-shape float64 array over the reduced axes."""
        plan, xp = self.plan, self.xp
        axes = plan.reduced_axes
        if not axes:
            return array
        if plan.count <= WIDE_SUM_LIMIT:
            return xp.sum(array, axis=None if len(axes) == len(plan.shape) else axes)
        # Two levels, so that the error of any summation order stays far below an ulp.
        order = plan.kept_axes + axes
        if order != tuple(range(len(order))):
            array = xp.permute_dims(array, order)
        flat = xp.reshape(array, (*plan.out_shape, plan.count))
        blocks = plan.count // _BLOCK
        head = xp.reshape(flat[..., : blocks * _BLOCK], (*plan.out_shape, blocks, _BLOCK))
        return xp.sum(xp.sum(head, axis=-1), axis=-1) + xp.sum(
            flat[..., blocks * _BLOCK :], axis=-1
        )

    # ----- the compensated path ------------------------------------------------------------

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
        return _folded_sum(xp, xp.reshape(high, flat), xp.reshape(low, flat))

    def count_word(self) -> tuple[Array, Array]:
        """The count as a double word of acc: exact even where acc is float32 (JAX without x64)."""
        count = self.plan.count
        high = float(np.asarray(count, dtype=self.acc_name))
        return self.full(high), self.full(float(count - int(high)) if math.isfinite(high) else 0.0)

    # ----- gradients -----------------------------------------------------------------------

    def sign(self, input: Array, target: Array) -> Array:
        """sign(input - target) in the result dtype: ±1, 0 at ties, NaN where either is NaN."""
        plan, xp = self.plan, self.xp
        x = self.cast(input, plan.compute_dtype)
        y = self.cast(target, plan.compute_dtype)
        real = plan.result_dtype
        if self.jax:
            # Comparisons stay exact where XLA flushes subnormal differences to zero; XLA
            # fuses them into one loop.  A tie of infinities is inf - inf = NaN.
            one, zero, nan = self.full(1.0, real), self.full(0.0, real), self.full(math.nan, real)
            tie = (x == y) & xp.isfinite(x)
            return xp.where(x > y, one, xp.where(x < y, -one, xp.where(tie, zero, nan)))
        # IEEE subtraction with gradual underflow keeps the sign and zero-ness of x - y;
        # array-api-compat's sign propagates NaN (torch's own gives 0 there).
        return self.cast(xp.sign(x - y), real)

    def number(self, value: Any) -> float:
        """A Python number or 0-d array rounded to the result dtype, as a float."""
        with np.errstate(all="ignore"):
            return float(np.asarray(float(value), dtype=self.plan.result_dtype))

    def exact_scale(self, grad_output: Array | float | None) -> Array | None:
        """The real, unweighted scale in the result dtype, rounded once; None for 1.

        ``sign * scale`` is then exact, since the sign is ±1, 0 or NaN.
        """
        plan, xp = self.plan, self.xp
        mean = plan.averages
        real = plan.result_dtype
        if grad_output is None or not hasattr(grad_output, "shape"):
            g = 1.0 if grad_output is None else self.number(grad_output)
            if not mean:
                return None if grad_output is None else self.full(g, real)
            return self.full(g / plan.count if plan.count else math.nan, real)
        g = grad_output
        if not mean:
            value = self.cast(g, real)
        elif self.acc_name == "float64":
            value = self.cast(self.to_acc(g, real) / self.full(float(plan.count)), real)
        else:  # float32 words (JAX without x64): the count as a double word
            g = self.to_acc(g, real)
            value = dd_divide(xp, g, xp.zeros_like(g), *self.count_word(), self.acc_name)
        return xp.reshape(value, plan.keepdims_shape) if value.ndim else value

    def acc_scale(
        self,
        weight: Array | None,
        grad_output: Array | float | None,
        weight_sum: tuple[Array, Array] | None,
    ) -> Array | None:
        """The scale in acc, shaped to broadcast against the full shape; None for 1."""
        plan, xp = self.plan, self.xp
        # The scale is g * (w / Σw): dividing the weight first keeps a tiny weight from
        # underflowing in g * w before the division brings it back to scale.
        weights = None if weight is None else self.weight(weight)
        if plan.averages:
            if weights is None:
                weights = self.full(1.0 / plan.count if plan.count else math.nan)
            else:  # the callers pass Σw for a weighted mean
                assert weight_sum is not None
                weights = weights / xp.reshape(dd_value(xp, *weight_sum), plan.keepdims_shape)
        scale = None
        if grad_output is not None:
            if hasattr(grad_output, "shape"):
                scale = self.to_acc(grad_output, plan.result_dtype)
                if scale.ndim:
                    scale = xp.reshape(scale, plan.keepdims_shape)
            else:
                scale = self.full(self.number(grad_output))
        if weights is not None:
            scale = weights if scale is None else scale * weights
        return scale

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
            call = _Call(plan, input, target)
            if call.wide:
                return self._wide_loss(call, input, target, weight)[0]
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
            call = _Call(plan, input, target)
            weight_sum = None
            if plan.averages and weight is not None:
                weight_sum = self._weight_sum(call, weight)
            return self._grad(call, input, target, weight, grad_output, weight_sum)

    def loss_and_grad(
        self,
        plan: Plan,
        input: Array,
        target: Array,
        weight: Array | None,
        grad_output: Array | float | None,
    ) -> tuple[Array, Array]:
        """Return ``(loss, grad)``, sharing the weight sum."""
        with np.errstate(all="ignore"):
            call = _Call(plan, input, target)
            if call.wide:
                loss, weight_sum = self._wide_loss(call, input, target, weight)
            else:
                loss, weight_sum = self._loss(call, call.differences(input, target), weight)
            return loss, self._grad(call, input, target, weight, grad_output, weight_sum)

    def partials(
        self, plan: Plan, input: Array, target: Array, weight: Array | None
    ) -> tuple[Array, Array, Array | None, Array | None]:
        """Unrounded partial sums for composite backends such as Dask.

        Returns ``(high, low, weight_high, weight_low)``: Σ w·|d| and Σ w over the
        plan's reduced axes as double words in the accumulation dtype, of shape
        ``plan.out_shape``; the weight words are None when unweighted.
        """
        with np.errstate(all="ignore"):
            call = _Call(plan, input, target)
            high, low = call.magnitudes(call.differences(input, target))
            if weight is None:
                return (*call.reduce(high, low), None, None)
            w = call.weight(weight)
            return (*call.reduce(high * w, low * w), *self._weight_sum(call, weight))

    # ----- loss ----------------------------------------------------------------------------

    @staticmethod
    def _weight_sum(call: _Call, weight: Array) -> tuple[Array, Array]:
        w = call.weight(weight)
        if call.wide:
            total = call.wide_sum(w)
            return total, call.xp.zeros_like(total)
        return call.reduce(w, call.xp.zeros_like(w))

    def _wide_loss(
        self, call: _Call, input: Array, target: Array, weight: Array | None
    ) -> tuple[Array, tuple[Array, Array] | None]:
        plan, xp = call.plan, call.xp
        terms = call.wide_magnitudes(input, target)
        if weight is not None:
            terms = call.multiply(terms, call.to_acc(weight, plan.result_dtype))
        if plan.elementwise:
            return call.finish(terms, plan.result_dtype), None
        total = call.wide_sum(terms)
        weight_sum = None
        if plan.averages:
            if weight is None:
                total = total / call.full(float(plan.count))
            else:
                weight_sum = self._weight_sum(call, weight)
                total = total / weight_sum[0]
        return call.finish(xp.asarray(total), plan.result_dtype), weight_sum

    def _loss(
        self, call: _Call, parts: tuple[Array, ...], weight: Array | None
    ) -> tuple[Array, tuple[Array, Array] | None]:
        plan, xp = call.plan, call.xp
        high, low = call.magnitudes(parts)
        weight_sum = None
        if weight is not None:
            w = call.weight(weight)
            high, low = high * w, low * w
        if plan.elementwise:
            return call.finish(dd_value(xp, high, low), plan.result_dtype), None
        total_high, total_low = call.reduce(high, low)
        if not plan.averages:
            value = dd_value(xp, total_high, total_low)
        elif weight is None:
            value = dd_divide(xp, total_high, total_low, *call.count_word(), call.acc_name)
        else:
            weight_sum = self._weight_sum(call, weight)
            value = dd_divide(xp, total_high, total_low, *weight_sum, call.acc_name)
        return call.finish(value, plan.result_dtype), weight_sum

    # ----- gradient ------------------------------------------------------------------------

    def _grad(
        self,
        call: _Call,
        input: Array,
        target: Array,
        weight: Array | None,
        grad_output: Array | float | None,
        weight_sum: tuple[Array, Array] | None,
    ) -> Array:
        plan = call.plan
        if plan.is_complex:
            scale = call.acc_scale(weight, grad_output, weight_sum)
            return self._complex_grad(call, call.differences(input, target), scale)
        sign = call.sign(input, target)
        if weight is None and not plan.input_broadcast:
            scale = call.exact_scale(grad_output)
            gradient = sign if scale is None else sign * scale
            return call.finish(call.broadcast(gradient), plan.compute_dtype)
        scale = call.acc_scale(weight, grad_output, weight_sum)
        gradient = call.cast(sign, call.acc_name)
        if scale is not None:
            gradient = gradient * scale
        gradient = self._sum_back(call, call.broadcast(gradient))
        return call.finish(gradient, plan.compute_dtype)

    def _complex_grad(self, call: _Call, parts: tuple[Array, ...], scale: Array | None) -> Array:
        plan, xp = call.plan, call.xp
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
        # The imaginary unit on the inputs' device (array-api-strict has several).
        i = xp.asarray(1j, dtype=complex_dtype, device=call.device)
        return xp.asarray(unit + imaginary * i)

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
        high, low = _folded_sum(xp, flat, xp.zeros_like(flat))
        return xp.reshape(dd_value(xp, high, low), plan.input_shape)


backend = ArrayAPIBackend()
