"""The numba-CPU backend: NumPy arrays, one fused pass at memory bandwidth.

Each call reads input and target once: "none" writes its output directly, and
``loss_and_grad`` sums the loss while it writes the gradient.  Sums are carried
in float64 lanes (compensated with TwoSum for float64 data) and rounded once.
Work is split into a number of chunks that depends on the problem size alone,
and chunk results are combined in a fixed order, so results are bitwise
identical for any ``NUMBA_NUM_THREADS``.

Any layout is read in place through element strides (negative, zero and
stepped strides included); contiguous operands take a flat fast path.  Kernels
are compiled once and cached on disk (``cache=True``); numba writes its cache
beside this package or, where that is read-only, under ``NUMBA_CACHE_DIR`` or
the user's cache directory.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

from ..._typing import Array
from ...numerics import compensated_sum, dd_value
from ...semantics import REDUCTIONS, Plan, make_plan
from . import _kernels as kern

__all__ = [
    "MAX_CHUNKS",
    "MIN_CHUNK",
    "PARALLEL_MIN",
    "NumbaCPUBackend",
    "backend",
    "warm_up",
]


# Below this many elements the parallel region costs more than it saves.  Measured
# here (2 cores): the serial float32 mean of 2**15 elements takes ~10 µs, the
# parallel launch alone ~5-10 µs; the crossover lies near 1e5 elements.
PARALLEL_MIN = 1 << 17
# Chunking depends on the element count alone (never on the thread count).
MIN_CHUNK = 1 << 14
MAX_CHUNKS = 64

# Prepared small-call entries kept before the cache starts over.
_PREPARED_LIMIT = 1024

# Operand rows of the kernels' geometry table.
_X, _Y, _W, _G, _OUT, _GRAD = range(6)

# Mode tokens (see ``_kernels``): how a stored value becomes float64.
_EXACT = np.float64(0.0)
_TO_F32 = np.float32(0.0)
_HALF_BITS = np.uint16(0)
_TO_F16 = np.int16(0)
_RANK = {"float16": 0, "float32": 1, "float64": 2}
_REAL = {"complex64": "float32", "complex128": "float64"}

_parallel_lock = threading.Lock()
_lock_needed = True  # until the first parallel call shows which threading layer runs


def _chunking(count: int) -> tuple[int, int]:
    """``(nchunks, chunk)`` for ``count`` elements: a function of ``count`` alone."""
    nchunks = max(1, min(MAX_CHUNKS, count // MIN_CHUNK))
    return nchunks, -(-count // nchunks) if count else 1


def _run_parallel(kernel: Any, *args: Any) -> Any:
    """Run a parallel kernel; serialized only under numba's workqueue layer.

    The workqueue layer aborts the process when two threads enter parallel regions
    at once.  Which layer runs is known only after the first parallel call.
    """
    global _lock_needed
    if not _lock_needed:
        return kernel(*args)
    with _parallel_lock:
        result = kernel(*args)
        import numba

        _lock_needed = numba.threading_layer() == "workqueue"
        return result


_modes: dict[tuple[np.dtype, str], Any] = {}


def _mode(dtype: np.dtype, target: str) -> Any:
    """The mode token that converts values of ``dtype`` to ``target`` (a real dtype name)."""
    try:
        return _modes[dtype, target]
    except KeyError:
        return _modes.setdefault((dtype, target), _find_mode(dtype, target))


def _find_mode(dtype: np.dtype, target: str) -> Any:
    name = _REAL.get(dtype.name, dtype.name)
    if name == "float16":
        return _HALF_BITS
    if name in _RANK and _RANK[name] <= _RANK[target]:
        return _EXACT
    return {"float64": _EXACT, "float32": _TO_F32, "float16": _TO_F16}[target]


def _accumulate_token(plan: Plan) -> Any:
    # float64 results need compensated lanes; float16/float32 differences are exact in float64.
    return _EXACT if plan.result_dtype == "float64" else _TO_F32


def _flat_view(array: np.ndarray) -> tuple[np.ndarray, int, tuple[int, ...], bool]:
    """View ``array``'s memory as 1-D from its lowest address, without copying.

    Returns ``(flat, base, strides, is_complex)``: element ``index`` of ``array``
    (its real part, for complex) is ``flat[base + dot(index, strides)]``, and the
    imaginary part follows it.  Float16 is viewed as uint16, complex as its real
    dtype.  Strides that are not a multiple of the item size (rare, hand-made views)
    cost a copy.
    """
    dtype = array.dtype
    is_complex = dtype.kind == "c"
    unit = dtype.itemsize // 2 if is_complex else dtype.itemsize
    if any(s % unit for s in array.strides):
        array = np.ascontiguousarray(array)
    if array.size == 0:
        return np.zeros(2, _view_dtype(dtype)), 0, (0,) * array.ndim, is_complex
    if array.ndim == 0:
        flat = array.reshape(1).view(_view_dtype(dtype))
        return flat, 0, (), is_complex
    low = sum(s * (n - 1) for s, n in zip(array.strides, array.shape, strict=True) if s < 0)
    high = sum(s * (n - 1) for s, n in zip(array.strides, array.shape, strict=True) if s > 0)
    corner = array[tuple(slice(None, None, -1) if s < 0 else slice(None) for s in array.strides)]
    items = (high - low) // dtype.itemsize + 1
    flat = np.lib.stride_tricks.as_strided(
        corner, shape=(items,), strides=(dtype.itemsize,), writeable=False
    ).view(_view_dtype(dtype))
    return flat, -low // unit, tuple(s // unit for s in array.strides), is_complex


def _view_dtype(dtype: np.dtype) -> np.dtype:
    if dtype.kind == "c":
        return np.dtype(_REAL[dtype.name])
    return np.dtype(np.uint16) if dtype == np.float16 else dtype


def _padded_strides(strides: tuple[int, ...], shape: tuple[int, ...], full: tuple[int, ...]):
    """Strides of an operand broadcast to ``full`` (0 on broadcast dimensions)."""
    lead = len(full) - len(shape)
    return [0] * lead + [0 if n == 1 else s for s, n in zip(strides, shape, strict=True)]


class _Geometry:
    """The iteration space of one call: kept dimensions, then reduced ones, merged."""

    def __init__(self, plan: Plan, rows: dict[int, tuple[int, list[int]]]) -> None:
        shape = plan.shape
        kept, reduced = plan.kept_axes, plan.reduced_axes
        groups = []
        for axes in (kept, reduced):
            dims: list[tuple[int, list[int]]] = []
            for ax in axes:
                n = shape[ax]
                if n == 1:
                    continue
                strides = [rows[r][1][ax] if r in rows else 0 for r in range(6)]
                if dims:
                    prev_n, prev_strides = dims[-1]
                    if all(p == s * n for p, s in zip(prev_strides, strides, strict=True)):
                        dims[-1] = (prev_n * n, strides)
                        continue
                dims.append((n, strides))
            groups.append(dims)
        outer, inner = groups
        if not inner:
            inner = [(1, [0] * 6)]
        dims = outer + inner
        self.nouter = len(outer)
        self.shape = np.array([n for n, _ in dims], dtype=np.int64)
        self.geo = np.zeros((6, 1 + len(dims)), dtype=np.int64)
        for r, (base, _) in rows.items():
            self.geo[r, 0] = base
        for d, (_, strides) in enumerate(dims):
            self.geo[:, d + 1] = strides
        self.noutputs = math.prod(n for n, _ in outer)
        self.count = int(self.shape[self.nouter :].prod())


def _c_strides(shape: tuple[int, ...], factor: int) -> list[int]:
    strides, step = [], factor
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return strides[::-1]


class _Call:
    """The operands of one call, prepared for the general kernel."""

    def __init__(self, plan: Plan, input: np.ndarray, target: np.ndarray, weight: Any) -> None:
        self.plan = plan
        real = plan.result_dtype
        self.rows: dict[int, tuple[int, list[int]]] = {}
        self.x, self.xm, self.xim = self._operand(_X, input, real)
        self.y, self.ym, self.yim = self._operand(_Y, target, real)
        self.w = self.wm = None
        if weight is not None:
            self.w, self.wm, _ = self._operand(_W, weight, real)
        self.g = self.gm = None

    def _operand(self, row: int, array: np.ndarray, real: str) -> tuple[np.ndarray, Any, Any]:
        flat, base, strides, is_complex = _flat_view(array)
        self.rows[row] = (base, _padded_strides(strides, array.shape, self.plan.shape))
        return flat, _mode(array.dtype, real), (1 if is_complex else None)

    def grad_output_array(self, grad_output: np.ndarray) -> None:
        self.g, self.gm, _ = self._operand(_G, grad_output, self.plan.result_dtype)

    def output(self, row: int, shape: tuple[int, ...], dtype: str) -> tuple[np.ndarray, np.ndarray]:
        """A fresh C-ordered array and its flat view, registered as operand ``row``."""
        array = np.empty(shape, dtype=dtype)
        flat = array.reshape(-1).view(_view_dtype(array.dtype))
        factor = 2 if array.dtype.kind == "c" else 1
        self.rows[row] = (0, _padded_strides(_c_strides(shape, factor), shape, self.plan.shape))
        return array, flat

    def run(
        self,
        *,
        out: np.ndarray | None = None,
        gr: np.ndarray | None = None,
        scales: np.ndarray | None = None,
        accumulate: Any = None,
        final: np.ndarray | None = None,
        sums: np.ndarray | None = None,
        weight_only: bool = False,
    ) -> None:
        plan = self.plan
        rows = {_X: self.rows[_W]} if weight_only else self.rows
        geometry = _Geometry(plan, rows)
        if geometry.noutputs == 0 or geometry.count == 0:
            return
        nchunks, chunk = _chunking(geometry.count)
        how = kern.FINISH_SUM
        if plan.reduction == "mean":
            how = kern.FINISH_WEIGHT if self.w is not None else kern.FINISH_COUNT
        if scales is None:
            scales = np.ones(1)
        if weight_only:
            operands = (self.w, self.wm, None, None, None, None, None, None, None, None)
        else:
            operands = (self.x, self.xm, self.xim, self.y, self.ym, self.yim, self.w, self.wm,
                        self.g, self.gm)  # fmt: skip
        args = (
            geometry.noutputs, nchunks, chunk, geometry.count, geometry.shape,
            geometry.nouter, geometry.geo, *operands, out, gr, scales, accumulate, how,
            final, sums,
        )  # fmt: skip
        if geometry.noutputs * geometry.count >= PARALLEL_MIN:
            _run_parallel(kern.general_parallel, *args)
        else:
            kern.general_serial(*args)


def _is_flat(plan: Plan, input: np.ndarray, target: np.ndarray, weight: Any) -> bool:
    """Whether the operands are contiguous in one common order with nothing broadcast."""
    if plan.out_shape and plan.reduction != "none":
        return False
    if input.shape != target.shape or input.dtype.kind == "c" or target.dtype.kind == "c":
        return False
    arrays = (input, target) if weight is None else (input, target, weight)
    if weight is not None and weight.shape != input.shape:
        return False
    if all(a.flags.c_contiguous for a in arrays):
        return True
    return all(a.flags.f_contiguous for a in arrays)


def _ravel(array: np.ndarray) -> np.ndarray:
    flat = array.reshape(-1) if array.flags.c_contiguous else array.ravel(order="K")
    return flat.view(np.uint16) if flat.dtype == np.float16 else flat


def _scalar_grad_output(plan: Plan, grad_output: Any) -> float:
    """A scalar ``grad_output`` (None means 1), cast to the result dtype, as a float."""
    if grad_output is None:
        return 1.0
    return float(np.asarray(grad_output, dtype=plan.result_dtype))


class NumbaCPUBackend:
    """L1 loss and subgradient for NumPy arrays with fused numba kernels."""

    name = "numba-cpu"

    # ----- fast path: contiguous operands, full reduction or "none" -----------------------

    def _flat(
        self,
        plan: Plan,
        input: np.ndarray,
        target: np.ndarray,
        weight: Any,
        out: np.ndarray | None,
        gr: np.ndarray | None,
        scale: float,
        accumulate: Any,
        how: int | None = None,
    ) -> float:
        real = plan.result_dtype
        n = plan.size
        nchunks, chunk = _chunking(n)
        w = wm = None
        if weight is not None:
            w, wm = _ravel(weight), _mode(weight.dtype, real)
        if how is None:
            how = kern.FINISH_SUM
            if plan.reduction == "mean":
                how = kern.FINISH_COUNT if weight is None else kern.FINISH_WEIGHT
        args = (
            nchunks, chunk, _ravel(input), _mode(input.dtype, real), _ravel(target),
            _mode(target.dtype, real), w, wm, out, gr, scale, how, accumulate,
        )  # fmt: skip
        if n >= PARALLEL_MIN:
            return _run_parallel(kern.flat_parallel, *args)
        return kern.flat_serial(*args)

    @staticmethod
    def _like(plan: Plan, input: np.ndarray, target: np.ndarray, dtype: str) -> np.ndarray:
        """A fresh array of the loss shape in the operands' common order."""
        order = "C" if input.flags.c_contiguous or not target.flags.f_contiguous else "F"
        return np.empty(plan.shape, dtype=dtype, order=order)

    @staticmethod
    def _flat_out(array: np.ndarray) -> np.ndarray:
        return _ravel(array)

    # ----- protocol -----------------------------------------------------------------------

    def __init__(self) -> None:
        # Prepared calls for small unweighted contiguous inputs, where Python work would
        # otherwise cost more than the pass itself: keyed by plan, dtypes and strides.
        self._prepared: dict[tuple[Any, ...], Any] = {}

    def _prepare_flat_loss(self, plan: Plan, input: np.ndarray, target: np.ndarray) -> Any:
        """A function ``(input, target) -> loss`` for this signature, or None if not flat."""
        if not _is_flat(plan, input, target, None) or plan.size == 0:
            return None
        real = plan.result_dtype
        nchunks, chunk = _chunking(plan.size)
        modes = _mode(input.dtype, real), _mode(target.dtype, real)
        ravel = (
            input.ndim != 1 or input.dtype == np.float16,
            target.ndim != 1 or target.dtype == np.float16,
        )
        if plan.reduction == "none":
            like = self._like(plan, input, target, real)
            order = "F" if like.flags.f_contiguous and not like.flags.c_contiguous else "C"
            token, how = None, kern.FINISH_SUM
        else:
            token = _accumulate_token(plan)
            how = kern.FINISH_COUNT if plan.reduction == "mean" else kern.FINISH_SUM
        parallel = plan.size >= PARALLEL_MIN
        dtype = np.dtype(real)
        # After the first call, the compiled overload's entry point is called directly: the
        # key that found this function fixes every argument type (the dtypes and strides
        # fix each layout), so numba's per-call type dispatch would only find it again.
        compiled: list[Any] = []

        def run(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            out = None
            if token is None:
                out = np.empty(plan.shape, dtype=dtype, order=order)
            args = (
                nchunks, chunk, _ravel(x) if ravel[0] else x, modes[0],
                _ravel(y) if ravel[1] else y, modes[1], None, None,
                None if out is None else _ravel(out), None, 1.0, how, token,
            )  # fmt: skip
            if parallel:
                value = _run_parallel(kern.flat_parallel, *args)
            elif compiled:
                value = compiled[0](*args)
            else:
                value = kern.flat_serial(*args)
                signature = tuple(map(kern.flat_serial.typeof_pyval, args))
                compiled.append(kern.flat_serial.overloads[signature].entry_point)
            return out if out is not None else _scalar_result(value, dtype)

        return run

    def loss(self, plan: Plan, input: Array, target: Array, weight: Array | None) -> Array:
        """Return the loss described by ``plan``."""
        if weight is None:
            key = (plan, input.dtype, target.dtype, input.strides, target.strides)
            try:
                prepared = self._prepared[key]
            except KeyError:
                if len(self._prepared) >= _PREPARED_LIMIT:
                    self._prepared.clear()
                prepared = self._prepared[key] = self._prepare_flat_loss(plan, input, target)
            if prepared is not None:
                return prepared(input, target)
        if _is_flat(plan, input, target, weight):
            if plan.reduction == "none":
                out = self._like(plan, input, target, plan.result_dtype)
                if plan.size:
                    self._flat(plan, input, target, weight, _ravel(out), None, 1.0, None)
                return out
            if plan.size == 0:
                return self._empty_loss(plan)
            value = self._flat(
                plan, input, target, weight, None, None, 1.0, _accumulate_token(plan)
            )
            return _scalar_result(value, np.dtype(plan.result_dtype))
        call = _Call(plan, input, target, weight)
        if plan.reduction == "none":
            out, flat = call.output(_OUT, plan.shape, plan.result_dtype)
            call.run(out=flat)
            return out
        final = self._empty_loss(plan)
        call.run(accumulate=_accumulate_token(plan), final=_flat_result(final))
        return final

    def partials(
        self, plan: Plan, input: Array, target: Array, weight: Array | None
    ) -> tuple[Array, Array, Array | None, Array | None]:
        """Unrounded float64 double-word sums of w·|d| and w over the reduced axes."""
        if (
            weight is None
            and plan.result_dtype != "float64"
            and plan.size
            and _is_flat(plan, input, target, None)
        ):
            # Below float64 results the lanes are plain float64 sums, so the flat kernel's
            # float64 total (its "sum" finish) loses nothing the result could show.
            total = self._flat(plan, input, target, None, None, None, 1.0, _TO_F32, kern.FINISH_SUM)
            return np.array(total), np.zeros(()), None, None
        call = _Call(plan, input, target, weight)
        sums = np.zeros((math.prod(plan.out_shape), 4))
        call.run(accumulate=_accumulate_token(plan), sums=sums)
        parts = [sums[:, k].reshape(plan.out_shape) for k in range(4)]
        if weight is None:
            return parts[0], parts[1], None, None
        return parts[0], parts[1], parts[2], parts[3]

    def grad(
        self,
        plan: Plan,
        input: Array,
        target: Array,
        weight: Array | None,
        grad_output: Array | float | None,
    ) -> Array:
        """Return the subgradient with respect to ``input``."""
        return self._grad(plan, input, target, weight, grad_output, want_loss=False)[1]

    def loss_and_grad(
        self,
        plan: Plan,
        input: Array,
        target: Array,
        weight: Array | None,
        grad_output: Array | float | None,
    ) -> tuple[Array, Array]:
        """Return ``(loss, grad)`` from one pass over input and target."""
        return self._grad(plan, input, target, weight, grad_output, want_loss=True)

    # ----- helpers ------------------------------------------------------------------------

    @staticmethod
    def _empty_loss(plan: Plan) -> np.ndarray:
        """The loss array before the pass: what empty reductions return."""
        fill = math.nan if plan.reduction == "mean" else 0.0
        return np.full(plan.out_shape, fill, dtype=plan.result_dtype)

    def _grad(
        self,
        plan: Plan,
        input: np.ndarray,
        target: np.ndarray,
        weight: Any,
        grad_output: Any,
        want_loss: bool,
    ) -> tuple[Any, np.ndarray]:
        array_g = grad_output is not None and np.ndim(grad_output) > 0
        if (
            not array_g
            and not plan.input_broadcast
            and not (weight is not None and plan.reduction == "mean")
            and _is_flat(plan, input, target, weight)
            and (plan.reduction != "none" or not want_loss)
        ):
            scale = _scalar_grad_output(plan, grad_output)
            if plan.reduction == "mean":
                scale = scale / plan.count if plan.count else math.nan
            gradient = self._like(plan, input, target, plan.compute_dtype)
            if plan.size == 0:
                return self._empty_loss(plan), gradient
            token = _accumulate_token(plan) if want_loss and plan.reduction != "none" else None
            value = self._flat(plan, input, target, weight, None, _ravel(gradient), scale, token)
            loss = _scalar_result(value, np.dtype(plan.result_dtype)) if token is not None else None
            return loss, gradient
        return self._grad_general(plan, input, target, weight, grad_output, want_loss)

    def _grad_general(
        self,
        plan: Plan,
        input: np.ndarray,
        target: np.ndarray,
        weight: Any,
        grad_output: Any,
        want_loss: bool,
    ) -> tuple[Any, np.ndarray]:
        call = _Call(plan, input, target, weight)
        reducing = plan.reduction != "none"
        scales = None
        if reducing:
            scales = self._scales(plan, call, grad_output)
        elif grad_output is not None and np.ndim(grad_output) > 0:
            call.grad_output_array(grad_output)
        else:
            scales = np.array([_scalar_grad_output(plan, grad_output)])

        grad_shape = plan.shape if plan.input_broadcast else plan.input_shape
        grad_dtype = plan.compute_dtype
        if plan.input_broadcast:  # summed back to the input's shape after the pass
            grad_dtype = "complex128" if plan.is_complex else "float64"
        gradient, grad_flat = call.output(_GRAD, grad_shape, grad_dtype)

        loss = final = out = None
        if want_loss:
            if reducing:
                loss = self._empty_loss(plan)
                final = _flat_result(loss)
            else:
                loss, out = call.output(_OUT, plan.shape, plan.result_dtype)
        accumulate = _accumulate_token(plan) if final is not None else None
        call.run(out=out, gr=grad_flat, scales=scales, accumulate=accumulate, final=final)
        if plan.input_broadcast:
            gradient = _sum_back(plan, gradient)
        return loss, gradient

    @staticmethod
    def _scales(plan: Plan, call: _Call, grad_output: Any) -> np.ndarray:
        """Per-output gradient scale: g, g/count, or g/Σw (the weight is applied per element)."""
        noutputs = math.prod(plan.out_shape)
        if grad_output is None or np.ndim(grad_output) == 0:
            g = np.full(noutputs, _scalar_grad_output(plan, grad_output))
        else:
            g = np.asarray(grad_output).astype(plan.result_dtype).astype(np.float64).reshape(-1)
        if plan.reduction == "sum":
            return g
        if call.w is None:
            with np.errstate(all="ignore"):
                return g / np.float64(plan.count)
        # Σw is needed before the pass: a separate pass that reads only the weight.
        sums = np.zeros((noutputs, 4))
        call.run(accumulate=_EXACT, sums=sums, weight_only=True)
        with np.errstate(all="ignore"):
            weight_sum = np.where(np.isfinite(sums[:, 0]), sums[:, 0] + sums[:, 1], sums[:, 0])
            if plan.count == 0:
                weight_sum = np.zeros(noutputs)
            return g / weight_sum


def _scalar_result(value: float, dtype: np.dtype) -> np.ndarray:
    """A 0-d array of ``dtype`` holding the float64 ``value``, rounded once.

    A value beyond the dtype's range rounds to inf, as the spec says, without NumPy's
    overflow warning; the warning-free path is kept off the hot path of in-range values.
    """
    if abs(value) <= _LARGEST[dtype]:
        return np.array(value, dtype=dtype)
    with np.errstate(over="ignore"):
        return np.array(value, dtype=dtype)


_LARGEST = {np.dtype(name): float(np.finfo(name).max) for name in ("float16", "float32", "float64")}


def _flat_result(array: np.ndarray) -> np.ndarray:
    flat = array.reshape(-1)
    return flat.view(np.uint16) if flat.dtype == np.float16 else flat


def _sum_back(plan: Plan, gradient: np.ndarray) -> np.ndarray:
    """Sum a full-shape float64 gradient back to the input's shape, rounding once."""
    axes = plan.input_broadcast_axes
    kept = tuple(ax for ax in range(len(plan.shape)) if ax not in axes)
    count = math.prod(plan.shape[ax] for ax in axes)

    def reduce(part: np.ndarray) -> np.ndarray:
        moved = np.transpose(part, kept + axes)
        flat = np.ascontiguousarray(moved).reshape(*(plan.shape[ax] for ax in kept), count)
        with np.errstate(all="ignore"):
            high, low = compensated_sum(np, flat, np.zeros_like(flat))
            return np.asarray(dd_value(np, high, low)).reshape(plan.input_shape)

    if not plan.is_complex:
        return reduce(gradient).astype(plan.compute_dtype)
    result = np.empty(plan.input_shape, dtype=plan.compute_dtype)
    result.real = reduce(gradient.real)
    result.imag = reduce(gradient.imag)
    return result


backend = NumbaCPUBackend()


def warm_up(dtypes: tuple[str, ...] = ("float32", "float64")) -> int:
    """Compile the kernels of the common calls into numba's on-disk cache.

    Kernels compile lazily, once per argument-type signature, and are then cached on
    disk; this compiles the signatures that contiguous inputs of ``dtypes`` use for
    every reduction, loss and gradient, on the serial and the parallel path, so that
    later processes load them from the cache instead of compiling.

    Parameters
    ----------
    dtypes : tuple of str
        Input dtypes to prepare.

    Returns
    -------
    int
        The number of calls made.
    """
    calls = 0
    for name in dtypes:
        for size in (1, PARALLEL_MIN):
            x = np.zeros(size, dtype=name)
            for reduction in REDUCTIONS:
                plan = make_plan((size,), name, (size,), name, reduction)
                backend.loss(plan, x, x, None)
                backend.grad(plan, x, x, None, None)
                backend.loss_and_grad(plan, x, x, None, None)
                calls += 3
    return calls
