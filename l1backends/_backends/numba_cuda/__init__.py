"""The numba-cuda backend: CUDA kernels for numba device arrays and CUDA-array-interface objects.

Importing this package imports numba-cuda but compiles nothing; kernels are
compiled for each argument type on first use.  Under ``NUMBA_ENABLE_CUDASIM=1``
the same kernels run on numba-cuda's CPU simulator.
"""

from __future__ import annotations

from typing import Any

from ...registry import BackendSpec, Capabilities
from .. import ROUNDED_ONCE_ULPS

__all__ = ["SPEC", "backend", "probe"]

SPEC = BackendSpec(
    name="numba-cuda",
    implementation="l1backends._backends.numba_cuda:backend",
    probe="l1backends._backends.numba_cuda:probe",
    array_types=(
        "numba.cuda.cudadrv.devicearray:DeviceNDArray",
        "numba.cuda.simulator.cudadrv.devicearray:FakeCUDAArray",
    ),
    protocols=("__cuda_array_interface__",),
    capabilities=Capabilities(ulps=ROUNDED_ONCE_ULPS, deterministic=True),
)


def probe() -> str | None:
    """Return None when a CUDA device (or the simulator) is usable, else the real reason.

    Returns
    -------
    str or None
        The driver's or numba-cuda's own error text when CUDA cannot run here.
    """
    try:
        from numba import cuda
    except Exception as error:  # the import error is the reason
        return f"numba-cuda cannot be imported: {type(error).__name__}: {error}"
    if cuda.is_available():
        return None
    reason = None
    try:
        from numba.cuda.cudadrv import driver

        driver.driver.ensure_initialized()
        reason = driver.driver.initialization_error
    except Exception as error:  # the driver's own message is the reason
        reason = f"{type(error).__name__}: {error}"
    reason = " ".join(str(reason or "cuda.is_available() is False").split())
    return f"no usable CUDA device: {reason}"


def __getattr__(name: str) -> Any:
    if name == "backend":
        from ._backend import backend

        return backend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
