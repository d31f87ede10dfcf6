"""The numba-CPU backend: NumPy arrays, one fused pass at memory bandwidth.

Each call reads input and target once: "none" writes its output directly, and
``loss_and_grad`` sums the loss while it writes the gradient.  Sums are carried
as float64 double words and rounded once.  Work is split into tasks that depend on
the problem size alone, combined in a fixed order, so results are bitwise
identical for any ``NUMBA_NUM_THREADS``.

Contiguous float32 and float64 operands of one dtype take the flat kernels; every
other layout, dtype, byte order, weight and broadcast takes the general kernel
(:mod:`._general`), which reads each array in place.  No temporary is larger than
the output or O(chunks).
"""

from __future__ import annotations

import functools
import math
import warnings
from fractions import Fraction
from typing import Any, Literal

import numpy as np

from ..._typing import Array
from ...semantics import Finish, GradScale, Plan
from .._paths import KernelPaths
from . import _kernels as kern
from ._cache import UNCACHED
from ._general import PARALLEL_MIN, empty_loss, general_call, partial_words, threads_for
from ._operands import chunking
from ._threads import run_tasks

__all__ = ["PARALLEL_MIN", "PATHS", "NumbaCPUBackend", "backend"]

#: The kernel paths this backend takes (the conformance path matrix visits each).
PATHS = KernelPaths(
    {
        "flat-serial",
        "flat-parallel",
        "prepared",
        "general-serial",
        "general-parallel",
        "row-blocks",
        "row-chunks",
        "sum-back",
        "weight-sum",
        "overflow-rescale",
        "plain-pass",
    }
)

if UNCACHED:
    warnings.warn(
        "numba cannot cache the numba-cpu kernels here, so they compile again in every "
        f"process ({UNCACHED[0]}); set NUMBA_CACHE_DIR to a writable directory",
        RuntimeWarning,
        stacklevel=2,
    )

_FLAT_DTYPES = frozenset({np.dtype("float32"), np.dtype("float64")})
# What a call wants: the loss, the gradient, or both.
_LOSS, _GRAD, _BOTH = (True, False), (False, True), (True, True)
# What serial flat passes write their chunks' partial sums into: nothing.
_NO_PARTIALS = np.empty((0, 2))
_PREPARED_LIMIT = 1024


def _is_flat(plan: Plan, input: np.ndarray, target: np.ndarray, weight: Any) -> bool:
    """Whether the flat kernels apply: one float32/float64 dtype, contiguous, same order."""
    if weight is not None or plan.input_broadcast or (plan.out_shape and not plan.elementwise):
        return False
    if input.dtype != target.dtype or input.dtype not in _FLAT_DTYPES:
        return False
    if input.shape != target.shape:
        return False
    both_c = input.flags.c_contiguous and target.flags.c_contiguous
    return both_c or (input.flags.f_contiguous and target.flags.f_contiguous)


def _prepared_key(
    want: tuple[bool, bool], plan: Plan, input: np.ndarray, target: np.ndarray
) -> tuple[Any, ...]:
    """What a prepared small call depends on beyond its plan, whose dtypes are names only.

    The dtypes themselves carry the byte order: a big-endian target of the same plan
    must not find a native call's flat kernel.
    """
    return (want, plan, input.dtype, target.dtype, input.strides, target.strides)


def _fits_flat(out: np.ndarray | None, input: np.ndarray) -> bool:
    """Whether an ``out=`` buffer can take the flat kernels' writes (the inputs' order)."""
    if out is None or out.ndim == 0:
        return True
    if out.dtype.isnative and input.flags.c_contiguous and out.flags.c_contiguous:
        return True
    return out.dtype.isnative and input.flags.f_contiguous and out.flags.f_contiguous


def _flat_view(array: np.ndarray) -> np.ndarray:
    return _readable(array.reshape(-1) if array.flags.c_contiguous else array.ravel(order="K"))


class _Alias:
    """Exposes an array's memory through the array interface, keeping the array alive."""

    def __init__(self, array: np.ndarray) -> None:
        interface = dict(array.__array_interface__)
        interface["data"] = (interface["data"][0], False)
        self.__array_interface__ = interface
        self.owner = array


def _readable(array: np.ndarray) -> np.ndarray:
    """A read-only input as a writeable alias of the same memory, which the kernels only read.

    numba types read-only arrays apart, so each kernel would compile twice; inputs are
    never written, so one type serves both.
    """
    if array.flags.writeable:
        return array
    return np.asarray(_Alias(array))


def _order(input: np.ndarray) -> Literal["C", "F"]:
    """The order of fresh outputs: Fortran for Fortran-ordered inputs, else C."""
    fortran = input.ndim > 1 and input.flags.f_contiguous and not input.flags.c_contiguous
    return "F" if fortran else "C"


def _rounded(value: Fraction, dtype: str) -> float:
    """An exact value rounded once to ``dtype`` (float32 or float64), as a float."""
    nearest = float(value)  # correctly rounded to float64
    if dtype == "float64" or not math.isfinite(nearest) or value == Fraction(nearest):
        return float(np.asarray(nearest, dtype=dtype))
    single = float(np.float32(nearest))
    step = nearest - single  # exact: within one float32 spacing
    other = single + 2 * step
    # A float64 exactly halfway between two float32 values: the exact value decides.
    if step and float(np.float32(other)) == other and (value > Fraction(nearest)) == (step > 0):
        return other
    return single


@functools.lru_cache(maxsize=1024)  # exact fractions cost microseconds; loops repeat plans
def _flat_scale(plan: Plan, g: float) -> float:
    """The flat gradient's |element|: g, or g / count rounded once to the compute dtype."""
    if plan.grad_scale is GradScale.PLAIN or not plan.count:
        return g
    if not math.isfinite(g):
        return g / plan.count
    return _rounded(Fraction(g) / plan.count, plan.result_dtype)


def _rounded_scalar(value: Any, dtype: str) -> float:
    """A scalar ``grad_output`` (None means 1) rounded to the result dtype, as a float."""
    if value is None:
        return 1.0
    with np.errstate(over="ignore"):
        return float(np.asarray(value, dtype=dtype))


class NumbaCPUBackend:
    """L1 loss and subgradient for NumPy arrays with fused numba kernels."""

    name = "numba-cpu"
    paths = PATHS

    def __init__(self) -> None:
        # Prepared calls for small contiguous inputs, where Python work would otherwise
        # cost more than the pass itself: keyed by operation, plan, dtype and strides.
        self._prepared: dict[tuple[Any, ...], _Prepared] = {}

    def can_run(self, plan: Plan) -> str | None:
        """Every plan: any dtype the spec supports, any layout, any number of dimensions."""
        return None

    # ----- protocol -----------------------------------------------------------------------

    def loss(
        self,
        plan: Plan,
        input: Array,
        target: Array,
        weight: Array | None,
        out: Array | None = None,
    ) -> Array:
        """Return the loss described by ``plan`` (written into ``out`` when given)."""
        if weight is None and _fits_flat(out, input):  # small calls: a lookup, then the kernel
            prepared = self._prepared.get(_prepared_key(_LOSS, plan, input, target))
            if prepared is not None:
                return prepared(input, target, out)[0]
        return self._run(plan, input, target, weight, None, _LOSS, out)[0]

    def grad(
        self,
        plan: Plan,
        input: Array,
        target: Array,
        weight: Array | None,
        grad_output: Array | float | None,
        out: Array | None = None,
    ) -> Array:
        """Return the subgradient with respect to ``input`` (written into ``out`` when given)."""
        if weight is None and grad_output is None and _fits_flat(out, input):
            prepared = self._prepared.get(_prepared_key(_GRAD, plan, input, target))
            if prepared is not None:
                return prepared(input, target, out)[1]
        return self._run(plan, input, target, weight, grad_output, _GRAD, out)[1]

    def loss_and_grad(
        self,
        plan: Plan,
        input: Array,
        target: Array,
        weight: Array | None,
        grad_output: Array | float | None,
        out: Array | None = None,
    ) -> tuple[Array, Array]:
        """Return ``(loss, grad)`` from one pass over input and target (grad into ``out``)."""
        if weight is None and grad_output is None and _fits_flat(out, input):
            prepared = self._prepared.get(_prepared_key(_BOTH, plan, input, target))
            if prepared is not None:
                return prepared(input, target, out)
        return self._run(plan, input, target, weight, grad_output, _BOTH, out)

    def partials(
        self, plan: Plan, input: Array, target: Array, weight: Array | None
    ) -> tuple[Array, Array, Array | None, Array | None]:
        """Unrounded float64 double words of Σ w·|d| and Σ w over the reduced axes."""
        if plan.size and not plan.out_shape and _is_flat(plan, input, target, weight):
            PATHS.visit("flat-parallel" if threads_for(plan.size) > 1 else "flat-serial")
            _, high, low = self._flat(plan, input, target, None, None, 1.0, Finish.SUM)
            return np.array(high), np.array(low), None, None
        words = partial_words(plan, input, target, weight, PATHS)
        parts = [words[:, k].reshape(plan.out_shape) for k in range(4)]
        if weight is None:
            return parts[0], parts[1], None, None
        return parts[0], parts[1], parts[2], parts[3]

    # ----- dispatch -----------------------------------------------------------------------

    def _run(
        self,
        plan: Plan,
        input: np.ndarray,
        target: np.ndarray,
        weight: Any,
        grad_output: Any,
        want: tuple[bool, bool],
        out: np.ndarray | None,
    ) -> tuple[Any, Any]:
        """Run one call; ``out`` receives the gradient when one is wanted, else the loss."""
        array_g = grad_output is not None and np.ndim(grad_output) > 0
        if not array_g and _is_flat(plan, input, target, weight) and _fits_flat(out, input):
            return self._flat_call(plan, input, target, grad_output, want, out)
        outputs = (out, None) if want == (True, False) else (None, out)
        return general_call(plan, input, target, weight, grad_output, want, PATHS, outputs)

    @staticmethod
    def _flat(
        plan: Plan,
        input: np.ndarray,
        target: np.ndarray,
        out: np.ndarray | None,
        gr: np.ndarray | None,
        scale: float,
        finish: int,
    ) -> tuple[float, float, float]:
        nchunks, chunk = chunking(plan.size)
        args = (
            _flat_view(input),
            _flat_view(target),
            None if out is None else _flat_view(out),
            None if gr is None else _flat_view(gr),
            scale,
            (nchunks, chunk, int(finish)),
        )
        threads = threads_for(plan.size)
        if threads == 1:
            return kern.flat_tasks(0, nchunks, *args, _NO_PARTIALS)
        partials = np.empty((nchunks, 2))
        run_tasks(nchunks, threads, kern.flat_tasks, *args, partials)
        return kern.flat_finish(partials, int(finish), plan.size, input.itemsize)

    def _flat_call(
        self,
        plan: Plan,
        input: np.ndarray,
        target: np.ndarray,
        grad_output: Any,
        want: tuple[bool, bool],
        out: np.ndarray | None,
    ) -> tuple[Any, Any]:
        want_loss, want_grad = want
        if plan.size < PARALLEL_MIN and grad_output is None:
            key = _prepared_key(want, plan, input, target)
            prepared = self._prepared.get(key)
            if prepared is None:
                if len(self._prepared) >= _PREPARED_LIMIT:
                    self._prepared.clear()
                prepared = _Prepared(plan, input, want, self.checked_loss)
                self._prepared[key] = prepared
            return prepared(input, target, out)
        PATHS.visit("flat-parallel" if threads_for(plan.size) > 1 else "flat-serial")
        result, order = plan.result_dtype, _order(input)
        gradient = None
        if want_grad:
            gradient = (
                out if out is not None else np.empty(plan.shape, plan.compute_dtype, order=order)
            )
        scale = _flat_scale(plan, _rounded_scalar(grad_output, result)) if want_grad else 1.0
        if plan.elementwise:
            loss = None
            if want_loss:
                loss = (
                    out
                    if not want_grad and out is not None
                    else np.empty(plan.shape, result, order=order)
                )
            if plan.size:
                self._flat(plan, input, target, loss, gradient, scale, Finish.NONE)
            return loss, gradient
        finish = plan.finish if want_loss else Finish.NONE
        value = math.nan if plan.finish is Finish.MEAN_BY_COUNT else 0.0
        if plan.size:
            value = self._flat(plan, input, target, None, gradient, scale, finish)[0]
        if not want_loss:
            return None, gradient
        loss = self.checked_loss(plan, input, target, value)
        if out is not None and not want_grad:
            out[...] = loss
            return out, None
        return loss, gradient

    @staticmethod
    def checked_loss(plan: Plan, input: np.ndarray, target: np.ndarray, value: float) -> np.ndarray:
        """The flat kernels' loss, or the general path's where a float64 sum overflowed.

        The flat kernels do not rescale: a non-finite float64 result is computed again
        by the general kernel, which tells overflow from non-finite data.
        """
        if math.isfinite(value) or plan.result_dtype != "float64":
            return np.array(value, dtype=plan.result_dtype)
        return general_call(plan, input, target, None, None, (True, False), PATHS)[0]


class _Prepared:
    """One small, contiguous call signature, ready to run without Python-side planning.

    After the first call the compiled overload's entry point is called directly: the
    key that found this object fixes every argument type, so numba's per-call type
    dispatch would only find it again.
    """

    def __init__(
        self, plan: Plan, input: np.ndarray, want: tuple[bool, bool], checked: Any
    ) -> None:
        self.plan = plan
        self.checked = checked
        self.want_loss, self.want_grad = want
        self.result = np.dtype(plan.result_dtype)
        self.compute = np.dtype(plan.compute_dtype)
        self.order = _order(input)
        self.ravel = input.ndim != 1
        self.scale = _flat_scale(plan, 1.0) if self.want_grad else 1.0
        finish = plan.finish if self.want_loss else Finish.NONE
        self.layout = (*chunking(plan.size), int(finish))
        self.tasks: Any = None  # flat_tasks' compiled entry point, after the first call

    def __call__(
        self, input: np.ndarray, target: np.ndarray, into: np.ndarray | None = None
    ) -> tuple[Any, Any]:
        """``(loss, gradient)``; ``into`` (an ``out=`` buffer that fits the flat kernels)
        receives the gradient when one is wanted, else the "none" loss."""
        PATHS.visit("prepared")
        plan = self.plan
        gradient = None
        if self.want_grad:
            gradient = (
                into if into is not None else np.empty(plan.shape, self.compute, order=self.order)
            )
        out = None
        if self.want_loss and plan.elementwise:
            fresh = into is None or self.want_grad
            out = np.empty(plan.shape, self.result, order=self.order) if fresh else into
        if plan.size == 0:
            return (out if plan.elementwise or not self.want_loss else empty_loss(plan)), gradient
        args = (
            0,
            self.layout[0],
            _flat_view(input) if self.ravel else _readable(input),
            _flat_view(target) if self.ravel else _readable(target),
            None if out is None else _flat_view(out),
            None if gradient is None else _flat_view(gradient),
            self.scale,
            self.layout,
            _NO_PARTIALS,
        )
        if self.tasks is None:
            value = kern.flat_tasks(*args)[0]
            self.tasks = kern.compiled_entry(kern.flat_tasks, args)
        else:
            value = self.tasks(*args)[0]
        if not self.want_loss:
            return None, gradient
        if plan.elementwise:
            return out, gradient
        if value - value == 0.0:  # finite: the common case, without a call
            return np.array(value, self.result), gradient
        return self.checked(plan, input, target, value), gradient


backend = NumbaCPUBackend()
