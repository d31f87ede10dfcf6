"""``l1_loss`` as torch custom ops, for ``torch.compile``.

Dynamo cannot trace the API's dispatch (a ``ContextVar``, the registry's locks), so
while compiling the public functions call :func:`compiled_call`, which dynamo traces:
it checks the options and calls one of these ops, which the compiled graph then runs
like any other operator:

``torch.ops.l1backends.l1_loss``
    The loss, with an autograd formula: the backward is one
    ``torch.ops.l1backends.l1_loss_grad`` per argument that needs a gradient.
``torch.ops.l1backends.l1_loss_grad``, ``torch.ops.l1backends.l1_loss_and_grad``
    The subgradient, and both, as the public functions of the same names.

Each op's real implementation runs the native kernels through :func:`._backend.run`;
its fake implementation validates the call with :func:`l1backends.semantics.make_plan`
(so a bad call fails while compiling, with the spec's error) and describes the output.

Under ``torch.compile`` the ``torch`` backend is the only one: ``backend=None`` and
``backend="torch"`` run these ops, any other ``backend=`` raises ``TypeError``, and
``use_backend`` blocks and ``L1BACKENDS_BACKEND`` (which dynamo cannot read) do not
apply.  A weight that requires grad is refused while compiling, and double backward
through compiled code is torch's to refuse.
"""

from __future__ import annotations

from typing import Any

import torch

from ...semantics import REDUCTIONS, Plan, dtype_name, make_plan, normalize_axis
from ._backend import run

__all__ = ["compiled_call"]


def _size(value: Any) -> int:
    """A concrete size, or the example value of a symbolic one (dynamic shapes)."""
    if isinstance(value, int):
        return value
    node = getattr(value, "node", None)
    hint = getattr(node, "hint", None)
    return int(hint) if hint is not None else int(value)


def _plan(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    grad_output: torch.Tensor | None,
    reduction: str,
    axis: list[int] | None,
    broadcast: bool,
) -> Plan:
    def shape(tensor: torch.Tensor) -> tuple[int, ...]:
        return tuple(_size(n) for n in tensor.shape)

    return make_plan(
        shape(input),
        dtype_name(input.dtype),
        shape(target),
        dtype_name(target.dtype),
        reduction,
        None if weight is None else shape(weight),
        None if weight is None else dtype_name(weight.dtype),
        None if axis is None else tuple(axis),
        broadcast,
        None if grad_output is None else shape(grad_output),
        None if grad_output is None else dtype_name(grad_output.dtype),
    )


def _torch_dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


def _loss_shape(
    plan: Plan, input: torch.Tensor, target: torch.Tensor, broadcast: bool
) -> list[Any]:
    """The loss's shape in the inputs' (possibly symbolic) sizes."""
    shape = list(torch.broadcast_shapes(input.shape, target.shape)) if broadcast else input.shape
    if plan.elementwise:
        return list(shape)
    return [shape[ax] for ax in plan.kept_axes]


@torch.library.custom_op("l1backends::l1_loss", mutates_args=())
def l1_loss_op(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    reduction: str,
    axis: list[int] | None,
    broadcast: bool,
) -> torch.Tensor:
    """The L1 loss on the native kernels (the op behind ``l1_loss`` under torch.compile)."""
    plan = _plan(input, target, weight, None, reduction, axis, broadcast)
    return run(plan, "loss", input, target, weight, None)


@l1_loss_op.register_fake
def _l1_loss_fake(input, target, weight, reduction, axis, broadcast):
    plan = _plan(input, target, weight, None, reduction, axis, broadcast)
    shape = _loss_shape(plan, input, target, broadcast)
    return input.new_empty(shape, dtype=_torch_dtype(plan.result_dtype))


@torch.library.custom_op("l1backends::l1_loss_grad", mutates_args=())
def l1_loss_grad_op(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    grad_output: torch.Tensor | None,
    reduction: str,
    axis: list[int] | None,
    broadcast: bool,
) -> torch.Tensor:
    """The subgradient with respect to input on the native kernels."""
    plan = _plan(input, target, weight, grad_output, reduction, axis, broadcast)
    return run(plan, "grad", input, target, weight, grad_output)


@l1_loss_grad_op.register_fake
def _l1_loss_grad_fake(input, target, weight, grad_output, reduction, axis, broadcast):
    plan = _plan(input, target, weight, grad_output, reduction, axis, broadcast)
    return input.new_empty(input.shape, dtype=_torch_dtype(plan.compute_dtype))


@torch.library.custom_op("l1backends::l1_loss_and_grad", mutates_args=())
def l1_loss_and_grad_op(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    grad_output: torch.Tensor | None,
    reduction: str,
    axis: list[int] | None,
    broadcast: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and subgradient from one pass on the native kernels."""
    plan = _plan(input, target, weight, grad_output, reduction, axis, broadcast)
    return run(plan, "loss_and_grad", input, target, weight, grad_output)


@l1_loss_and_grad_op.register_fake
def _l1_loss_and_grad_fake(input, target, weight, grad_output, reduction, axis, broadcast):
    plan = _plan(input, target, weight, grad_output, reduction, axis, broadcast)
    shape = _loss_shape(plan, input, target, broadcast)
    loss = input.new_empty(shape, dtype=_torch_dtype(plan.result_dtype))
    return loss, input.new_empty(input.shape, dtype=_torch_dtype(plan.compute_dtype))


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    input, target, weight, reduction, axis, broadcast = inputs
    ctx.save_for_backward(input, target, weight)
    ctx.options = (reduction, axis, broadcast)


def _backward(ctx: Any, grad_output: torch.Tensor) -> tuple[Any, ...]:
    input, target, weight = ctx.saved_tensors
    reduction, axis, broadcast = ctx.options
    need_input, need_target = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    gx = gy = None
    same_shape = input.shape == target.shape
    if need_input or (need_target and same_shape):
        gx = l1_loss_grad_op(input, target, weight, grad_output, reduction, axis, broadcast)
    if need_target:
        if same_shape and gx is not None:  # exactly the negative
            gy = torch.neg(gx)
        else:  # the swapped call's gradient, summed back to the target's shape
            gy = l1_loss_grad_op(target, input, weight, grad_output, reduction, axis, broadcast)
    return (gx if need_input else None), gy, None, None, None, None


l1_loss_op.register_autograd(_backward, setup_context=_setup_context)


def compiled_call(
    function: str,
    input: Any,
    target: Any,
    reduction: Any,
    weight: Any,
    axis: Any,
    broadcast: Any,
    backend: Any,
    grad_output: Any = None,
) -> Any:
    """The public ``function`` while torch.compile traces: checks, then one custom op.

    Dynamo traces this function; it reads no context variable and takes no lock.
    """
    if backend is not None and backend != "torch":
        raise TypeError(
            f"backend={backend!r} cannot run under torch.compile: compiled code runs the "
            "'torch' backend's custom ops (torch.ops.l1backends.*); pass backend=None or "
            "'torch', or call it outside the compiled function"
        )
    for role, value in (("input", input), ("target", target), ("weight", weight)):
        if value is not None and not isinstance(value, torch.Tensor):
            raise TypeError(
                f"{role} is a {type(value).__name__}, but under torch.compile l1backends "
                "takes torch tensors only"
            )
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(
            f"reduction={reduction!r} is not valid; choose one of "
            + ", ".join(repr(r) for r in REDUCTIONS)
        )
    if not isinstance(broadcast, bool):
        raise TypeError(f"broadcast must be True or False, got {broadcast!r}")
    if weight is not None and weight.requires_grad and function == "l1_loss":
        raise TypeError(
            "under torch.compile l1_loss does not differentiate with respect to weight; "
            "pass weight.detach(), or call it outside the compiled function"
        )
    axes = None
    if axis is not None and reduction != "none":
        ndim = len(torch.broadcast_shapes(input.shape, target.shape)) if broadcast else input.dim()
        axes = list(normalize_axis(axis, ndim))
    elif axis is not None:
        axes = [int(a) for a in ((axis,) if isinstance(axis, int) else axis)]
    if function == "l1_loss":
        return l1_loss_op(input, target, weight, reduction, axes, broadcast)
    if isinstance(grad_output, (int, float)) and not isinstance(grad_output, bool):
        grad_output = torch.full((), grad_output, dtype=torch.float64, device=input.device)
    elif grad_output is not None and not isinstance(grad_output, torch.Tensor):
        raise TypeError(f"grad_output must be a real number or a tensor, got {grad_output!r}")
    # Gradients are results, not part of the graph: like eager calls, they do not require grad.
    input, target = input.detach(), target.detach()
    weight = None if weight is None else weight.detach()
    grad_output = None if grad_output is None else grad_output.detach()
    if function == "l1_loss_grad":
        return l1_loss_grad_op(input, target, weight, grad_output, reduction, axes, broadcast)
    return l1_loss_and_grad_op(input, target, weight, grad_output, reduction, axes, broadcast)
