"""Hand-over of framework arrays to the backends that run their memory natively.

The ``torch`` and ``jax`` backends hold no kernels of their own: they view a tensor's
or a JAX array's memory as a NumPy array (on the CPU) or as a CuPy or numba-cuda array
(on a CUDA device), without copying, and pass it to the backend that the registry
chooses for that view.  This module decides which one serves a device; it imports no
array library and no other backend.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..semantics import Plan, dtype_name, make_plan

__all__ = ["CUDA_BACKENDS", "cuda_route", "replan", "usable"]

#: The backends that take CUDA memory handed over zero-copy, in order of preference:
#: CuPy through DLPack, then numba-cuda through ``__cuda_array_interface__``.
CUDA_BACKENDS = ("cupy", "numba-cuda")


def usable(registry: object, name: str) -> bool:
    """Whether backend ``name`` is registered and can run on a real device here.

    numba-cuda's CPU simulator counts as unusable: it cannot read device memory.
    """
    try:
        if registry.unavailable_reason(name) is not None:  # type: ignore[attr-defined]
            return False
    except ValueError:  # not registered (a test, or a user, removed it)
        return False
    if name == "numba-cuda":
        from numba import config

        return not getattr(config, "ENABLE_CUDASIM", 0)
    return True


def cuda_route(available: Callable[[str], bool]) -> str | None:
    """The backend that runs CUDA memory handed over zero-copy, or None for the generic path.

    Parameters
    ----------
    available : callable
        ``available(name)`` says whether backend ``name`` can run here.

    Returns
    -------
    str or None
        ``"cupy"`` or ``"numba-cuda"``; None when neither can, and the arrays stay in
        their own library on the generic ``array-api`` backend.
    """
    for name in CUDA_BACKENDS:
        if available(name):
            return name
    return None


def replan(
    plan: Plan,
    first: Any,
    second: Any,
    weight: Any,
    grad_output: Any,
    *,
    reduction: str | None = None,
) -> Plan:
    """``plan`` made again for these arguments (anything with ``.shape`` and ``.dtype``).

    Autodiff rules use it for the plan with the incoming gradient as ``grad_output``,
    for the swapped call (the gradient with respect to target is
    ``l1_loss_grad(target, input)``) and for the unweighted ``"none"`` loss.
    """
    reduction = plan.reduction if reduction is None else reduction
    broadcast = not (plan.input_shape == plan.target_shape == plan.shape)
    return make_plan(
        tuple(first.shape),
        dtype_name(first.dtype),
        tuple(second.shape),
        dtype_name(second.dtype),
        reduction,
        None if weight is None else tuple(weight.shape),
        None if weight is None else dtype_name(weight.dtype),
        None if reduction == "none" else plan.reduced_axes,
        broadcast,
        None if grad_output is None else tuple(grad_output.shape),
        None if grad_output is None else dtype_name(grad_output.dtype),
    )
