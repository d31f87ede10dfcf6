"""The backend protocol for backends whose kernels make loss and gradient in one pass.

The CUDA backends (numba-cuda and CuPy) run one routine that can produce the loss,
the gradient or both, and one that leaves the sums unfinished for Dask; this base
class maps the protocol's methods onto them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._typing import Array
from ..semantics import Plan

__all__ = ["FusedPassBackend", "Request"]


@dataclass(frozen=True)
class Request:
    """One call of the protocol: the plan, the arrays, and what to return."""

    plan: Plan
    input: Array
    target: Array
    weight: Array | None
    grad_output: Array | float | None = None
    want_loss: bool = True
    want_grad: bool = False


class FusedPassBackend:
    """``loss``, ``grad``, ``loss_and_grad`` and ``partials`` in terms of two routines."""

    def _run(self, request: Request) -> tuple[Array | None, Array | None]:
        """The loss (or None) and the gradient (or None) that ``request`` wants."""
        raise NotImplementedError

    def _words(self, request: Request) -> list[Array]:
        """The unrounded double words Σ w·|d| (high, low) and Σ w (high, low), by output."""
        raise NotImplementedError

    def loss(self, plan: Plan, input: Array, target: Array, weight: Array | None) -> Array:
        """Return the loss described by ``plan``, in the inputs' namespace and on their device."""
        return self._run(Request(plan, input, target, weight))[0]

    def grad(
        self,
        plan: Plan,
        input: Array,
        target: Array,
        weight: Array | None,
        grad_output: Array | float | None,
    ) -> Array:
        """Return the subgradient with respect to ``input`` described by ``plan``."""
        request = Request(plan, input, target, weight, grad_output, False, True)
        return self._run(request)[1]

    def loss_and_grad(
        self,
        plan: Plan,
        input: Array,
        target: Array,
        weight: Array | None,
        grad_output: Array | float | None,
    ) -> tuple[Array, Array]:
        """Return ``(loss, grad)`` from one fused pass (after a Σw pass for a weighted mean)."""
        loss, grad = self._run(Request(plan, input, target, weight, grad_output, True, True))
        assert loss is not None and grad is not None  # both were asked for
        return loss, grad

    def partials(
        self, plan: Plan, input: Array, target: Array, weight: Array | None
    ) -> tuple[Array, Array, Array | None, Array | None]:
        """Unrounded float64 double words of Σ w·|d| and Σ w over the reduced axes (on device)."""
        high, low, weight_high, weight_low = self._words(Request(plan, input, target, weight))
        if weight is None:
            return high, low, None, None
        return high, low, weight_high, weight_low
