"""The CuPy backend's host logic, driven without a GPU.

``cupy.empty`` hands out NumPy arrays that stand in for device arrays (their
``data.ptr`` is their host address), and a recorder stands in for the compiled
kernels, so a call plans and "launches" everything it would on a device.  This
checks what needs no arithmetic: the kernel paths a call takes, the buffers it
allocates, and that the gradient reads Σw where the weight-sum pass wrote it.
The kernels' results are checked by the conformance suite on a device.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

cupy = pytest.importorskip("cupy", reason="CuPy is not installed")

from l1backends._backends.cupy import _backend  # noqa: E402
from l1backends.semantics import make_plan  # noqa: E402


class FakeDeviceArray(np.ndarray):
    """A NumPy array with the two attributes of a ``cupy.ndarray`` the backend reads."""

    @property
    def data(self):  # type: ignore[override]
        return SimpleNamespace(ptr=self.ctypes.data)

    @property
    def device(self):
        return _NoDevice()


class _NoDevice:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _device(array: np.ndarray) -> FakeDeviceArray:
    return np.asarray(array).view(FakeDeviceArray)


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch):
    """Launches and allocations of the calls made while the fixture is active."""
    record = SimpleNamespace(launches=[], allocations=0)

    def empty(shape, dtype):
        record.allocations += 1
        return _device(np.empty(shape, dtype=dtype))

    def function(name):
        return lambda grid, block, args: record.launches.append((name, grid, block, args))

    monkeypatch.setattr(cupy, "empty", empty)
    monkeypatch.setattr(_backend, "_function", function)
    return record


def _arrays(shape, dtype="float32", seed=0):
    rng = np.random.default_rng(seed)
    return [_device(rng.standard_normal(shape).astype(dtype)) for _ in range(3)]


def _misaligned(array: np.ndarray) -> FakeDeviceArray:
    buffer = np.empty(array.size + 8, dtype=array.dtype)
    start = (-buffer.ctypes.data % 16) // array.itemsize + 1
    view = buffer[start : start + array.size]
    view[...] = array.ravel()
    return _device(view)


def _plan(x, y, reduction="mean", w=None, **options):
    return make_plan(
        x.shape, x.dtype.name, y.shape, y.dtype.name, reduction,
        None if w is None else w.shape, None if w is None else w.dtype.name, **options,
    )  # fmt: skip


def test_a_weighted_mean_gradient_reads_the_weight_sum_where_it_was_written(recorded) -> None:
    x, y, w = _arrays(10_000)
    w = _device(np.abs(w) + 0.5)
    _backend.backend.loss_and_grad(_plan(x, y, w=w), x, y, w, None)
    names = [name for name, *_ in recorded.launches]
    # Σw (ops 40: WEIGHT_SUM | WEIGHT) and its finish, then the loss and gradient (ops 11)
    assert names == [
        "l1_dense<F32, 40, 1>",
        "l1_finish<F32>",
        "l1_dense<F32, 11, 3>",
        "l1_finish<F32>",
    ]
    ws_args, main_args = recorded.launches[1][3], recorded.launches[2][3]
    written = ws_args[4].data.ptr  # the Σw finish pass's words sink
    read = main_args[5].data.ptr  # the main pass's sw operand
    partials = main_args[10].data.ptr
    assert written == read != partials
    assert partials - read == 8  # one loss row's Σw, then the chunk sums
    assert recorded.allocations == 3  # loss, gradient, one scratch buffer


def test_allocations_per_call(recorded) -> None:
    x, y, w = _arrays(100)
    big_x, big_y, _ = _arrays(10_000)
    calls = [
        (lambda: _backend.backend.loss(_plan(x, y), x, y, None), 1),
        (lambda: _backend.backend.loss(_plan(big_x, big_y), big_x, big_y, None), 2),
        (lambda: _backend.backend.loss_and_grad(_plan(x, y, "none"), x, y, None, None), 2),
        (lambda: _backend.backend.grad(_plan(x, y), x, y, None, None), 1),
        (lambda: _backend.backend.partials(_plan(x, y, "sum", w), x, y, w), 1),
    ]
    for call, expected in calls:
        recorded.allocations = 0
        call()
        assert recorded.allocations == expected


def test_every_declared_path_is_planned_by_a_call(recorded) -> None:
    backend = _backend.backend
    x, y, _ = _arrays((4, 64))
    big_x, big_y, big_w = _arrays(9_000)
    c_x, c_y, _ = _arrays(6, "complex64")
    column = _device(np.abs(_arrays((1, 64))[0]) + 0.5)
    small_x = _device(np.asarray(x)[:, :1].copy())
    with backend.paths.recording() as visited:
        backend.loss(_plan(big_x, big_y), big_x, big_y, None)
        backend.grad(_plan(x, y, "sum"), x, y, None, 2.0)
        backend.loss_and_grad(_plan(x, y, "none"), x, y, None, None)
        backend.grad(_plan(big_x, big_y, w=big_w), big_x, big_y, _device(np.abs(big_w)), None)
        misaligned = _misaligned(np.asarray(big_x)), _misaligned(np.asarray(big_y))
        backend.loss_and_grad(_plan(*misaligned), *misaligned, None, None)
        backend.loss_and_grad(_plan(c_x, c_y, "none"), c_x, c_y, None, None)
        backend.grad(_plan(x, y, w=column, axis=0), x, y, column, None)
        backend.grad(_plan(small_x, y, "sum", broadcast=True), small_x, y, None, None)
    assert visited == backend.paths.names, sorted(backend.paths.names - visited)
