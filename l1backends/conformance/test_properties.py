"""Property tests: hypothesis draws calls, exact references judge the backend.

Each test runs one property of :data:`l1backends.conformance.checks.PROPERTIES`
for one backend, adapter and declared (promoted) dtype.
"""

from __future__ import annotations

import pytest

from .checks import Target, run_property

__all__ = [
    "test_autodiff",
    "test_convexity",
    "test_finite_differences",
    "test_grad_definition",
    "test_grad_wrt_target",
    "test_loss_and_grad_and_determinism",
    "test_loss_values",
    "test_zero_gradient_at_ties",
]


def test_loss_values(conformance_target: Target, conformance_dtype: str) -> None:
    """Shape, dtype, namespace, device and declared-ulp accuracy of the loss; fresh "none"."""
    run_property(conformance_target, "loss", conformance_dtype)


def test_grad_definition(conformance_target: Target, conformance_dtype: str) -> None:
    """The input gradient equals sign(x - y) * scale (summed back) within the declared ulps."""
    run_property(conformance_target, "grad", conformance_dtype)


def test_grad_wrt_target(conformance_target: Target, conformance_dtype: str) -> None:
    """l1_loss_grad(target, input) is the target gradient, and minus the input gradient."""
    run_property(conformance_target, "target_grad", conformance_dtype)


def test_zero_gradient_at_ties(conformance_target: Target, conformance_dtype: str) -> None:
    """The gradient wrt input and wrt target is exactly 0 wherever input == target."""
    run_property(conformance_target, "ties", conformance_dtype)


def test_loss_and_grad_and_determinism(conformance_target: Target, conformance_dtype: str) -> None:
    """l1_loss_and_grad equals separate calls; the same call twice gives the same bits."""
    run_property(conformance_target, "loss_and_grad", conformance_dtype)


def test_convexity(conformance_target: Target, conformance_dtype: str) -> None:
    """L(z) >= L(x) + <g, z - x> for random z: g is a subgradient of the backend's own loss."""
    run_property(conformance_target, "convexity", conformance_dtype)


def test_finite_differences(conformance_target: Target, conformance_dtype: str) -> None:
    """Away from ties the backend's loss changes exactly as its gradient predicts."""
    run_property(conformance_target, "finite_differences", conformance_dtype)


def test_autodiff(conformance_target: Target, conformance_dtype: str) -> None:
    """The library's autodiff (torch.autograd, jax.vjp) of l1_loss gives the spec's subgradient."""
    if conformance_target.backend not in conformance_target.adapter.autodiff_backends:
        pytest.skip(
            f"{conformance_target.adapter.name} arrays are not differentiated by this backend"
        )
    run_property(conformance_target, "autodiff", conformance_dtype)
