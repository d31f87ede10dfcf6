"""``out=`` buffers: written in place and returned where a backend takes them, else declined.

Every violation (shape, dtype, read-only, overlap with an input, another library) is
refused before anything is written: the buffer holds its old bits afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from .. import api
from ..registry import declined, registry
from ..semantics import make_plan
from .adapters import ARRAY_API_STRICT, NUMPY
from .checks import Target, same_bits

__all__ = ["test_out_buffers"]

_CALLS: list[tuple[str, str, Any]] = [
    ("l1_loss", "none", None),
    ("l1_loss", "mean", 0),
    ("l1_loss_grad", "mean", None),
    ("l1_loss_grad", "sum", 1),
    ("l1_loss_and_grad", "none", None),
]


def _refused(target: Target, buffer: Any, call: Callable[[], Any], error: type) -> None:
    """``call`` raises ``error`` and leaves ``buffer`` as it was."""
    before = target.adapter.to_numpy(buffer)
    with pytest.raises(error):
        call()
    assert same_bits(target.adapter.to_numpy(buffer), before), "a refused out= was written"


def test_out_buffers(conformance_target: Target) -> None:
    """Results land in ``out`` (the same object is returned) with the bits of a fresh call."""
    adapter, name = conformance_target.adapter, conformance_target.backend
    dtype = "float32" if "float32" in conformance_target.capabilities.dtypes else "float64"
    values = np.arange(12, dtype=dtype).reshape(3, 4) / 3
    x, y = adapter.from_numpy(values), adapter.from_numpy(values[::-1] * 2)
    plan = make_plan((3, 4), dtype, (3, 4), dtype, "none", writes_out=True)
    reason = declined(registry.implementation(name), plan)
    if reason is not None:
        buffer = adapter.from_numpy(np.full((3, 4), 7, dtype))
        call = lambda: api.l1_loss(x, y, "none", out=buffer, backend=name)  # noqa: E731
        _refused(conformance_target, buffer, call, TypeError)
        return
    for function, reduction, axis in _CALLS:
        fresh = getattr(api, function)(x, y, reduction, axis=axis, backend=name)
        written = fresh[1] if function == "l1_loss_and_grad" else fresh
        buffer = adapter.from_numpy(np.full(tuple(written.shape), 7, dtype))
        result = getattr(api, function)(x, y, reduction, axis=axis, backend=name, out=buffer)
        returned = result[1] if function == "l1_loss_and_grad" else result
        assert returned is buffer, f"{function} did not return its out= buffer"
        assert same_bits(adapter.to_numpy(buffer), adapter.to_numpy(written)), function

    def into(buffer: Any) -> Callable[[], Any]:
        return lambda: api.l1_loss_grad(x, y, "sum", backend=name, out=buffer)

    wrong_shape = adapter.from_numpy(np.ones((4, 3), dtype))
    _refused(conformance_target, wrong_shape, into(wrong_shape), ValueError)
    other = "float64" if dtype == "float32" else "float32"
    wrong_dtype = adapter.from_numpy(np.ones((3, 4), other))
    _refused(conformance_target, wrong_dtype, into(wrong_dtype), TypeError)
    _refused(conformance_target, x, into(x), ValueError)  # out overlaps the input
    frozen = adapter.read_only(adapter.from_numpy(np.ones((3, 4), dtype)))
    if frozen is not None:
        _refused(conformance_target, frozen, into(frozen), ValueError)
    foreign_adapter = ARRAY_API_STRICT if adapter is NUMPY else NUMPY
    if foreign_adapter.unavailable_reason() is None:
        foreign = foreign_adapter.from_numpy(np.ones((3, 4), dtype))
        before = foreign_adapter.to_numpy(foreign)
        with pytest.raises(TypeError):
            into(foreign)()
        assert same_bits(foreign_adapter.to_numpy(foreign), before)
