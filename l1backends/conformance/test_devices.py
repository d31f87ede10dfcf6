"""Devices: outputs stay on the inputs' device, and arrays on two devices are never mixed.

The API caches whole call signatures; a cache that ignored devices once let a call
mixing two devices through after a same-shaped call on one device.  Libraries with
a single device skip this test, saying so.
"""

from __future__ import annotations

import numpy as np
import pytest

from .. import api
from .checks import Target

__all__ = ["test_devices_are_kept_and_never_mixed"]


def test_devices_are_kept_and_never_mixed(conformance_target: Target) -> None:
    adapter, name = conformance_target.adapter, conformance_target.backend
    device = adapter.other_device()
    if device is None:
        pytest.skip(f"{adapter.name} arrays have one device here: nothing to mix")
    dtype = next(
        d for d in conformance_target.capabilities.dtypes if d not in adapter.unsupported_dtypes
    )
    values = np.arange(6, dtype=dtype).reshape(2, 3)
    x, y = adapter.from_numpy(values), adapter.from_numpy(values * 2)
    x_there, y_there = adapter.to_device(x, device), adapter.to_device(y, device)
    for forced in (None, name):
        api.l1_loss(x, y, backend=forced)  # the same signature on one device, cached
        for function in (api.l1_loss, api.l1_loss_grad):
            result = function(x_there, y_there, "none", backend=forced)
            problem = adapter.check_native(result, x_there)
            assert problem is None, f"{function.__name__} on {device}: {problem}"
        loss, grad = api.l1_loss_and_grad(x_there, y_there, backend=forced)
        assert adapter.check_native(loss, x_there) is None
        assert adapter.check_native(grad, x_there) is None
        for first, second in ((x, y_there), (x_there, y)):
            with pytest.raises(TypeError, match="different devices"):
                api.l1_loss(first, second, backend=forced)
            with pytest.raises(TypeError, match="different devices"):
                api.l1_loss_grad(first, second, backend=forced)
