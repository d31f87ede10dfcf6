"""The PyTorch backend ("torch"): torch tensors on the native kernels, with autograd.

A CPU tensor's memory is read in place as a NumPy array and runs on the backend the
registry picks for NumPy (numba-cpu); a CUDA tensor's memory goes to CuPy or
numba-cuda through DLPack or ``__cuda_array_interface__``.  Results come back as
tensors sharing the fresh result's memory.  When an argument requires grad,
``l1_loss`` returns a tensor with a ``grad_fn`` whose forward computed the gradient
in the same pass; under ``torch.compile`` the same work runs as the custom ops
``torch.ops.l1backends.*`` (see :mod:`._ops`).

This module does not import torch: :func:`probe` does, and ``backend`` is loaded on
first access.
"""

from __future__ import annotations

from typing import Any

from ...registry import BackendSpec, Capabilities
from .. import ROUNDED_ONCE_ULPS

__all__ = ["MIN_VERSION", "SPEC", "backend", "probe"]

#: torch.library.custom_op, register_fake and register_autograd arrived in 2.4.
MIN_VERSION = (2, 4)

SPEC = BackendSpec(
    name="torch",
    implementation="l1backends._backends.torch:backend",
    probe="l1backends._backends.torch:probe",
    array_types=("torch:Tensor",),
    capabilities=Capabilities(ulps=ROUNDED_ONCE_ULPS, deterministic=True),
    before=("array-api",),
)


def probe() -> str | None:
    """Return None when torch can be used, else the real reason (missing, or too old)."""
    try:
        import torch
    except Exception as error:  # the import error is the reason shown to users
        return (
            f"torch cannot be imported ({type(error).__name__}: {error}); "
            "install it with pip install 'l1backends[frameworks]'"
        )
    version = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
    if version < MIN_VERSION:
        return f"torch {torch.__version__} is too old: the torch backend needs torch >= 2.4"
    return None


def __getattr__(name: str) -> Any:
    if name == "backend":
        from ._backend import backend

        return backend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
