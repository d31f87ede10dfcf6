"""l1backends: one L1 loss (mean absolute error) and its subgradient for any array library.

Dispatches on the array type to numba-CPU, numba-CUDA, CuPy, Dask or a generic
Array-API backend; see :func:`backends`.  Importing this package imports no array
library beyond what it needs to define itself: backends load on first use.
"""

from .api import (
    BACKEND_ENV_VAR,
    L1Loss,
    backends,
    default_backend,
    l1_loss,
    l1_loss_and_grad,
    l1_loss_grad,
    register_backend,
    unregister_backend,
    use_backend,
)
from .registry import BackendInfo, BackendSpec, Capabilities

__version__ = "0.1.0"

__all__ = [
    "BACKEND_ENV_VAR",
    "BackendInfo",
    "BackendSpec",
    "Capabilities",
    "L1Loss",
    "__version__",
    "backends",
    "default_backend",
    "l1_loss",
    "l1_loss_and_grad",
    "l1_loss_grad",
    "register_backend",
    "unregister_backend",
    "use_backend",
]
