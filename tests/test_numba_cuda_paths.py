"""The numba-cuda backend's kernel paths, its partition and its allocations (simulator or GPU).

Every declared kernel path is taken by a chosen call, checked against the exact
references of the conformance suite (``fractions``).  The weighted-mean gradient
on aligned vectors is a regression test: the dense kernel once read Σw from the
start of its scratch buffer instead of its offset, and returned ±inf.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import pytest

cuda = pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")
if not (os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" or cuda.is_available()):
    pytest.skip("no CUDA device and NUMBA_ENABLE_CUDASIM=1 is not set", allow_module_level=True)

import l1backends as l1  # noqa: E402
from l1backends._backends.numba_cuda import _backend  # noqa: E402
from l1backends._backends.numba_cuda import backend as numba_cuda  # noqa: E402
from l1backends.conformance.reference import (  # noqa: E402
    distance_in_ulps,
    exact_grad,
    exact_loss,
)
from l1backends.semantics import make_plan  # noqa: E402

BOUND = {"float16": 0.6, "float32": 0.6, "float64": 2.0}
RNG = np.random.default_rng(11)


def _host(array) -> np.ndarray:
    return np.asarray(array.copy_to_host())


def _device(array: np.ndarray):
    """A device array viewing the same layout as ``array`` (any strides, under the simulator)."""
    if array.flags.c_contiguous and array.ctypes.data % 16 == 0:
        return cuda.to_device(array)
    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        pytest.skip("building arbitrary device views needs the simulator")
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    return FakeCUDAArray(array)


def _misaligned(array: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``array`` that starts one element past a 16-byte boundary."""
    buffer = np.empty(array.size + 16, dtype=array.dtype)
    start = (-buffer.ctypes.data % 16) // array.itemsize + 1
    view = buffer[start : start + array.size].reshape(array.shape)
    view[...] = array
    return view


def _check(function: str, x, y, reduction="mean", **options) -> None:
    """Run ``function`` on device views and compare with the exact references."""
    weight = options.get("weight")
    plan = make_plan(
        x.shape, x.dtype.name, y.shape, y.dtype.name, reduction,
        None if weight is None else weight.shape, None if weight is None else weight.dtype.name,
        options.get("axis"), options.get("broadcast", False),
    )  # fmt: skip
    device = {key: _device(value) if isinstance(value, np.ndarray) else value
              for key, value in options.items()}  # fmt: skip
    result = getattr(l1, function)(_device(x), _device(y), reduction, **device)
    loss, grad = {"l1_loss": (result, None), "l1_loss_grad": (None, result)}.get(function, result)
    bound = BOUND[plan.result_dtype]
    if loss is not None:
        got = _host(loss).ravel()
        for value, exact in zip(got, exact_loss(plan, x, y, weight), strict=True):
            assert distance_in_ulps(float(value), exact, plan.result_dtype) <= bound, (value, exact)
    if grad is not None:
        got = _host(grad).ravel()
        for value, (components, magnitude) in zip(
            got, exact_grad(plan, x, y, weight, None), strict=True
        ):
            parts = (value.real, value.imag) if len(components) == 2 else (value,)
            for part, exact in zip(parts, components, strict=True):
                distance = distance_in_ulps(float(part), exact, plan.result_dtype, magnitude)
                assert distance <= bound, (value, components)


def _data(shape, dtype="float32"):
    x = RNG.standard_normal(shape).astype(dtype)
    y = RNG.standard_normal(shape).astype(dtype)
    y.flat[::7] = x.flat[::7]  # ties: gradient 0
    return x, y


def _weighted_mean(n: int) -> None:
    x, y = _data(n)
    _check("l1_loss_and_grad", x, y, weight=RNG.uniform(0.5, 2.0, n).astype(np.float32))


def test_weighted_mean_gradient_on_aligned_vectors_reads_the_weight_sum() -> None:
    x, y = _data(40)
    w = RNG.uniform(0.5, 2.0, 40).astype(np.float32)
    _, grad = l1.l1_loss_and_grad(_device(x), _device(y), weight=_device(w))
    assert np.isfinite(_host(grad)).all()  # it was ±inf
    _weighted_mean(40)
    _weighted_mean(1000)  # chunked: Σw and the chunk sums share the scratch buffer


def _broadcast_weight() -> None:
    x, y = _data((4, 5), "float64")
    _check("l1_loss_and_grad", x, y, weight=RNG.uniform(0.5, 2.0, (1, 5)), axis=0)


def _broadcast_input() -> None:
    x, y = RNG.standard_normal((3, 1)), RNG.standard_normal((3, 4))
    w = RNG.uniform(0.5, 2.0, (3, 4))
    _check("l1_loss_and_grad", x, y, broadcast=True, weight=w)


CASES: list[tuple[str, Callable[[], None]]] = [
    ("dense mean, chunked", lambda: _check("l1_loss", *_data(1000))),
    ("dense weighted mean", lambda: _weighted_mean(40)),
    ("dense sum over an axis", lambda: _check("l1_loss", *_data((4, 64)), "sum", axis=1)),
    ("dense gradient", lambda: _check("l1_loss_grad", *_data(33), "sum")),
    ("dense none", lambda: _check("l1_loss_and_grad", *_data((3, 8), "float64"), "none")),
    ("dense float16", lambda: _check("l1_loss_and_grad", *_data(70, "float16"))),
    ("strided loss", lambda: _check("l1_loss", *(a[::2] for a in _data(40)))),
    ("misaligned gradient", lambda: _check("l1_loss_grad", *(_misaligned(a) for a in _data(21)))),
    ("complex none", lambda: _check("l1_loss_and_grad", *_data(5, "complex128"), "none")),
    ("complex mean, chunked", lambda: _check("l1_loss_and_grad", *_data(300, "complex64"))),
    ("broadcast weight", _broadcast_weight),
    ("broadcast input", _broadcast_input),
]


def test_every_declared_path_is_taken_by_a_checked_call() -> None:
    visited: set[str] = set()
    for _, case in CASES:
        with numba_cuda.paths.recording() as seen:
            case()
        visited |= seen
    assert visited == numba_cuda.paths.names, sorted(numba_cuda.paths.names - visited)


def _recorded_partitions(x, y) -> list[tuple[str, object]]:
    """The kernel and partition of each pass of ``l1_loss(x, y, "sum")``."""
    seen = []
    original = _backend._run_pass

    def spy(call, step, arrays, sinks):
        with numba_cuda.paths.recording() as paths:
            original(call, step, arrays, sinks)
        seen.append((sorted(paths), step.partition))

    _backend._run_pass = spy
    try:
        total = l1.l1_loss(_device(x), _device(y), "sum")
    finally:
        _backend._run_pass = original
    return [(tuple(paths), part, _host(total).tobytes()) for paths, part in seen]


def test_partition_and_bits_do_not_depend_on_alignment_or_strides() -> None:
    x, y = _data(900)
    wide_x, wide_y = np.empty(1800, np.float32), np.empty(1800, np.float32)
    wide_x[::2], wide_y[::2] = x, y
    runs = {
        "aligned": _recorded_partitions(x, y),
        "misaligned": _recorded_partitions(_misaligned(x), _misaligned(y)),
        "stepped": _recorded_partitions(wide_x[::2], wide_y[::2]),
    }
    kernels = {name: [paths for paths, _, _ in run] for name, run in runs.items()}
    assert kernels["aligned"] == [("dense:loss", "finish")]
    assert kernels["misaligned"] == kernels["stepped"] == [("finish", "strided:loss")]
    partitions = {name: [part for _, part, _ in run] for name, run in runs.items()}
    assert partitions["aligned"] == partitions["misaligned"] == partitions["stepped"]
    assert partitions["aligned"][0].chunks > 1
    bits = {run[0][2] for run in runs.values()}
    assert len(bits) == 1  # the same terms in the same order: the same sum


def test_partials_are_the_same_bits_for_any_alignment() -> None:
    x, y = _data(700, "float64")
    w = RNG.uniform(0.5, 2.0, 700)
    plan = make_plan((700,), "float64", (700,), "float64", "sum", (700,), "float64")
    words = []
    for view in (lambda a: a, _misaligned):
        parts = numba_cuda.partials(plan, _device(view(x)), _device(view(y)), _device(view(w)))
        words.append(b"".join(_host(part).tobytes() for part in parts))
    assert words[0] == words[1]


def _allocations(function: str, *args, **options) -> int:
    count = 0
    original = _backend.allocate

    def counting(shape, dtype, stream):
        nonlocal count
        count += 1
        return original(shape, dtype, stream)

    _backend.allocate = counting
    try:
        getattr(l1, function)(*args, **options)
    finally:
        _backend.allocate = original
    return count


def test_a_call_allocates_at_most_three_buffers_and_none_unused() -> None:
    x, y = (cuda.to_device(a) for a in _data(1000))
    small_x, small_y = (cuda.to_device(a) for a in _data(100))
    w = cuda.to_device(RNG.uniform(0.5, 2.0, 1000).astype(np.float32))
    # the loss alone; one chunk needs no scratch, several need one buffer of chunk sums
    assert _allocations("l1_loss", small_x, small_y) == 1
    assert _allocations("l1_loss", x, y) == 2
    # loss, gradient, and one scratch buffer for Σw and the chunk sums
    assert _allocations("l1_loss_and_grad", x, y, weight=w) == 3
    assert _allocations("l1_loss_and_grad", small_x, small_y, "none") == 2
    assert _allocations("l1_loss_grad", small_x, small_y) == 1


def test_can_run_declines_plans_beyond_the_dimension_limit() -> None:
    wide = (2,) * 9
    plan = make_plan(wide, "float32", wide, "float32", "none")
    assert "9 dimensions" in numba_cuda.can_run(plan)
    assert numba_cuda.can_run(make_plan(wide, "float32", wide, "float32", "sum", axis=0)) is None


def test_buffers_from_cupys_pool_are_taken_on_the_calls_stream_and_device(monkeypatch) -> None:
    from types import SimpleNamespace

    from l1backends._backends.numba_cuda import _memory

    log = []

    class Context:
        def __init__(self, what):
            self.what = what

        def __enter__(self):
            log.append(f"enter {self.what}")

        def __exit__(self, *exc):
            log.append(f"exit {self.what}")

    def empty(shape, dtype):
        log.append(f"empty {shape} {np.dtype(dtype).name}")
        return SimpleNamespace(shape=shape)

    fake_cupy = SimpleNamespace(
        empty=empty,
        cuda=SimpleNamespace(
            Device=lambda index: Context(f"device {index}"),
            ExternalStream=lambda handle: Context(f"stream {handle}"),
        ),
    )
    bound = []
    fake_cuda = SimpleNamespace(
        get_current_device=lambda: SimpleNamespace(id=1),
        as_cuda_array=lambda memory, sync: SimpleNamespace(
            memory=memory, sync=sync, bind=lambda stream: bound.append(stream) or "bound"
        ),
    )
    monkeypatch.setattr(_memory, "cuda", fake_cuda)
    stream = SimpleNamespace(handle=SimpleNamespace(value=0xBEEF))
    assert _memory.cupy_allocate(fake_cupy, (4, 3), np.dtype("float64"), stream) == "bound"
    assert log == [
        "enter device 1", f"enter stream {0xBEEF}", "empty (4, 3) float64",
        f"exit stream {0xBEEF}", "exit device 1",
    ]  # fmt: skip
    assert bound == [stream]
    default = _memory.cupy_allocate(fake_cupy, (2,), np.dtype("float32"), 0)
    assert default.sync is False and default.memory.shape == (2,) and "enter stream 0" in log


def test_absent_operands_travel_as_the_null_pointer_numba_types_them_as() -> None:
    from numba.cuda import types

    none = _backend._NoneArguments.prepare_args(types.none, None, stream=0, retr=[])
    assert none == (types.uint64, 0)
    array = types.float32[::1]
    assert _backend._NoneArguments.prepare_args(array, "x", stream=0, retr=[]) == (array, "x")
