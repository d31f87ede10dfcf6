"""The JAX backend: concrete arrays on the native kernels, traced code with a custom VJP.

Concrete arrays (outside any trace)
    A CPU array's buffer is read in place through DLPack as a NumPy array and runs on
    the backend the registry picks for NumPy (numba-cpu); an array on a CUDA device
    goes to CuPy through DLPack when the cupy backend can run.  The result is put back
    on the input's device.  On the CPU, a "none" loss or a gradient of at least
    :data:`XLA_OUTPUT_MIN` elements is instead one fused XLA loop: XLA adopts only
    64-byte-aligned host memory, so the kernel's fresh result would be copied into a
    JAX buffer, and that costs more than XLA writing it.  On other devices the generic
    backend runs, compiled with ``jax.jit``.

Traced code (``jit``, ``grad``, ``vmap`` and any nesting of them)
    The loss is a ``jax.custom_vjp`` function:

    * its value: on the CPU, a reduction of at least :data:`FFI_MIN` elements
      (:data:`FFI_MIN_NARROW` without ``jax_enable_x64``) is one
      native pass through an XLA FFI custom call (:mod:`._ffi`, batched under
      ``vmap`` without a loop); smaller ones, ``"none"``, and every other platform
      (``lax.platform_dependent``) run the generic backend in ``jax.numpy``, so
      accelerator arrays never leave XLA;
    * its forward under differentiation: where the value runs natively and the plan is
      real, unweighted and of the input's shape (:func:`_fuses`), the custom call also
      writes the gradient at ``grad_output`` 1 (the spec's subgradient: 0 at ties, NaN
      where an input is NaN) straight into a second XLA output buffer, from the same
      pass over the data, and keeps it as a residual;
    * its VJP: that residual, as it is where the cotangent is 1 (XLA resolves the test
      when the cotangent is a constant, as under ``grad`` and ``value_and_grad``), else
      its sign times the cotangent's scale rounded once, one XLA loop over the residual;
      without a residual, the spec's subgradient from the generic backend, one fused
      XLA loop ``sign(x - y) * scale`` with the scale rounded once.

    ``l1_loss_and_grad`` on tracers, without ``grad_output``, is the same fused call
    where it applies; ``l1_loss_grad`` and the other cases use the generic gradient. Both
    are differentiable (second derivative 0 almost everywhere).
    The gradient with respect to a weight comes from JAX's autodiff of
    ``Σ w·|d| (/ Σ w)`` with ``|d|`` from the backend.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..._typing import Array
from ...numerics import accumulate_dtype
from ...registry import registry
from ...semantics import FLOAT_DTYPES, Plan, dtype_name
from .. import _interop
from . import _ffi

__all__ = ["FFI_MIN", "FFI_MIN_NARROW", "XLA_OUTPUT_MIN", "JaxBackend", "backend"]

#: Traced reductions of at least this many elements run natively on the CPU; below, one
#: fused XLA reduction in float64 costs less than the custom call's Python handler
#: (measured: the two break even near 1e5 float32 elements).
FFI_MIN = 1 << 17
#: The same without float64 (no ``jax_enable_x64``), where XLA's exact reduction is a
#: compensated float32 tree: under ``value_and_grad`` the two break even near 3e4.
FFI_MIN_NARROW = 1 << 15

#: Concrete CPU arrays of at least this many elements get their "none" loss and gradients
#: from one fused XLA loop (compiled once per call signature); smaller ones, where a copy
#: is cheap and a compilation is not, from the native backend.
XLA_OUTPUT_MIN = 1 << 16

_LABELS = {"loss": "l1_loss", "grad": "l1_loss_grad", "loss_and_grad": "l1_loss_and_grad"}


def _generic() -> Any:
    return registry.implementation("array-api")


def _traced(*arrays: Any) -> bool:
    return any(isinstance(a, jax.core.Tracer) for a in arrays)


# ----- concrete arrays ------------------------------------------------------------------------


def _device(array: Any) -> Any | None:
    """The one device a concrete array lives on, or None (sharded over several)."""
    devices = array.devices()
    return next(iter(devices)) if len(devices) == 1 else None


def _call(implementation: Any, operation: str, plan: Plan, x: Any, y: Any, w: Any, g: Any) -> Any:
    if operation == "loss":
        return implementation.loss(plan, x, y, w)
    return getattr(implementation, operation)(plan, x, y, w, g)


def _host_view(array: Any) -> np.ndarray:
    """A JAX CPU array's buffer as a NumPy array, without a copy.

    DLPack marks it read-only, and numba compiles separate kernels for read-only
    arrays; JAX's CPU buffers are C-contiguous, so the same memory is viewed as an
    ordinary array instead (the kernels never write their inputs), and the calls share
    the kernels NumPy and torch inputs compiled.
    """
    view = np.from_dlpack(array)
    if view.flags.writeable or not view.flags.c_contiguous or view.nbytes == 0:
        return view
    memory: Any = (ctypes.c_char * view.nbytes).from_address(view.ctypes.data)
    memory.owner = view  # the DLPack view keeps JAX's buffer alive as long as the alias
    return np.frombuffer(memory, view.dtype).reshape(view.shape)


def _eager(plan: Plan, operation: str, input: Any, target: Any, weight: Any, grad: Any) -> Any:
    device = _device(input)
    platform = None if device is None else device.platform
    if platform == "cpu":
        if (operation == "loss" and not plan.elementwise) or plan.size < XLA_OUTPUT_MIN:
            return _native(plan, operation, _host_view, input, target, weight, grad, device)
        # A fresh full-size result would be copied into a JAX buffer (XLA adopts only
        # 64-byte-aligned host memory), and the first touch of that buffer costs more
        # than XLA writing it: one fused XLA loop makes it instead.
        if operation == "loss_and_grad" and not plan.elementwise:
            loss = _native(plan, "loss", _host_view, input, target, weight, None, device)
            return loss, _jitted(plan, "grad", weight is not None, grad)(
                input, target, weight, grad
            )
        return _jitted(plan, operation, weight is not None, grad)(input, target, weight, grad)
    if platform in ("gpu", "cuda") and _interop.usable(registry, "cupy"):
        import cupy

        return _native(plan, operation, cupy.from_dlpack, input, target, weight, grad, device)
    return _jitted(plan, operation, weight is not None, grad)(input, target, weight, grad)


def _native(
    plan: Plan,
    operation: str,
    to_native: Any,
    input: Any,
    target: Any,
    weight: Any,
    grad: Any,
    device: Any,
) -> Any:
    """Run on the backend for the arrays' memory (read in place through DLPack)."""
    x, y, w, g = (
        to_native(a) if isinstance(a, jax.Array) else a for a in (input, target, weight, grad)
    )
    native = (x, y) if w is None else (x, y, w)
    implementation = registry.select(native, None, _LABELS[operation], plan)
    result = _call(implementation, operation, plan, x, y, w, g)

    def back(array: Any) -> Any:
        if device.platform == "cpu":
            return jax.device_put(array, device)
        return jax.dlpack.from_dlpack(array)  # CUDA memory: adopted without a copy

    if isinstance(result, tuple):
        return tuple(back(part) for part in result)
    return back(result)


_jit_cache: dict[tuple[Any, ...], Any] = {}
_jit_lock = threading.Lock()


def _jitted(plan: Plan, operation: str, weighted: bool, grad: Any) -> Any:
    """The generic backend's ``operation`` for this plan, compiled once with ``jax.jit``.

    A number ``grad_output`` becomes a 0-d argument of the result dtype (the spec casts it
    to that dtype anyway), so that each value does not compile anew.
    """
    key = (plan, operation, weighted, grad is None)
    compiled = _jit_cache.get(key)
    if compiled is None:

        def function(x: Any, y: Any, w: Any, g: Any) -> Any:
            return _call(_generic(), operation, plan, x, y, w, g)

        with _jit_lock:
            compiled = _jit_cache.setdefault(key, jax.jit(function))

    def call(x: Any, y: Any, w: Any, g: Any) -> Any:
        if g is not None and not isinstance(g, jax.Array):
            with np.errstate(over="ignore"):
                g = jnp.asarray(np.asarray(g, dtype=plan.result_dtype))
        return compiled(x, y, w, g)

    return call


# ----- traced code ----------------------------------------------------------------------------


def _native_pays(plan: Plan) -> bool:
    """Whether a traced reduction runs natively on the CPU: large enough, and the FFI is there."""
    wide = accumulate_dtype(jnp) == "float64" and plan.result_dtype != "float64"
    threshold = FFI_MIN if wide else FFI_MIN_NARROW
    return not plan.elementwise and plan.size >= threshold and _ffi.register()


def _value(plan: Plan, input: Any, target: Any, weight: Any) -> Any:
    """The loss's value in traced code: native on the CPU where that pays, else XLA."""
    generic = _generic()
    if not _native_pays(plan):
        return generic.loss(plan, input, target, weight)
    return lax.platform_dependent(
        input,
        target,
        weight,
        cpu=lambda x, y, w: _ffi.ffi_loss(plan, x, y, w),
        default=lambda x, y, w: generic.loss(plan, x, y, w),
    )


def _fuses(plan: Plan, input: Any, weight: Any) -> bool:
    """Whether a traced forward computes the gradient too, in the loss's native pass.

    The plan must run natively, unweighted, on a real input of the compute dtype and
    the loss's shape (its gradient is then one buffer), with a scale ``1/count`` that
    is a normal number (so that the residual keeps the sign: float16 means stay out).
    """
    if weight is not None or plan.input_shape != plan.shape:
        return False
    dtype = plan.compute_dtype
    if dtype not in FLOAT_DTYPES or dtype_name(input.dtype) != dtype:
        return False
    if plan.averages and plan.count * float(np.finfo(dtype).tiny) > 1:
        return False
    return _native_pays(plan)


def _fused_value(plan: Plan, input: Any, target: Any) -> tuple[Any, Any]:
    """``(loss, gradient at grad_output 1)``: one native pass on the CPU, XLA elsewhere."""
    generic = _generic()
    return lax.platform_dependent(
        input,
        target,
        cpu=lambda x, y: _ffi.ffi_loss_and_grad(plan, x, y),
        default=lambda x, y: (generic.loss(plan, x, y, None), generic.grad(plan, x, y, None, None)),
    )


_fused_functions: dict[Plan, Any] = {}


def _fused(plan: Plan, input: Any, target: Any) -> tuple[Any, Any]:
    """:func:`_fused_value` as a ``jax.custom_jvp`` function, so that forward mode (over the
    reverse mode of :func:`_loss_function`, as in ``jax.hessian``) sees the loss's
    subgradient and a gradient that does not change (it is piecewise constant)."""
    function: Any = _fused_functions.get(plan)
    if function is None:

        def fused(x: Any, y: Any) -> tuple[Any, Any]:
            return _fused_value(plan, x, y)

        function = jax.custom_jvp(fused)

        @function.defjvp
        def _jvp(primals: tuple[Any, ...], tangents: tuple[Any, ...]) -> tuple[Any, Any]:
            loss, unit = function(*primals)
            change = _tangent(plan, primals, tangents).astype(loss.dtype)
            return (loss, unit), (change, jnp.zeros_like(unit))

        with _loss_lock:
            function = _fused_functions.setdefault(plan, function)
    return function(input, target)


def _scaled(plan: Plan, unit: Any, g: Any) -> Any:
    """The gradient for cotangent ``g`` from the fused forward's gradient ``unit`` (at 1).

    ``unit`` is ``sign(x - y) * scale`` exactly (0 at ties, NaN where an input was NaN),
    so the generic backend's gradient of ``(unit, 0)`` is ``sign(x - y)`` times ``g``'s
    scale rounded once: the spec's gradient, bitwise, from one loop over ``unit``.  Where
    ``g`` is 1 it is ``unit`` itself, which XLA picks without a loop when ``g`` is a
    constant (``grad``, ``value_and_grad``).
    """
    zero = jnp.zeros_like(unit)
    scaled = _generic().grad(_interop.replan(plan, unit, zero, None, g), unit, zero, None, g)
    one = g == 1
    if one.ndim:
        one = jnp.reshape(one, plan.keepdims_shape)
    return jnp.where(one, unit, scaled)


def _zero_tangent(tangent: Any) -> bool:
    return tangent is None or tangent.dtype == jax.dtypes.float0


def _tangent(plan: Plan, primals: tuple[Any, ...], tangents: tuple[Any, ...]) -> Any:
    """The loss's directional derivative (forward mode), with the spec's subgradient."""
    input, target = primals[0], primals[1]
    weight = primals[2] if len(primals) > 2 else None
    full = jnp.broadcast_to(input, plan.shape)
    unit = _generic().grad(_interop.replan(plan, full, target, weight, None), full, target,
                           weight, None)  # fmt: skip
    change = jnp.zeros(plan.shape, unit.dtype)
    for sign, tangent in ((1, tangents[0]), (-1, tangents[1])):
        if not _zero_tangent(tangent):
            change = change + sign * jnp.broadcast_to(tangent, plan.shape).astype(unit.dtype)
    product = jnp.real(jnp.conj(unit) * change)
    result = jnp.sum(product, axis=plan.reduced_axes) if plan.reduced_axes else product
    if weight is not None and not _zero_tangent(tangents[2]):
        result = result + jax.jvp(_weighted_loss(plan, input, target), (weight,), (tangents[2],))[1]
    return result


_primals: dict[tuple[Plan, bool], Any] = {}


def _primal(plan: Plan, input: Any, target: Any, weight: Any) -> Any:
    """The loss's value as a ``jax.custom_jvp`` function, so that forward mode (over the
    reverse mode of :func:`_loss_function`, as in ``jax.hessian``) sees the subgradient."""
    weighted = weight is not None
    key = (plan, weighted)
    function: Any = _primals.get(key)
    if function is None:
        if weighted:

            def weighted_value(x: Any, y: Any, w: Any) -> Any:
                return _value(plan, x, y, w)

            function = jax.custom_jvp(weighted_value)
        else:

            def value(x: Any, y: Any) -> Any:
                return _value(plan, x, y, None)

            function = jax.custom_jvp(value)

        @function.defjvp
        def _jvp(primals: tuple[Any, ...], tangents: tuple[Any, ...]) -> tuple[Any, Any]:
            value = function(*primals)
            return value, _tangent(plan, primals, tangents).astype(value.dtype)

        with _loss_lock:
            function = _primals.setdefault(key, function)
    return function(input, target) if weight is None else function(input, target, weight)


def _cotangent(gradient: Any, primal: Any) -> Any:
    """The spec's gradient as the cotangent JAX expects for ``primal``.

    JAX's convention for complex arguments is the conjugate of the spec's (torch's)
    ``(x - y) / |x - y|``; a real argument of a complex difference gets the real part;
    integer arguments get float0 zeros; the dtype is the argument's.
    """
    if not jnp.issubdtype(primal.dtype, jnp.inexact):
        return np.zeros(primal.shape, dtype=jax.dtypes.float0)
    if jnp.issubdtype(gradient.dtype, jnp.complexfloating):
        if jnp.issubdtype(primal.dtype, jnp.complexfloating):
            gradient = jnp.conj(gradient)
        else:
            gradient = jnp.real(gradient)
    return gradient.astype(primal.dtype)


def _weighted_loss(plan: Plan, input: Any, target: Any) -> Any:
    """``w -> Σ w·|d| (/ Σ w)`` with ``|d|`` from the backend: JAX differentiates it in w."""
    terms = _generic().loss(
        _interop.replan(plan, input, target, None, None, reduction="none"), input, target, None
    )
    axes = plan.reduced_axes

    def weighted(w: Any) -> Any:
        cast = w.astype(terms.dtype)
        value = terms * cast
        if plan.elementwise or not axes:
            return value
        total = jnp.sum(value, axis=axes)
        if plan.averages:
            total = total / jnp.sum(jnp.broadcast_to(cast, plan.shape), axis=axes)
        return total

    return weighted


def _weight_cotangent(plan: Plan, input: Any, target: Any, weight: Any, g: Any) -> Any:
    """d loss / d weight through JAX's autodiff of Σ w·|d| (/ Σ w)."""
    if not jnp.issubdtype(weight.dtype, jnp.inexact):
        return np.zeros(weight.shape, dtype=jax.dtypes.float0)
    _, pullback = jax.vjp(_weighted_loss(plan, input, target), weight)
    return pullback(g.astype(jnp.result_type(g)))[0]


def _gradients(plan: Plan, residuals: tuple[Any, ...], g: Any) -> tuple[Any, ...]:
    """The cotangents of input, target (and weight) from ``(input, target, weight, unit)``.

    ``unit`` is the fused forward's gradient (None where the forward computed only the
    loss): the input's gradient then scales it, without another pass over the data.
    """
    input, target, weight, unit = residuals
    generic = _generic()
    if unit is not None:
        gx = _scaled(plan, unit, g)
    else:
        gx = generic.grad(_interop.replan(plan, input, target, weight, g), input, target,
                          weight, g)  # fmt: skip
    if plan.input_shape == plan.target_shape:
        gy = -gx
    else:
        swapped = _interop.replan(plan, target, input, weight, g)
        gy = generic.grad(swapped, target, input, weight, g)
    cotangents = [_cotangent(gx, input), _cotangent(gy, target)]
    if weight is not None:
        cotangents.append(_weight_cotangent(plan, input, target, weight, g))
    return tuple(cotangents)


_loss_functions: dict[tuple[Plan, bool], Any] = {}
_loss_lock = threading.Lock()


def _loss_function(plan: Plan, weighted: bool) -> Any:
    """The loss for this plan as a ``jax.custom_vjp`` function (made once per plan)."""
    key = (plan, weighted)
    try:
        return _loss_functions[key]
    except KeyError:
        pass
    if weighted:

        @jax.custom_vjp
        def loss(x: Any, y: Any, w: Any) -> Any:
            return _primal(plan, x, y, w)

        def forward(x: Any, y: Any, w: Any) -> tuple[Any, tuple[Any, ...]]:
            return _primal(plan, x, y, w), (x, y, w, None)

    else:

        @jax.custom_vjp
        def loss(x: Any, y: Any) -> Any:
            return _primal(plan, x, y, None)

        def forward(x: Any, y: Any) -> tuple[Any, tuple[Any, ...]]:  # type: ignore[misc]
            if _fuses(plan, x, None):
                loss, unit = _fused(plan, x, y)
                return loss, (x, y, None, unit)
            return _primal(plan, x, y, None), (x, y, None, None)

    def backward(residuals: tuple[Any, ...], g: Any) -> tuple[Any, ...]:
        return _gradients(plan, residuals, g)

    loss.defvjp(forward, backward)
    with _loss_lock:
        return _loss_functions.setdefault(key, loss)


def _traced_loss(plan: Plan, input: Any, target: Any, weight: Any) -> Any:
    function = _loss_function(plan, weight is not None)
    return function(input, target) if weight is None else function(input, target, weight)


class JaxBackend:
    """L1 loss and subgradient for JAX arrays and tracers."""

    name = "jax"

    def can_run(self, plan: Plan) -> str | None:
        """Every plan but one with ``out=``: JAX arrays are immutable."""
        if plan.writes_out:
            return "JAX arrays are immutable: there is no out= buffer to write into"
        return None

    def loss(self, plan: Plan, input: Array, target: Array, weight: Array | None) -> Array:
        """Return the loss; differentiable by ``jax.grad`` with the spec's subgradient."""
        if _traced(input, target, weight):
            return _traced_loss(plan, input, target, weight)
        return _eager(plan, "loss", input, target, weight, None)

    def grad(
        self,
        plan: Plan,
        input: Array,
        target: Array,
        weight: Array | None,
        grad_output: Any,
    ) -> Array:
        """Return the subgradient with respect to input."""
        if _traced(input, target, weight, grad_output):
            return _generic().grad(plan, input, target, weight, grad_output)
        return _eager(plan, "grad", input, target, weight, grad_output)

    def loss_and_grad(
        self,
        plan: Plan,
        input: Array,
        target: Array,
        weight: Array | None,
        grad_output: Any,
    ) -> tuple[Array, Array]:
        """Return ``(loss, grad)``."""
        if _traced(input, target, weight, grad_output):
            if grad_output is None and _fuses(plan, input, weight):
                return _fused(plan, input, target)
            loss = _traced_loss(plan, input, target, weight)
            return loss, _generic().grad(plan, input, target, weight, grad_output)
        return _eager(plan, "loss_and_grad", input, target, weight, grad_output)


backend = JaxBackend()
