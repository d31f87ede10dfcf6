"""Host side of the numba-cuda backend: operands, passes, launches and results.

Nothing here waits for the device: every kernel is queued on the input's stream
(a foreign ``__cuda_array_interface__`` stream included, imported with
``sync=False``), and results are device arrays on that stream.  A call allocates
at most three device buffers (the loss, the gradient and one scratch buffer for
Σw and the chunk sums), from CuPy's memory pool when the process uses CuPy, else
from numba's memory manager (which numba's EMM plugin interface can make a pool,
such as RMM's).  Every launch is cut by :func:`~.._cuda_launch.partition`, which
depends on sizes and the dtype alone, so results are bitwise reproducible on any
GPU and for any layout whose reduced axes walk memory in the same order.
"""

from __future__ import annotations

import math
import sys
import threading
import warnings
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
from numba import cuda

from ..._typing import Array
from ...semantics import Plan
from .. import out_declined
from .._cuda_launch import (
    FINISH_THREADS,
    MAX_GRID,
    THREADS_PER_BLOCK,
    WARP_SIZE,
    group_dims,
    limit_reason,
)
from .._cuda_passes import (
    OPERANDS,
    Access,
    PassPlan,
    is_dense,
    partials_pass,
    path_names,
    plan_passes,
    scratch_words,
)
from .._fused import FusedPassBackend, Request
from .._iteration import (
    broadcast_strides,
    build_space,
    c_strides,
    element_strides,
    reduced_axis_strides,
)
from .._paths import KernelPaths
from ._device import SIMULATOR, Operand, Sink
from ._kernels import LAUNCH_BOUNDS, Layout, Spec, make_kernels
from ._memory import allocate

__all__ = ["PATHS", "NumbaCudaBackend", "backend"]

#: The kernel paths, named ``kernel:pass``, and the smallest calls that take them under the
#: simulator (32 threads per block; on a GPU 256).  ``dense`` needs real operands of the
#: compute dtype, 16-byte aligned, whose rows lie back to back (C order over the kept then
#: the reduced axes); anything else (complex, strided, reversed, misaligned such as
#: ``x[1:]``, mixed dtypes, a broadcast weight) is ``strided``.
#:
#: - ``*:loss``: ``l1_loss`` or ``l1_loss_and_grad`` with "mean" or "sum" (any axis);
#: - ``*:grad``: ``l1_loss_grad`` with "mean" or "sum";
#: - ``*:elementwise``: reduction="none" (loss, gradient or both);
#: - ``*:weight-sum``: the gradient of a weighted mean (Σw first; dense when the weight is);
#: - ``strided:grad-sum``: the gradient of an input broadcast against the target
#:   (``broadcast=True``, input shape (3, 1), target (3, 4));
#: - ``finish``: a row cut into several chunks: more than 32 x 4 vectors per row under the
#:   simulator (over 512 float32 or 256 float64 elements; 4096 and 2048 on a GPU).
PATHS = KernelPaths(path_names())
# The simulator runs every CUDA thread as a Python thread: small blocks keep it usable.
_MAX_THREADS = WARP_SIZE if SIMULATOR else THREADS_PER_BLOCK
_FINISH_THREADS = WARP_SIZE if SIMULATOR else FINISH_THREADS
_compiled: dict[Spec, SimpleNamespace] = {}
_compiled_lock = threading.Lock()


class _NoneArguments:
    """Passes a None kernel argument (an absent operand) as the null pointer numba types it as."""

    @staticmethod
    def prepare_args(ty: Any, val: Any, **kwargs: Any) -> tuple[Any, Any]:
        from numba.cuda import types

        # mypy reads the simulator's stubs of numba.cuda.types, which lack these
        if isinstance(ty, types.NoneType):  # type: ignore[attr-defined]
            return types.uint64, 0  # type: ignore[attr-defined]
        return ty, val


def _jit(name: str, function: Any) -> Any:
    if SIMULATOR:
        return cuda.jit(function)
    options = {"extensions": [_NoneArguments()], "launch_bounds": LAUNCH_BOUNDS[name]}
    return cuda.jit(function, **options)


def _kernels(spec: Spec) -> SimpleNamespace:
    """The jit-compiled kernels of ``spec`` (compiled per argument types on first launch)."""
    kernels = _compiled.get(spec)
    if kernels is None:
        with _compiled_lock:
            kernels = _compiled.get(spec)
            if kernels is None:
                sources = make_kernels(spec, shuffle=not SIMULATOR)
                kernels = SimpleNamespace(
                    **{name: _jit(name, fn) for name, fn in vars(sources).items()}
                )
                _compiled[spec] = kernels
    return kernels


@dataclass(frozen=True)
class _Array:
    """An array as the kernels see it: a 1-D buffer, element 0's offset, strides over the shape."""

    buffer: Any
    offset: int
    strides: tuple[int, ...]
    dtype: np.dtype

    @property
    def aligned(self) -> bool:
        """Whether element 0 starts the buffer on a 16-byte boundary (for 128-bit access)."""
        return self.offset == 0 and (self.buffer.size == 0 or _pointer(self.buffer) % 16 == 0)


def _pointer(array: Any) -> int:
    if SIMULATOR:
        return int(array._ary.__array_interface__["data"][0])
    return int(array.__cuda_array_interface__["data"][0])


def _device_array(array: Any) -> Any:
    """The numba device array for any served object; a foreign one is imported zero-copy."""
    if getattr(array, "__cuda_ndarray__", False):
        return array
    return cuda.as_cuda_array(array, sync=False)


def _flat_buffer(array: Any, strides: tuple[int, ...]) -> tuple[Any, int]:
    """A 1-D view from the lowest address ``array`` touches, and element 0's offset in it."""
    shape = array.shape
    low = sum(s * (n - 1) for n, s in zip(shape, strides, strict=True) if s < 0 and n)
    high = sum(s * (n - 1) for n, s in zip(shape, strides, strict=True) if s > 0 and n)
    span = 0 if 0 in shape else high - low + 1
    if SIMULATOR:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        host = array._ary
        host = host[tuple(slice(None, None, -1) if s < 0 else slice(None) for s in host.strides)]
        view = np.lib.stride_tricks.as_strided(
            host, shape=(span,), strides=(host.itemsize,), writeable=False
        )
        return FakeCUDAArray(view), -low
    interface = {
        "shape": (span,),
        "strides": None,
        "typestr": array.dtype.str,
        "data": (_pointer(array) + low * array.dtype.itemsize, False),
        "version": 3,
    }
    return cuda.from_cuda_array_interface(interface, owner=array, sync=False), -low


def _view(array: Any, strides: tuple[int, ...]) -> _Array:
    """``array`` as a kernel operand whose strides along the plan's shape are ``strides``."""
    buffer, offset = _flat_buffer(array, _element_strides(array))
    return _Array(buffer, offset, strides, np.dtype(array.dtype))


def _broadcast(array: Any, shape: tuple[int, ...]) -> _Array:
    """``array`` as an operand over ``shape``, which it broadcasts to."""
    return _view(array, broadcast_strides(array.shape, _element_strides(array), shape))


def _element_strides(array: Any) -> tuple[int, ...]:
    strides = element_strides(array.strides, array.dtype.itemsize)
    if strides is None:
        raise ValueError(
            f"strides {array.strides} are not multiples of the item size {array.dtype.itemsize}; "
            "the numba-cuda backend cannot read this view without a copy"
        )
    return strides


def _real_view(array: Any) -> Any:
    """A 1-D real view of a fresh C-contiguous array (complex as interleaved parts)."""
    dtype = np.dtype(array.dtype)
    real = np.dtype(f"f{dtype.itemsize // 2}") if dtype.kind == "c" else dtype
    n = array.size * (dtype.itemsize // real.itemsize)
    if SIMULATOR:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        return FakeCUDAArray(array._ary.reshape(-1).view(real).reshape(n))
    from numba.cuda.cudadrv.devicearray import DeviceNDArray

    return DeviceNDArray(
        shape=(n,), strides=(real.itemsize,), dtype=real, stream=array.stream,
        gpu_data=array.gpu_data,
    )  # fmt: skip


class _Call:
    """One call: device views of the arguments, the stream, and its allocations."""

    def __init__(
        self,
        plan: Plan,
        input: Array,
        target: Array,
        weight: Array | None,
        grad_output: Array | float | None,
    ) -> None:
        self.plan = plan
        self.original = input
        self.x = _device_array(input)
        self.y = _device_array(target)
        self.w = None if weight is None else _device_array(weight)
        self.g = None if not hasattr(grad_output, "shape") else _device_array(grad_output)
        self.g_scalar = 1.0
        if grad_output is not None and self.g is None:
            self.g_scalar = float(np.dtype(plan.result_dtype).type(grad_output))
        self.stream = self.x.stream
        self._wait_for(self.y, self.w, self.g)
        self.mode = np.dtype(plan.result_dtype).type(0)

    def _wait_for(self, *others: Any) -> None:
        """Order foreign streams before ours on the device (an event wait, never a host sync)."""
        if SIMULATOR:
            return
        for other in others:
            stream = getattr(other, "stream", 0)
            if other is not None and stream and stream is not self.stream:
                event = cuda.event(timing=False)  # type: ignore[call-arg]  # the simulator's Event takes no timing
                event.record(stream)
                event.wait(self.stream)

    def empty(self, shape: tuple[int, ...], dtype: str) -> Any:
        return allocate(shape, np.dtype(dtype), self.stream)

    def operands(self) -> dict[str, _Array]:
        """x, y, w and g over the plan's shape (g's strides on the loss's kept axes)."""
        plan = self.plan
        ndim = len(plan.shape)
        arrays = {name: _broadcast(getattr(self, name), plan.shape) for name in ("x", "y")}
        if self.w is not None:
            arrays["w"] = _broadcast(self.w, plan.shape)
        if self.g is not None:
            # grad_output has the loss's shape (its axes are the kept axes), or is 0-d.
            strides = (0,) * ndim
            if self.g.shape:
                strides = reduced_axis_strides(ndim, plan.kept_axes, _element_strides(self.g))
            arrays["g"] = _view(self.g, strides)
        return arrays

    def output(self, array: Any) -> _Array:
        """A fresh C-contiguous output of the plan's shape as an operand (complex interleaved)."""
        flat = _real_view(array)
        parts = 2 if np.dtype(array.dtype).kind == "c" else 1
        strides = c_strides(array.shape, parts)
        full = broadcast_strides(array.shape, strides, self.plan.shape)
        return _Array(flat, 0, full, np.dtype(flat.dtype))

    def finish(self, result: Any) -> Any:
        """Hand a result back in the caller's library: a foreign array is wrapped zero-copy."""
        family = type(self.original).__module__.partition(".")[0]
        if family == "torch":
            torch = sys.modules["torch"]
            return torch.as_tensor(result, device=self.original.device)
        return result


def _launch(kernel: Any, blocks: int, threads: int, stream: Any, *args: Any) -> None:
    if SIMULATOR:
        # Simulated threads do not inherit numpy's error state; the spec wants no warnings.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            kernel[blocks, threads, stream](*args)
    else:
        kernel[blocks, threads, stream](*args)


def _spec(step: PassPlan, dtype: str) -> Spec:
    return Spec(step.op, step.finish, step.scale, dtype)


def _run_pass(
    call: _Call, step: PassPlan, arrays: dict[str, _Array], sinks: dict[str, Any]
) -> None:
    """Launch one pass (and its finish pass when its rows are cut into chunks)."""
    if step.empty:
        return
    part = step.partition
    strides = [arrays[name].strides for name in step.operands]
    lead = step.operands.index(step.lead)
    space = build_space(call.plan.shape, step.kept, step.reduced, strides, lead)
    access = {name: Access(arrays[name].dtype.name, arrays[name].aligned) for name in step.operands}
    dense = is_dense(step, call.plan.compute_dtype, space, access)
    if dense:
        padded = space.padded(1)
        shapes: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())
    else:
        kept_dims = group_dims(len(space.kept_shape))
        padded = space.padded(kept_dims, group_dims(len(space.reduced_shape)))
        shapes = (padded.kept_shape, padded.reduced_shape)
    records = {
        name: Operand(
            arrays[name].buffer, arrays[name].offset,
            (padded.kept_strides[index], padded.reduced_strides[index]), call.mode,
        )
        for index, name in enumerate(step.operands)
    }  # fmt: skip
    layout = Layout(
        part.rows, part.count, part.lanes, part.iters, part.chunks, *shapes, step.scale_count
    )
    kernels = _kernels(_spec(step, call.plan.compute_dtype))
    PATHS.visit(f"{'dense' if dense else 'strided'}:{step.kind}")
    sink = None if step.sink is None else sinks.get(step.sink)
    partials = sinks["partials"] if step.chunked else None
    args = [records.get(name) for name in OPERANDS]
    kernel = kernels.dense_pass if dense else kernels.strided_pass
    _launch(kernel, part.blocks, part.threads, call.stream, *args, sink, partials, layout,
            call.g_scalar)  # fmt: skip
    if step.chunked:
        PATHS.visit("finish")
        blocks = min(part.rows, MAX_GRID)
        _launch(kernels.finish_pass, blocks, _FINISH_THREADS, call.stream, partials, sink, layout)


def _run_passes(
    call: _Call, passes: list[PassPlan], sinks: dict[str, Any], outputs: dict[str, _Array]
) -> None:
    """Take one scratch buffer for Σw and the chunk sums, then launch every pass in order."""
    plan = call.plan
    arrays = {**call.operands(), **outputs}
    rows_sw, partial_words = scratch_words(passes)
    if rows_sw + partial_words:
        scratch = call.empty((rows_sw + partial_words,), "float64")
        sinks["partials"] = scratch[rows_sw:]
        if rows_sw:
            # Σw of each loss row, at the start of the scratch buffer, for the gradient.
            sinks["weight-sum"] = Sink(scratch, 0, 1, 0)
            ndim = len(plan.shape)
            strides = reduced_axis_strides(ndim, plan.kept_axes, c_strides(plan.out_shape))
            arrays["sw"] = _Array(scratch, 0, strides, np.dtype(np.float64))
    for step in passes:
        _run_pass(call, step, arrays, sinks)


class NumbaCudaBackend(FusedPassBackend):
    """L1 loss and subgradient for numba device arrays and ``__cuda_array_interface__`` objects."""

    name = "numba-cuda"
    paths = PATHS

    def can_run(self, plan: Plan) -> str | None:
        """Why the kernels cannot take ``plan`` (``out=``, too many dimensions), or None."""
        return out_declined(plan) or limit_reason(plan)

    def _words(self, request: Request) -> list[Array]:
        """The unrounded double words of the plan's rows, each an array of the loss's shape."""
        plan = request.plan
        call = _Call(plan, request.input, request.target, request.weight, None)
        rows = math.prod(plan.out_shape)
        words = call.empty((4, rows), "float64")
        sinks = {"words": Sink(words.reshape(4 * rows), 0, 1, rows)}
        _run_passes(call, [partials_pass(plan, _MAX_THREADS)], sinks, {})
        return [call.finish(words[k].reshape(plan.out_shape)) for k in range(4)]

    def _run(self, request: Request) -> tuple[Array | None, Array | None]:
        plan, want_loss, want_grad = request.plan, request.want_loss, request.want_grad
        call = _Call(plan, request.input, request.target, request.weight, request.grad_output)
        passes = plan_passes(
            plan, g_array=call.g is not None, want_loss=want_loss, want_grad=want_grad,
            max_threads=_MAX_THREADS,
        )  # fmt: skip
        loss = call.empty(plan.out_shape, plan.result_dtype) if want_loss else None
        grad = call.empty(plan.input_shape, plan.compute_dtype) if want_grad else None
        sinks: dict[str, Any] = {}
        outputs = {}
        if loss is not None:
            sinks["loss"] = Sink(_real_view(loss), 0, 1, 0)
            if plan.elementwise:
                outputs["none"] = call.output(loss)
        if grad is not None:
            parts = 2 if plan.is_complex else 1
            sinks["grad"] = Sink(_real_view(grad), 0, parts, 1)
            if not plan.input_broadcast:
                outputs["grad"] = call.output(grad)
        _run_passes(call, passes, sinks, outputs)
        return (
            None if loss is None else call.finish(loss),
            None if grad is None else call.finish(grad),
        )


backend = NumbaCudaBackend()
