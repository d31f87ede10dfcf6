"""Deliberately wrong backends, registered only inside the suite's meta-tests.

Each wraps the generic backend and breaks one rule, the way real backends go
wrong.  ``test_meta.py`` registers them (NumPy arrays only), runs the suite's
properties against them and asserts that the suite FAILS them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._backends.array_api._backend import ArrayAPIBackend
from .._typing import Array
from ..semantics import Plan, make_plan

__all__ = [
    "DeviceBlindCache",
    "DropsGradOutput",
    "Float32Accumulation",
    "GradientWrtTarget",
    "IgnoresWeightInMeanGradient",
    "MutatesInput",
    "NaiveFloat64Sum",
    "NanGradientIsZero",
    "NoComplex",
    "Nondeterministic",
    "ReusesNoneBuffer",
    "TieGradientIsOne",
    "WrongLossDtype",
    "WrongWeightSumOffset",
]


def _full(plan: Plan, array: Array, dtype: str) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.broadcast_to(np.asarray(array).astype(dtype), plan.shape)


class TieGradientIsOne(ArrayAPIBackend):
    """Uses sign(0) = +1, as some frameworks do: the tie gradient is the scale, not 0."""

    def grad(self, plan, input, target, weight, grad_output):
        right = super().grad(plan, input, target, weight, grad_output)
        if plan.input_shape != plan.target_shape:
            return right
        x = np.asarray(input).astype(plan.compute_dtype)
        below = (x - 1).astype(plan.compute_dtype)  # input > target everywhere: sign +1
        plus_one = super().grad(plan, input, below, weight, grad_output)
        ties = (x == np.asarray(target).astype(plan.compute_dtype)) & np.isfinite(x)
        return np.where(ties, plus_one, right)

    def loss_and_grad(self, plan, input, target, weight, grad_output):
        return self.loss(plan, input, target, weight), self.grad(
            plan, input, target, weight, grad_output
        )


class Float32Accumulation(ArrayAPIBackend):
    """Sums float32 losses in float32 (NumPy's pairwise sum), not float64."""

    def loss(self, plan, input, target, weight):
        if plan.result_dtype != "float32" or plan.reduction == "none":
            return super().loss(plan, input, target, weight)
        with np.errstate(all="ignore"):
            x = _full(plan, input, plan.compute_dtype)
            y = _full(plan, target, plan.compute_dtype)
            terms = np.abs(x - y).astype(np.float32)
            if weight is not None:
                w = _full(plan, weight, "float32")
                terms = terms * w
            total = terms.sum(axis=plan.reduced_axes, dtype=np.float32)
            if plan.reduction == "sum":
                return np.asarray(total)
            divisor = (
                np.float32(plan.count)
                if weight is None
                else w.sum(axis=plan.reduced_axes, dtype=np.float32)
            )
            return np.asarray(total / divisor, dtype=np.float32)


class NaiveFloat64Sum(ArrayAPIBackend):
    """np.sum without compensation for float64 (honest only with a looser ulp bound)."""

    def loss(self, plan, input, target, weight):
        if plan.result_dtype != "float64" or plan.reduction == "none":
            return super().loss(plan, input, target, weight)
        with np.errstate(all="ignore"):
            terms = np.abs(
                _full(plan, input, plan.compute_dtype) - _full(plan, target, plan.compute_dtype)
            )
            if weight is not None:
                w = _full(plan, weight, "float64")
                terms = terms * w
            total = terms.sum(axis=plan.reduced_axes)
            if plan.reduction == "sum":
                return np.asarray(total)
            divisor = plan.count if weight is None else w.sum(axis=plan.reduced_axes)
            return np.asarray(total / divisor)


class NanGradientIsZero(ArrayAPIBackend):
    """Returns 0 where the gradient is NaN (torch's sign(NaN) = 0)."""

    def grad(self, plan, input, target, weight, grad_output):
        gradient = super().grad(plan, input, target, weight, grad_output)
        return np.where(np.isnan(gradient), 0, gradient).astype(gradient.dtype)


class GradientWrtTarget(ArrayAPIBackend):
    """Returns sign(target - input): the gradient with respect to the wrong argument."""

    def grad(self, plan, input, target, weight, grad_output):
        return -super().grad(plan, input, target, weight, grad_output)


class IgnoresWeightInMeanGradient(ArrayAPIBackend):
    """Uses 1/count instead of w/Σw for the weighted-mean gradient."""

    def grad(self, plan, input, target, weight, grad_output):
        if plan.reduction == "mean" and weight is not None:
            plain = make_plan(
                plan.input_shape,
                plan.compute_dtype,
                plan.target_shape,
                plan.compute_dtype,
                "mean",
                axis=plan.reduced_axes,
                broadcast=True,
                grad_output_shape=plan.grad_output_shape,
            )
            return super().grad(plain, input, target, None, grad_output)
        return super().grad(plan, input, target, weight, grad_output)


class DropsGradOutput(ArrayAPIBackend):
    """Ignores ``grad_output`` (treats it as 1)."""

    def grad(self, plan, input, target, weight, grad_output):
        return super().grad(plan, input, target, weight, None)


class ReusesNoneBuffer(ArrayAPIBackend):
    """Returns a view of one reused buffer for "none", so two results alias each other."""

    def __init__(self) -> None:
        self._buffers: dict[tuple, np.ndarray] = {}

    def loss(self, plan, input, target, weight):
        result = super().loss(plan, input, target, weight)
        if plan.reduction != "none":
            return result
        buffer = self._buffers.setdefault((result.shape, result.dtype.str), np.empty_like(result))
        buffer[...] = result
        return buffer[...]


class MutatesInput(ArrayAPIBackend):
    """Computes the difference in place, in the input's own memory."""

    def loss(self, plan, input, target, weight):
        if plan.input_shape == plan.shape and input.dtype.name == plan.compute_dtype:
            with np.errstate(all="ignore"):
                np.subtract(input, target, out=input, casting="unsafe")
            return super().loss(plan, input, np.zeros_like(input), weight)
        return super().loss(plan, input, target, weight)


class WrongLossDtype(ArrayAPIBackend):
    """Returns float64 losses for float32 and float16 inputs."""

    def loss(self, plan, input, target, weight):
        return np.asarray(super().loss(plan, input, target, weight), dtype=np.float64)


class NoComplex(ArrayAPIBackend):
    """Raises on complex inputs (while its capabilities claim complex dtypes)."""

    def loss(self, plan, input, target, weight):
        if plan.is_complex:
            raise TypeError("complex inputs are not implemented")
        return super().loss(plan, input, target, weight)


class Nondeterministic(ArrayAPIBackend):
    """Returns the loss or its neighbour at random (a race between partial sums)."""

    def __init__(self) -> None:
        self._random = np.random.default_rng()

    def loss(self, plan, input, target, weight):
        result = super().loss(plan, input, target, weight)
        nudge = self._random.integers(0, 2, size=result.shape).astype(bool)
        return np.asarray(np.where(nudge, np.nextafter(result, math.inf), result), result.dtype)


class WrongWeightSumOffset(ArrayAPIBackend):
    """Reads Σw for the weighted mean's gradient from the wrong offset (its zero low word).

    Once a real bug of the numba-cuda kernels: the loss was right, the gradient ±inf.
    """

    def grad(self, plan, input, target, weight, grad_output):
        right = super().grad(plan, input, target, weight, grad_output)
        if not plan.needs_weight_sum:
            return right
        with np.errstate(all="ignore"):  # w / 0: what dividing by the low word gives
            return np.where(right != 0, right * np.inf, right).astype(right.dtype)

    def loss_and_grad(self, plan, input, target, weight, grad_output):
        return self.loss(plan, input, target, weight), self.grad(
            plan, input, target, weight, grad_output
        )


class DeviceBlindCache(ArrayAPIBackend):
    """Caches the device of a plan's first call and puts every later result there.

    A cache keyed on shapes and dtypes but not devices: a second device's call gets
    its results on the first device.
    """

    def __init__(self) -> None:
        self._devices: dict[Plan, Any] = {}

    def _placed(self, plan: Plan, input: Array, result: Array) -> Array:
        import array_api_compat

        device = self._devices.setdefault(plan, array_api_compat.device(input))
        xp = array_api_compat.array_namespace(result)
        return xp.asarray(result, device=device, copy=True)

    def loss(self, plan, input, target, weight):
        return self._placed(plan, input, super().loss(plan, input, target, weight))

    def grad(self, plan, input, target, weight, grad_output):
        return self._placed(plan, input, super().grad(plan, input, target, weight, grad_output))

    def loss_and_grad(self, plan, input, target, weight, grad_output):
        loss, grad = super().loss_and_grad(plan, input, target, weight, grad_output)
        return self._placed(plan, input, loss), self._placed(plan, input, grad)


TIE_GRADIENT = TieGradientIsOne()
FLOAT32_ACCUMULATION = Float32Accumulation()
NAIVE_FLOAT64_SUM = NaiveFloat64Sum()
NAN_GRADIENT_ZERO = NanGradientIsZero()
GRADIENT_WRT_TARGET = GradientWrtTarget()
IGNORES_WEIGHT = IgnoresWeightInMeanGradient()
DROPS_GRAD_OUTPUT = DropsGradOutput()
REUSES_NONE_BUFFER = ReusesNoneBuffer()
MUTATES_INPUT = MutatesInput()
WRONG_LOSS_DTYPE = WrongLossDtype()
NO_COMPLEX = NoComplex()
NONDETERMINISTIC = Nondeterministic()
WRONG_WEIGHT_SUM_OFFSET = WrongWeightSumOffset()
DEVICE_BLIND_CACHE = DeviceBlindCache()
