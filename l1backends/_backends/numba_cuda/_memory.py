"""Device memory for the numba-cuda backend, from a pool where the process has one.

A call allocates its outputs and one scratch buffer.  When the process already
uses CuPy, they come from CuPy's memory pool, tied to the call's stream (CuPy
hands a freed block back to later allocations on that stream only, so reuse is
ordered by the stream and no free synchronizes the device); otherwise from
numba's memory manager, which numba's EMM plugin interface can make a pool (for
example RMM's, with ``NUMBA_CUDA_MEMORY_MANAGER=rmm.allocators.numba``).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from numba import cuda

from ._device import SIMULATOR

__all__ = ["allocate", "cupy_allocate"]

_usable: dict[int, bool] = {}


def _cupy_usable(cupy: Any) -> bool:
    """Whether the process's CuPy can allocate on this machine (asked once)."""
    key = id(cupy)
    if key not in _usable:
        try:
            _usable[key] = cupy.cuda.runtime.getDeviceCount() > 0
        except Exception:  # no driver, or a CuPy built for another CUDA: use numba's
            _usable[key] = False
    return _usable[key]


def _stream_handle(stream: Any) -> int:
    """The CUDA stream handle of a numba stream (0, the legacy default, for ``0``)."""
    handle = getattr(stream, "handle", None)
    value = getattr(handle, "value", handle)
    return int(value or 0)


def cupy_allocate(cupy: Any, shape: tuple[int, ...], dtype: np.dtype, stream: Any) -> Any:
    """A numba device array of ``shape`` from CuPy's pool, tied to ``stream``.

    The block is taken while ``stream`` is CuPy's current stream (and numba's current
    device CuPy's), so CuPy returns it to that stream's free list when the array dies.
    """
    device = cuda.get_current_device().id
    with cupy.cuda.Device(device), cupy.cuda.ExternalStream(_stream_handle(stream)):
        memory = cupy.empty(shape, dtype=dtype)
    array = cuda.as_cuda_array(memory, sync=False)
    return array.bind(stream) if stream else array


def allocate(shape: tuple[int, ...], dtype: np.dtype, stream: Any) -> Any:
    """A fresh device array for one call, on ``stream``: CuPy's pool if in use, else numba's."""
    cupy = None if SIMULATOR else sys.modules.get("cupy")
    if cupy is not None and _cupy_usable(cupy):
        return cupy_allocate(cupy, shape, dtype, stream)
    return cuda.device_array(shape, dtype=dtype, stream=stream)
