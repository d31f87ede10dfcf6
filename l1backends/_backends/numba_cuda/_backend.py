"""Host side of the numba-cuda backend: operands, launches and results.

Nothing here waits for the device: every kernel is queued on the input's
stream (a foreign ``__cuda_array_interface__`` stream included, imported with
``sync=False``), results are device arrays on that stream, and the grid of
every launch depends on the problem's shape alone, so results are bitwise
reproducible on any GPU.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
from numba import cuda

from ..._typing import Array
from ...semantics import Plan
from .._cuda_launch import MAX_BLOCKS, THREADS_PER_BLOCK, WARP_SIZE, chunked_launch, flat_launch
from .._fused import FusedPassBackend
from . import _kernels as k
from ._layout import Space, broadcast_strides, build_space, c_strides

__all__ = ["NumbaCudaBackend", "backend"]

_KINDS = {"float64": k.KIND_F64, "float32": k.KIND_F32, "float16": k.KIND_F16}
_VECTOR_DTYPES = ("float16", "float32", "float64")
# The simulator runs every CUDA thread as a Python thread: small blocks keep it usable.
_THREADS = WARP_SIZE if k.SIMULATOR else THREADS_PER_BLOCK
_compiled: SimpleNamespace | None = None


def _kernels() -> SimpleNamespace:
    global _compiled
    if _compiled is None:
        sources = k.make_kernels(shuffle=not k.SIMULATOR)
        _compiled = SimpleNamespace(**{name: cuda.jit(fn) for name, fn in vars(sources).items()})
    return _compiled


@dataclass(frozen=True)
class _Operand:
    """An array as the kernels see it: a 1-D buffer, an element offset and strides."""

    buffer: Any
    offset: int
    strides: tuple[int, ...]
    dtype: np.dtype
    aligned: bool


def _pointer(array: Any) -> int:
    if k.SIMULATOR:
        return array._ary.__array_interface__["data"][0]
    return array.__cuda_array_interface__["data"][0]


def _device_array(array: Any) -> Any:
    """The numba device array for any served object; a foreign one is imported zero-copy."""
    if getattr(array, "__cuda_ndarray__", False):
        return array
    return cuda.as_cuda_array(array, sync=False)


def _element_strides(array: Any) -> tuple[int, ...]:
    itemsize = array.dtype.itemsize
    if any(s % itemsize for s in array.strides):
        raise ValueError(
            f"strides {array.strides} are not multiples of the item size {itemsize}; "
            "the numba-cuda backend cannot read this view without a copy"
        )
    return tuple(s // itemsize for s in array.strides)


def _flat_buffer(array: Any, strides: tuple[int, ...]) -> tuple[Any, int]:
    """A 1-D view from the lowest address ``array`` touches, and element 0's offset in it."""
    shape = array.shape
    low = sum(s * (n - 1) for n, s in zip(shape, strides, strict=True) if s < 0 and n)
    high = sum(s * (n - 1) for n, s in zip(shape, strides, strict=True) if s > 0 and n)
    span = 0 if 0 in shape else high - low + 1
    if k.SIMULATOR:
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


def _operand(array: Any, full_shape: tuple[int, ...]) -> _Operand:
    strides = _element_strides(array)
    buffer, offset = _flat_buffer(array, strides)
    aligned = offset == 0 and span_aligned(buffer)
    full = broadcast_strides(array.shape, strides, full_shape)
    return _Operand(buffer, offset, full, np.dtype(array.dtype), aligned)


def span_aligned(buffer: Any) -> bool:
    """Whether a buffer starts on a 16-byte boundary (for 128-bit loads)."""
    return buffer.size == 0 or _pointer(buffer) % 16 == 0


class _Call:
    """One call: device views of the arguments, the stream, and allocation helpers."""

    def __init__(self, plan: Plan, input: Array, target: Array, weight: Array | None) -> None:
        self.plan = plan
        self.original = input
        self.x = _device_array(input)
        self.y = _device_array(target)
        self.w = None if weight is None else _device_array(weight)
        self.stream = self.x.stream
        self._wait_for(self.y, self.w)
        self.kind = _KINDS[plan.result_dtype]
        self.compensate = plan.result_dtype == "float64"
        self._dummy: _Operand | None = None
        self._dummy_words: Any = None

    def _wait_for(self, *others: Any) -> None:
        """Order foreign streams before ours on the device (an event wait, never a host sync)."""
        if k.SIMULATOR:
            return
        for other in others:
            stream = getattr(other, "stream", 0)
            if other is not None and stream and stream is not self.stream:
                event = cuda.event(timing=False)
                event.record(stream)
                event.wait(self.stream)

    def empty(self, shape: tuple[int, ...], dtype: str | np.dtype) -> Any:
        return cuda.device_array(shape, dtype=np.dtype(dtype), stream=self.stream)

    def dummy(self) -> _Operand:
        """A placeholder operand for arguments a pass does not use (never read)."""
        if self._dummy is None:
            buffer = self.empty((1,), np.float64)
            self._dummy = _Operand(buffer, 0, (0,) * len(self.plan.shape), buffer.dtype, True)
        return self._dummy

    def dummy_words(self) -> Any:
        """A placeholder for the (4 or 5, rows) float64 sums of a pass that sums nothing."""
        if self._dummy_words is None:
            self._dummy_words = self.empty((5, 1), np.float64)
        return self._dummy_words

    def output(self, array: Any, full_shape: tuple[int, ...]) -> tuple[_Operand, int]:
        """A fresh C-contiguous output as an operand over ``full_shape``; complex is interleaved."""
        dtype = np.dtype(array.dtype)
        parts = 2 if dtype.kind == "c" else 1
        strides = tuple(parts * s for s in c_strides(array.shape))
        real = dtype if parts == 1 else np.dtype(f"f{dtype.itemsize // 2}")
        flat = _real_view(array, real, parts)
        full = broadcast_strides(array.shape, strides, full_shape)
        return _Operand(flat, 0, full, real, span_aligned(flat)), parts

    def finish(self, result: Any) -> Any:
        """Hand a result back in the caller's library: a foreign array is wrapped zero-copy."""
        family = type(self.original).__module__.partition(".")[0]
        if family == "torch":
            torch = sys.modules["torch"]
            return torch.as_tensor(result, device=self.original.device)
        return result


def _real_view(array: Any, real: np.dtype, parts: int) -> Any:
    """A 1-D real view of a contiguous array (complex as interleaved parts)."""
    n = array.size * parts
    if k.SIMULATOR:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        return FakeCUDAArray(array._ary.reshape(-1).view(real).reshape(n))
    from numba.cuda.cudadrv.devicearray import DeviceNDArray

    return DeviceNDArray(
        shape=(n,),
        strides=(real.itemsize,),
        dtype=real,
        stream=array.stream,
        gpu_data=array.gpu_data,
    )


def _launch(kernel: Any, blocks: int, threads: int, stream: Any, *args: Any) -> None:
    if k.SIMULATOR:
        # Simulated threads do not inherit numpy's error state; the spec wants no warnings.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            kernel[blocks, threads, stream](*args)
    else:
        kernel[blocks, threads, stream](*args)


class _Pass:
    """One kernel pass: which operands it reads and writes, and what it computes."""

    def __init__(self, call: _Call) -> None:
        self.call = call
        dummy = call.dummy()
        self.ops = {name: dummy for name in ("x", "y", "w", "g", "sw", "grad", "none")}
        self.flags = k.F_COMPENSATE if call.compensate else 0
        self.g_scalar = 1.0
        self.count = 1

    def run(
        self,
        kept_axes: tuple[int, ...],
        reduced_axes: tuple[int, ...],
        finish_mode: int = k.FINISH_NONE,
        fout: Any = None,
        fout_offset: int = 0,
        fout_stride: int = 1,
        count: int | None = None,
        lead: str = "x",
    ) -> Any:
        """Launch over the plan's shape with these kept and reduced axes; return the sums."""
        call = self.call
        names = list(self.ops)
        shape = call.plan.shape
        space = build_space(
            shape, kept_axes, reduced_axes, [self.ops[n].strides for n in names], names.index(lead)
        )
        rows, total = space.rows, space.count
        accumulates = bool(self.flags & (k.F_LOSS | k.F_SUM_OPERAND | k.F_WEIGHT_ONLY))
        aux = call.empty((5, max(rows, 1)), np.float64) if accumulates else call.dummy_words()
        if fout is None:
            fout = call.dummy().buffer
        if rows == 0 or (total == 0 and not accumulates):
            return aux
        count = total if count is None else count
        kernels = _kernels()
        config, chunks = chunked_launch(rows, total)
        threads = _THREADS if k.SIMULATOR else config.threads
        items = rows * chunks
        partials = call.empty((4, items), np.float64) if accumulates and chunks > 1 else aux
        blocks = min(MAX_BLOCKS, items)
        if self._contiguous(space):
            ops = self.ops
            vector = 16 // ops["x"].dtype.itemsize
            chunks = flat_launch(total, vector).blocks
            partials = call.empty((4, chunks), np.float64) if accumulates and chunks > 1 else aux
            blocks = chunks
            _launch(
                kernels.contiguous_pass, blocks, _THREADS, call.stream,
                ops["x"].buffer, ops["y"].buffer, ops["w"].buffer, ops["g"].buffer,
                ops["sw"].buffer, ops["grad"].buffer, ops["none"].buffer, total, chunks,
                self.flags, call.kind, self.g_scalar, count, partials, finish_mode, fout, aux,
            )  # fmt: skip
        else:
            args = []
            for k_op, name in enumerate(names):
                op = self.ops[name]
                args += [op.buffer, op.offset, space.kept[k_op], space.reduced[k_op]]
            _launch(
                kernels.strided_pass, blocks, threads, call.stream, *args,
                space.kept_shape, space.reduced_shape, count, chunks, self.flags, call.kind,
                self.g_scalar, partials, finish_mode, fout, fout_offset, fout_stride, aux,
            )  # fmt: skip
        if accumulates and chunks > 1:
            _launch(
                kernels.finish_pass, min(MAX_BLOCKS, rows), k.FINISH_THREADS, call.stream,
                partials, rows, chunks, count, finish_mode, fout, fout_offset, fout_stride, aux,
            )  # fmt: skip
        return aux

    def _contiguous(self, space: Space) -> bool:
        """Whether the 128-bit-load kernel applies: flat, aligned, same real float dtype."""
        ops = self.ops
        if self.flags & (k.F_COMPLEX | k.F_SUM_OPERAND | k.F_WEIGHT_ONLY):
            return False
        x, y = ops["x"], ops["y"]
        if (
            x.dtype != y.dtype
            or x.dtype.name not in _VECTOR_DTYPES
            or not (x.aligned and y.aligned)
        ):
            return False
        names = list(ops)
        used = {"w": k.F_WEIGHTED, "grad": k.F_GRAD, "none": k.F_NONE_OUT}
        streamed = ["x", "y"] + [n for n, bit in used.items() if self.flags & bit]
        if not all(space.flat(names.index(n)) for n in streamed):
            return False
        fixed = [names.index(n) for n in ("g", "sw")]
        return all(not any(space.reduced[i]) for i in fixed)


class NumbaCudaBackend(FusedPassBackend):
    """L1 loss and subgradient for numba device arrays and ``__cuda_array_interface__`` objects."""

    name = "numba-cuda"

    def partials(
        self, plan: Plan, input: Array, target: Array, weight: Array | None
    ) -> tuple[Array, Array, Array | None, Array | None]:
        """Unrounded double-word sums of ``w * |d|`` and ``w`` over the reduced axes (on device)."""
        call = _Call(plan, input, target, weight)
        step = self._reading_pass(call, weight)
        step.flags |= k.F_LOSS
        aux = step.run(plan.kept_axes, plan.reduced_axes)
        words = [call.finish(aux[i].reshape(plan.out_shape)) for i in range(4)]
        if weight is None:
            return words[0], words[1], None, None
        return words[0], words[1], words[2], words[3]

    @staticmethod
    def _reading_pass(call: _Call, weight: Array | None) -> _Pass:
        plan = call.plan
        step = _Pass(call)
        step.ops["x"] = _operand(call.x, plan.shape)
        step.ops["y"] = _operand(call.y, plan.shape)
        if plan.is_complex:
            step.flags |= k.F_COMPLEX
        if weight is not None:
            step.ops["w"] = _operand(call.w, plan.shape)
            step.flags |= k.F_WEIGHTED
        return step

    def _run(
        self,
        plan: Plan,
        input: Array,
        target: Array,
        weight: Array | None,
        grad_output: Array | float | None,
        *,
        want_loss: bool,
        want_grad: bool,
    ) -> tuple[Array | None, Array | None]:
        call = _Call(plan, input, target, weight)
        reducing = plan.reduction != "none"
        weighted_mean = plan.reduction == "mean" and weight is not None
        loss = call.empty(plan.out_shape, plan.result_dtype) if want_loss else None
        grad = call.empty(plan.input_shape, plan.compute_dtype) if want_grad else None

        step = self._reading_pass(call, weight)
        if want_grad:
            self._prepare_grad(call, step, grad_output)
            if weighted_mean:
                sums = _Pass(call)
                sums.ops["w"] = step.ops["w"]
                sums.flags |= k.F_WEIGHTED | k.F_WEIGHT_ONLY
                aux = sums.run(plan.kept_axes, plan.reduced_axes, lead="w")
                keep = plan.keepdims_shape
                step.ops["sw"] = _Operand(
                    aux.reshape(aux.size), 4 * aux.shape[1],
                    broadcast_strides(keep, c_strides(keep), plan.shape),
                    np.dtype(np.float64), False,
                )  # fmt: skip
                step.flags |= k.F_SW
            elif plan.reduction == "mean":
                step.flags |= k.F_COUNT
            if plan.input_broadcast:
                # The full-shape gradient, in float64 (complex as interleaved parts), is summed
                # back to the input's shape afterwards.
                parts = 2 if plan.is_complex else 1
                full_grad = call.empty((plan.size * parts,), np.float64)
                strides = tuple(parts * s for s in c_strides(plan.shape))
                step.ops["grad"] = _Operand(full_grad, 0, strides, full_grad.dtype, False)
            else:
                step.ops["grad"], _ = call.output(grad, plan.shape)
            step.flags |= k.F_GRAD

        if want_loss and reducing:
            step.flags |= k.F_LOSS
            mode = k.FINISH_SUM
            if plan.reduction == "mean":
                mode = k.FINISH_WEIGHTED_MEAN if weight is not None else k.FINISH_MEAN
            fout = _real_view(loss, np.dtype(plan.result_dtype), 1)
            step.run(plan.kept_axes, plan.reduced_axes, mode, fout, count=plan.count)
        else:
            if want_loss:
                step.ops["none"], _ = call.output(loss, plan.shape)
                step.flags |= k.F_NONE_OUT
            step.run((), tuple(range(len(plan.shape))), count=plan.count)

        if want_grad and plan.input_broadcast:
            self._sum_back(call, full_grad, grad)
        return (
            None if loss is None else call.finish(loss),
            None if grad is None else call.finish(grad),
        )

    @staticmethod
    def _prepare_grad(call: _Call, step: _Pass, grad_output: Array | float | None) -> None:
        plan = call.plan
        if grad_output is None:
            return
        if not hasattr(grad_output, "shape"):
            step.g_scalar = float(np.dtype(plan.result_dtype).type(grad_output))
            return
        g = _device_array(grad_output)
        call._wait_for(g)
        strides = _element_strides(g)
        buffer, offset = _flat_buffer(g, strides)
        # grad_output's axes are the loss's kept axes, in order; a 0-d one repeats everywhere.
        along = dict(zip(plan.kept_axes, strides, strict=True)) if g.shape else {}
        full = tuple(along.get(ax, 0) for ax in range(len(plan.shape)))
        step.ops["g"] = _Operand(buffer, offset, full, np.dtype(g.dtype), False)
        step.flags |= k.F_G_ARRAY

    @staticmethod
    def _sum_back(call: _Call, full_grad: Any, grad: Any) -> None:
        """Sum the full-shape float64 gradient over the axes the input was broadcast along."""
        plan = call.plan
        summed = plan.input_broadcast_axes
        kept = tuple(ax for ax in range(len(plan.shape)) if ax not in summed)
        parts = 2 if plan.is_complex else 1
        real = np.dtype(plan.result_dtype)
        out = _real_view(grad, real, parts)
        for part in range(parts):
            step = _Pass(call)
            step.flags = k.F_COMPENSATE | k.F_SUM_OPERAND
            step.ops["x"] = _Operand(
                full_grad,
                part,
                tuple(parts * s for s in c_strides(plan.shape)),
                np.dtype(np.float64),
                False,
            )
            step.run(kept, summed, k.FINISH_SUM, out, part, parts)


backend = NumbaCudaBackend()
