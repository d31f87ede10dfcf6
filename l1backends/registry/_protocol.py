"""The protocol every backend implementation follows, written down once.

A backend is any object with these methods; the registry loads it from its
``BackendSpec.implementation`` reference.  Every method receives a validated
:class:`~l1backends.semantics.Plan` and the caller's arrays (already checked to be
of one library and device) and returns arrays in the inputs' namespace and on
their device.  A backend never modifies its inputs.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from .._typing import Array
from ..semantics import Plan

__all__ = ["Backend", "ChunkBackend", "Partials"]

#: Σ w·|d| as a double word (high, low), and Σ w as one, or (None, None) when unweighted.
Partials = tuple[Array, Array, Array | None, Array | None]


@runtime_checkable
class Backend(Protocol):
    """The three operations of the public API, given a plan.

    A backend may also define ``can_run(plan) -> str | None``: None when it can
    serve the plan, else the reason it cannot (too many dimensions, say).  The
    registry then logs the reason and tries the next backend, so a backend
    declines a plan instead of raising inside it.
    """

    def loss(self, plan: Plan, input: Array, target: Array, weight: Array | None) -> Array:
        """The loss: a fresh array of ``plan.out_shape`` and ``plan.result_dtype``."""
        ...

    def grad(
        self,
        plan: Plan,
        input: Array,
        target: Array,
        weight: Array | None,
        grad_output: Array | float | None,
    ) -> Array:
        """The subgradient with respect to ``input``, of the input's shape and the compute dtype."""
        ...

    def loss_and_grad(
        self,
        plan: Plan,
        input: Array,
        target: Array,
        weight: Array | None,
        grad_output: Array | float | None,
    ) -> tuple[Array, Array]:
        """``(loss, grad)``, from one pass over the data where the backend can."""
        ...


@runtime_checkable
class ChunkBackend(Backend, Protocol):
    """A backend that composite backends (Dask) can use on one chunk at a time."""

    def partials(self, plan: Plan, input: Array, target: Array, weight: Array | None) -> Partials:
        """Unrounded float64 double words of Σ w·|d| and Σ w over the plan's reduced axes.

        Returns ``(high, low, weight_high, weight_low)`` of shape ``plan.out_shape``, in
        the inputs' namespace and on their device; the weight words are None when
        unweighted.  Combining partials exactly and rounding once gives the loss.
        """
        ...
