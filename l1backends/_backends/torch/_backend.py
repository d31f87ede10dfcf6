"""The torch backend: tensors handed zero-copy to the native kernels, and torch autograd.

Eager calls view a tensor's memory in the form the native backend takes (a NumPy
array for CPU tensors, a CuPy array through DLPack or a numba-cuda array through
``__cuda_array_interface__`` for CUDA tensors), let the registry pick the backend
for that view, and wrap the fresh result as a tensor on the same device without a
copy.  Tensors on other devices (MPS, XPU, meta, ...) run on the generic backend in
torch's own operations.

Autograd
--------
When grad mode is on and an argument requires grad, :func:`l1_loss` goes through
:class:`L1LossFunction`: its forward runs ``loss_and_grad`` (one pass over the data)
and keeps the gradient; its backward returns that gradient as it is when the
incoming gradient is 1 (the usual ``loss.backward()``), multiplies it for
``"none"`` (exactly: the kept gradient is the sign times the weight), and otherwise
recomputes the gradient with ``grad_output`` in one native pass, so that the scale
is rounded once as the spec says.  The gradient with respect to ``target`` is the
negative (with ``broadcast=True`` and different shapes, the gradient of the swapped
call, summed back to the target's shape).  A weight that requires grad gets its
gradient from torch's autograd of ``Σ w·|d| (/ Σ w)``, with ``|d|`` from the kernel.

Double backward (``create_graph=True``) is supported: the second derivative is 0
with respect to input and target (the subgradient is piecewise constant), and the
gradient keeps its linear dependence on the incoming gradient.  It is refused for
complex inputs and for a weight that requires grad.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from ..._typing import Array
from ...registry import registry
from ...semantics import Plan
from .. import _interop

__all__ = ["FUSED_MIN", "L1LossFunction", "TorchBackend", "backend", "run", "run_into"]

#: From this many elements the forward also computes the gradient, in the same pass; below,
#: where the data sits in cache and a call costs microseconds, the backward computes it.
FUSED_MIN = 1 << 16

_LABELS = {"loss": "l1_loss", "grad": "l1_loss_grad", "loss_and_grad": "l1_loss_and_grad"}


# ----- hand-over to the native backends -------------------------------------------------------


def _call(
    implementation: Any,
    operation: str,
    plan: Plan,
    input: Array,
    target: Array,
    weight: Array | None,
    grad_output: Any,
    out: Array | None = None,
) -> Any:
    options = {} if out is None else {"out": out}
    if operation == "loss":
        return implementation.loss(plan, input, target, weight, **options)
    return getattr(implementation, operation)(plan, input, target, weight, grad_output, **options)


def _wrapped(result: Any, wrap: Callable[[Any], torch.Tensor]) -> Any:
    if isinstance(result, tuple):
        return tuple(wrap(part) for part in result)
    return wrap(result)


def _device_view(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor outside autograd, with lazy conjugate and negative bits resolved.

    Resolving copies, and only a tensor with such a bit set has one.
    """
    tensor = tensor.detach()
    if tensor.is_conj():
        tensor = tensor.resolve_conj()
    if tensor.is_neg():
        tensor = tensor.resolve_neg()
    return tensor


def cuda_route() -> str | None:
    """The backend that runs CUDA tensors here: "cupy", "numba-cuda" or None (generic)."""
    return _interop.cuda_route(lambda name: _interop.usable(registry, name))


_choices: dict[Plan, Any] = {}
_choices_version = -1
_dispatch_log = logging.getLogger("l1backends.dispatch")


def _host_implementation(plan: Plan, arrays: tuple[Any, ...], label: str) -> Any:
    """The registry's backend for NumPy views of CPU tensors, remembered per plan.

    The choice depends only on the argument types (NumPy arrays, every time) and the
    plan, so it is kept until the registry changes; with DEBUG logging every call asks
    the registry, which logs the decision.
    """
    global _choices_version
    if _choices_version != registry.version:
        _choices.clear()
        _choices_version = registry.version
    implementation = _choices.get(plan)
    if implementation is None or _dispatch_log.isEnabledFor(logging.DEBUG):
        implementation = registry.select(arrays, None, label, plan)
        if registry.static_choice(arrays) is implementation and len(_choices) < 4096:
            _choices[plan] = implementation
    return implementation


def run(
    plan: Plan,
    operation: str,
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    grad_output: Any,
) -> Any:
    """Run ``operation`` ("loss", "grad", "loss_and_grad") natively; tensors in, tensors out.

    Nothing is copied: the inputs are read in place and the results are the native
    backend's fresh arrays, wrapped as tensors on the inputs' device.
    """
    if input.is_cpu:
        # Tensor.numpy(force=True) detaches and resolves conjugate/negative bits; on a
        # CPU tensor without such bits it is a view of the same memory.
        x = input.numpy(force=True)
        y = target.numpy(force=True)
        if weight is None and operation == "loss":
            implementation = _host_implementation(plan, (x, y), "l1_loss")
            return torch.from_numpy(implementation.loss(plan, x, y, None))
        w = None if weight is None else weight.numpy(force=True)
        g = grad_output.numpy(force=True) if isinstance(grad_output, torch.Tensor) else grad_output
        arrays = (x, y) if w is None else (x, y, w)
        implementation = _host_implementation(plan, arrays, _LABELS[operation])
        return _wrapped(_call(implementation, operation, plan, x, y, w, g), torch.from_numpy)
    if input.is_cuda:
        route = cuda_route()
        if route is not None:
            to_native, from_native = _cuda_converters(route, input.device)

            def native(tensor: Any) -> Any:
                if not isinstance(tensor, torch.Tensor):
                    return tensor
                return to_native(_device_view(tensor))

            x, y, w, g = (native(a) for a in (input, target, weight, grad_output))
            arrays = (x, y) if w is None else (x, y, w)
            implementation = registry.select(arrays, None, _LABELS[operation], plan)
            return _wrapped(_call(implementation, operation, plan, x, y, w, g), from_native)
    # Any other device: torch's own operations, on that device, through the generic backend.
    generic = registry.implementation("array-api")
    detached = (
        a.detach() if isinstance(a, torch.Tensor) else a
        for a in (input, target, weight, grad_output)
    )
    return _call(generic, operation, plan, *detached)


def run_into(
    plan: Plan,
    operation: str,
    arrays: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
    grad_output: Any,
    out: torch.Tensor,
) -> Any:
    """:func:`run` writing its array result into ``out`` (a CPU tensor), which it returns."""
    if not arrays[0].is_cpu or not out.is_cpu:
        raise TypeError(
            "out= is supported for CPU tensors; on other devices the result is a fresh tensor"
        )
    if torch.is_grad_enabled() and any(a is not None and a.requires_grad for a in (*arrays, out)):
        raise TypeError("out= does not support automatic differentiation, as in torch")
    x, y, w = (None if a is None else a.numpy(force=True) for a in arrays)
    g = grad_output.numpy(force=True) if isinstance(grad_output, torch.Tensor) else grad_output
    native = (x, y) if w is None else (x, y, w)
    implementation = _host_implementation(plan, native, _LABELS[operation])
    result = _call(implementation, operation, plan, x, y, w, g, out.numpy())
    if operation == "loss_and_grad":
        return torch.from_numpy(result[0]), out
    return out


def _cuda_converters(
    route: str, device: torch.device
) -> tuple[Callable[[torch.Tensor], Any], Callable[[Any], torch.Tensor]]:
    """Zero-copy conversions between CUDA tensors and the route's arrays, both ways."""
    if route == "cupy":
        import cupy

        return cupy.from_dlpack, torch.from_dlpack
    from numba import cuda

    def back(array: Any) -> torch.Tensor:
        return torch.as_tensor(array, device=device)

    return cuda.as_cuda_array, back


# ----- autograd -------------------------------------------------------------------------------


def _replan(
    plan: Plan,
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    grad_output: torch.Tensor | None,
    *,
    swapped: bool = False,
    reduction: str | None = None,
) -> Plan:
    """``plan`` again with a ``grad_output`` (and input and target swapped, or a reduction)."""
    first, second = (target, input) if swapped else (input, target)
    return _interop.replan(plan, first, second, weight, grad_output, reduction=reduction)


def _is_one(grad_output: torch.Tensor) -> bool:
    """Whether every element of the incoming gradient is exactly 1."""
    if grad_output.dim() == 0:
        return grad_output.item() == 1
    return bool(torch.all(grad_output == 1))


def _input_gradient(
    plan: Plan,
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    grad_output: torch.Tensor,
    unit: torch.Tensor | None,
) -> torch.Tensor:
    """The gradient with respect to input for this ``grad_output``, rounded once."""
    if unit is not None:
        if plan.elementwise and not plan.is_complex and not plan.input_broadcast:
            # unit is sign * weight, exactly; one multiplication rounds g * weight once.
            return torch.mul(unit, grad_output)
        if _is_one(grad_output):
            return unit
    with_g = _replan(plan, input, target, weight, grad_output)
    return run(with_g, "grad", input, target, weight, grad_output)


def _target_gradient(
    plan: Plan,
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    grad_output: torch.Tensor,
    input_gradient: torch.Tensor | None,
    owned: bool,
) -> torch.Tensor:
    """The gradient with respect to target: minus the input's, or the swapped call's."""
    if plan.input_shape == plan.target_shape and input_gradient is not None:
        return input_gradient.neg_() if owned else torch.neg(input_gradient)
    swapped = _replan(plan, input, target, weight, grad_output, swapped=True)
    return run(swapped, "grad", target, input, weight, grad_output)


def _weight_gradient(
    plan: Plan,
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    grad_output: torch.Tensor,
) -> torch.Tensor:
    """d loss / d weight by torch's autograd of Σ w·|d| (/ Σ w), with |d| from the kernel."""
    terms = run(_replan(plan, input, target, None, None, reduction="none"), "loss", input, target,
                None, None)  # fmt: skip
    dims = plan.reduced_axes
    with torch.enable_grad():
        w = weight.detach().requires_grad_()
        cast = w.to(terms.dtype)
        value = terms * cast
        if not plan.elementwise and dims:
            value = value.sum(dim=dims)
            if plan.averages:
                value = value / cast.expand(plan.shape).sum(dim=dims)
        (gradient,) = torch.autograd.grad(value, w, grad_output.expand(value.shape))
    return gradient


def _gradients(
    plan: Plan,
    unit: torch.Tensor | None,
    grad_output: torch.Tensor,
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    needs: tuple[bool, bool, bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    need_input, need_target, need_weight = needs
    gx = gy = gw = None
    if need_input or (need_target and plan.input_shape == plan.target_shape):
        gx = _input_gradient(plan, input, target, weight, grad_output, unit)
    if need_target:
        gy = _target_gradient(plan, input, target, weight, grad_output, gx, owned=not need_input)
    if need_weight:
        assert weight is not None
        gw = _weight_gradient(plan, input, target, weight, grad_output)
    return (_as_argument(gx, input) if need_input else None), _as_argument(gy, target), gw


def _as_argument(gradient: torch.Tensor | None, argument: torch.Tensor) -> torch.Tensor | None:
    """A gradient as autograd takes it for ``argument``: its dtype, real for a real one."""
    if gradient is None:
        return None
    if gradient.is_complex() and not argument.is_complex():
        gradient = gradient.real
    return gradient if gradient.dtype == argument.dtype else gradient.to(argument.dtype)


class L1LossFunction(torch.autograd.Function):
    """``l1_loss`` under autograd: a fused forward that keeps the gradient it computed."""

    @staticmethod
    def forward(
        ctx: Any,
        plan: Plan,
        input: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None,
    ) -> torch.Tensor:
        if ctx.needs_input_grad[1] and input.numel() >= FUSED_MIN:
            loss, unit = run(plan, "loss_and_grad", input, target, weight, None)
        else:
            loss, unit = run(plan, "loss", input, target, weight, None), None
        ctx.plan = plan
        ctx.unit = unit
        ctx.save_for_backward(input, target, weight)
        return loss

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[Any, ...]:
        plan = ctx.plan
        input, target, weight = ctx.saved_tensors
        unit, ctx.unit = ctx.unit, None  # handed on, so that autograd may keep it as .grad
        needs = tuple(ctx.needs_input_grad[1:4])
        if torch.is_grad_enabled():  # create_graph=True: results that can be differentiated
            if plan.is_complex or needs[2]:
                raise RuntimeError(
                    "l1backends: double backward (create_graph=True) of l1_loss is not "
                    "supported for complex inputs or a weight that requires grad"
                )
            gx, gy = _SecondOrder.apply(plan, needs, unit, grad_output, input, target, weight)
            return None, gx, gy, None
        return None, *_gradients(plan, unit, grad_output, input, target, weight, needs)


_apply = super(torch.autograd.Function, L1LossFunction).apply


class _SecondOrder(torch.autograd.Function):
    """The gradients as a function of ``grad_output``: linear in it, piecewise constant in x, y."""

    @staticmethod
    def forward(
        ctx: Any,
        plan: Plan,
        needs: tuple[bool, bool, bool],
        unit: torch.Tensor | None,
        grad_output: torch.Tensor,
        input: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        gx, gy, _ = _gradients(plan, unit, grad_output, input, target, weight, needs)
        # Outputs must be fresh tensors, not the kept gradient itself.
        gx = None if gx is None else (gx.clone() if gx is unit else gx)
        ctx.plan = plan
        ctx.save_for_backward(input, target, weight, grad_output)
        return gx, gy

    @staticmethod
    def backward(
        ctx: Any, grad_gx: torch.Tensor | None, grad_gy: torch.Tensor | None
    ) -> tuple[Any, ...]:
        plan = ctx.plan
        input, target, weight, grad_output = ctx.saved_tensors
        # d gx / d g: the gradient at g = 1, before it is summed back over broadcast axes.
        full = input.expand(plan.shape)
        unit = run(_replan(plan, full, target, weight, None), "grad", full, target, weight, None)
        incoming = torch.zeros((), dtype=unit.dtype, device=unit.device)
        if grad_gx is not None:
            incoming = incoming + grad_gx
        if grad_gy is not None:
            incoming = incoming - grad_gy  # gy is minus the same scale times the sign
        product = incoming.expand(plan.shape) * unit
        dims = plan.reduced_axes
        d_grad_output = product.sum(dim=dims) if dims else product
        if grad_output.dim() == 0:
            d_grad_output = d_grad_output.sum()
        zeros = (
            torch.zeros_like(input) if ctx.needs_input_grad[4] else None,
            torch.zeros_like(target) if ctx.needs_input_grad[5] else None,
        )
        return None, None, None, d_grad_output.to(grad_output.dtype), *zeros, None


def _refuse_torch_func() -> None:
    if torch._C._are_functorch_transforms_active():
        raise TypeError(
            "l1backends does not support torch.func transforms (vmap, grad, jacrev, ...): "
            "the native kernels read tensors' memory, which these transforms wrap; use "
            "torch.autograd (loss.backward()) or torch.compile"
        )


class TorchBackend:
    """L1 loss and subgradient for torch tensors on the native kernels of their device."""

    name = "torch"

    def loss(
        self,
        plan: Plan,
        input: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return the loss; with a ``grad_fn`` when an argument requires grad."""
        if out is not None:
            return run_into(plan, "loss", (input, target, weight), None, out)
        if torch.is_grad_enabled() and (
            input.requires_grad
            or target.requires_grad
            or (weight is not None and weight.requires_grad)
        ):
            _refuse_torch_func()
            # Function.apply's Python wrapper only prepares torch.func transforms (refused
            # above); its C++ base is the same call, 1 µs faster.
            return _apply(plan, input, target, weight)
        _refuse_torch_func()
        return run(plan, "loss", input, target, weight, None)

    def grad(
        self,
        plan: Plan,
        input: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None,
        grad_output: Any,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return the subgradient with respect to input (a tensor outside autograd)."""
        _refuse_torch_func()
        if out is not None:
            return run_into(plan, "grad", (input, target, weight), grad_output, out)
        return run(plan, "grad", input, target, weight, grad_output)

    def loss_and_grad(
        self,
        plan: Plan,
        input: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None,
        grad_output: Any,
        out: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(loss, grad)`` from one pass (tensors outside autograd)."""
        _refuse_torch_func()
        if out is not None:
            return run_into(plan, "loss_and_grad", (input, target, weight), grad_output, out)
        return run(plan, "loss_and_grad", input, target, weight, grad_output)


backend = TorchBackend()
