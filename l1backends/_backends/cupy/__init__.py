"""The CuPy backend ("cupy"): fused CUDA C++ kernels for ``cupy.ndarray``, run by CuPy.

Importing this package does not import CuPy: :func:`probe` does, and reports why
the backend cannot run (CuPy missing, or the real CUDA driver error); ``backend``
is loaded on first access.
"""

from __future__ import annotations

from typing import Any

from ...registry import BackendSpec, Capabilities
from .. import ROUNDED_ONCE_ULPS

__all__ = ["SPEC", "backend", "probe"]

SPEC = BackendSpec(
    name="cupy",
    implementation="l1backends._backends.cupy:backend",
    probe="l1backends._backends.cupy:probe",
    array_types=("cupy:ndarray",),
    capabilities=Capabilities(ulps=ROUNDED_ONCE_ULPS, deterministic=True),
)


def probe() -> str | None:
    """Return None when CuPy can run kernels here, else the real reason it cannot.

    Returns
    -------
    str or None
        For example ``"ImportError: No module named 'cupy'"`` or
        ``"CUDARuntimeError: cudaErrorInsufficientDriver: CUDA driver version is
        insufficient for CUDA runtime version"``.
    """
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "CuPy found no CUDA device"
    except Exception as error:  # the driver's own error is the reason users need
        return f"{type(error).__name__}: {error}"
    return None


def __getattr__(name: str) -> Any:
    if name == "backend":
        from ._backend import backend

        return backend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
