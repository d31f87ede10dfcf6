"""The backend protocol for backends whose kernels make loss and gradient in one pass.

The CUDA backends (numba-cuda and CuPy) run one routine that can produce the loss,
the gradient or both; this base class maps the protocol's three methods onto it.
"""

from __future__ import annotations

from .._typing import Array
from ..semantics import Plan

__all__ = ["FusedPassBackend"]


class FusedPassBackend:
    """``loss``, ``grad`` and ``loss_and_grad`` in terms of one fused ``_run``."""

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
        raise NotImplementedError

    def loss(self, plan: Plan, input: Array, target: Array, weight: Array | None) -> Array:
        """Return the loss described by ``plan``, in the inputs' namespace and on their device."""
        return self._run(plan, input, target, weight, None, want_loss=True, want_grad=False)[0]

    def grad(
        self,
        plan: Plan,
        input: Array,
        target: Array,
        weight: Array | None,
        grad_output: Array | float | None,
    ) -> Array:
        """Return the subgradient with respect to ``input`` described by ``plan``."""
        run = self._run(plan, input, target, weight, grad_output, want_loss=False, want_grad=True)
        return run[1]

    def loss_and_grad(
        self,
        plan: Plan,
        input: Array,
        target: Array,
        weight: Array | None,
        grad_output: Array | float | None,
    ) -> tuple[Array, Array]:
        """Return ``(loss, grad)`` from one fused pass (after a Σw pass for a weighted mean)."""
        return self._run(plan, input, target, weight, grad_output, want_loss=True, want_grad=True)
