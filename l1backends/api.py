"""The public functions: ``l1_loss``, ``l1_loss_grad``, ``l1_loss_and_grad`` and ``L1Loss``."""

from __future__ import annotations

import logging
import math
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from ._typing import Array
from .registry import BackendInfo, BackendSpec, array_family, registry, type_name
from .semantics import REDUCTIONS, Plan, check_out, dtype_name, legacy_reduction, make_plan

__all__ = [
    "BACKEND_ENV_VAR",
    "L1Loss",
    "backends",
    "default_backend",
    "l1_loss",
    "l1_loss_and_grad",
    "l1_loss_grad",
    "register_backend",
    "unregister_backend",
    "use_backend",
]

BACKEND_ENV_VAR = "L1BACKENDS_BACKEND"
_UNSET = object()
_forced_backend: ContextVar[Any] = ContextVar("l1backends_backend", default=_UNSET)
_dispatch_logger = logging.getLogger("l1backends.dispatch")
_CALL_CACHE_SIZE = 4096


def _environment_default() -> tuple[str | None, str | None]:
    """The backend ``L1BACKENDS_BACKEND`` names, and why it is ignored when it names none."""
    value = os.environ.get(BACKEND_ENV_VAR) or None
    if value is None:
        return None, None
    try:
        registry.spec(value)
    except Exception as error:  # an unknown name, or plugins that fail to load
        problem = f"{BACKEND_ENV_VAR}={value!r} is ignored: {error}"
        warnings.warn(problem, RuntimeWarning, stacklevel=3)
        return None, problem
    return value, None


# Read once at import: a process-wide default for ``backend=``.
_DEFAULT_BACKEND, _DEFAULT_PROBLEM = _environment_default()


def default_backend() -> tuple[str | None, str | None]:
    """The process-wide default backend set by ``L1BACKENDS_BACKEND``, read at import.

    Returns
    -------
    tuple of (str or None, str or None)
        The backend name (None: dispatch by type) and, when the variable was set to a
        name no backend has, the warning that said it is ignored.
    """
    return _DEFAULT_BACKEND, _DEFAULT_PROBLEM


class _CallCache:
    """The API's cache of whole call signatures, valid for one registry version."""

    def __init__(self) -> None:
        self.entries: dict[tuple[Any, ...], tuple[Any, Plan]] = {}
        self.version = -1

    def get(self, key: tuple[Any, ...]) -> tuple[Any, Plan] | None:
        if self.version != registry.version:
            self.entries.clear()
            self.version = registry.version
        return self.entries.get(key)

    def put(self, key: tuple[Any, ...], value: tuple[Any, Plan]) -> None:
        if len(self.entries) >= _CALL_CACHE_SIZE:
            self.entries.clear()
        self.entries[key] = value


_call_cache = _CallCache()
_ndarray: Any = None  # numpy.ndarray, once numpy is imported


def _plain_ndarray() -> Any:
    global _ndarray
    if _ndarray is None:
        numpy = sys.modules.get("numpy")
        _ndarray = None if numpy is None else numpy.ndarray
    return _ndarray


def _admit(array: Any, role: str) -> Any:
    """An argument as backends see it: NumPy subclasses as plain arrays, masked ones refused.

    Runs on every call, before any cache, so that a subclass can never take the path
    that a plain array of the same shape took.
    """
    ndarray = _plain_ndarray()
    if ndarray is None or type(array) is ndarray or not isinstance(array, ndarray):
        return array
    numpy = sys.modules["numpy"]
    if isinstance(array, numpy.ma.MaskedArray):
        raise TypeError(
            f"{role} is a masked array ({type_name(type(array))}); l1backends does not apply "
            f"masks: pass {role}.filled(value) to fill masked entries, or {role}.compressed() "
            "(with the target compressed alike) to drop them"
        )
    # matrix, memmap and other subclasses: their data, read in place as a plain ndarray.
    return array.view(ndarray)


def _compiling() -> bool:
    """Whether torch.compile is tracing this call (dynamo traces this check itself)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return is_compiling is not None and is_compiling()


def _device_key(array: Any) -> Any:
    """What identifies an array's device in the call cache (raises for tracers and the like)."""
    return array.device


def _shape(array: Array, role: str) -> tuple[int, ...]:
    shape = array.shape
    if type(shape) is not tuple:
        shape = tuple(shape)
    for n in shape:
        if not isinstance(n, int):
            raise ValueError(
                f"{role} has an unknown shape {shape}; compute its chunk sizes first "
                "(for Dask, x.compute_chunk_sizes())"
            )
    return shape


_families: dict[type, str] = {}


def _family(cls: type) -> str:
    try:
        return _families[cls]
    except KeyError:
        return _families.setdefault(cls, array_family(cls))


def _grad_output(grad_output: Any, input: Array) -> tuple[Any, tuple[int, ...] | None, str | None]:
    """``grad_output`` as backends take it, with its shape and dtype name.

    Python numbers, NumPy scalars and 0-d NumPy arrays become Python numbers (shape
    ``()``, dtype None) for inputs of any library; arrays of the inputs' library are
    passed on.  Integers of 2**53 and beyond are rounded to the result dtype once the
    plan is known (:func:`_rounded_integer`).
    """
    if grad_output is None:
        return None, None, None
    # Subclasses become plain arrays before anything asks NumPy about them or their library.
    grad_output = _admit(grad_output, "grad_output")
    numpy = sys.modules.get("numpy")
    if (
        numpy is not None
        and isinstance(grad_output, (numpy.generic, numpy.ndarray))
        and numpy.ndim(grad_output) == 0
        and _family(type(input)) != "numpy"
    ):
        grad_output = _number(grad_output, numpy)
    if isinstance(grad_output, (bool, complex)):
        raise TypeError(f"grad_output must be a real number or an array, got {grad_output!r}")
    if isinstance(grad_output, int):
        return int(grad_output), (), None
    if isinstance(grad_output, float):
        return grad_output, (), None
    if not hasattr(grad_output, "shape") or not hasattr(grad_output, "dtype"):
        raise TypeError(f"grad_output must be a real number or an array, got {grad_output!r}")
    if _family(type(grad_output)) != _family(type(input)):
        raise TypeError(
            f"grad_output is a {type_name(type(grad_output))} but input is a "
            f"{type_name(type(input))}; arrays from different libraries cannot be mixed "
            "(a 0-d NumPy array or a number is accepted with any library)"
        )
    return grad_output, _shape(grad_output, "grad_output"), dtype_name(grad_output.dtype)


_SIGNIFICANT_BITS = {"float16": 11, "float32": 24, "float64": 53}
_LARGEST = {"float16": 65504.0, "float32": (2 - 2**-23) * 2.0**127, "float64": sys.float_info.max}


def _rounded_integer(value: int, dtype: str) -> float:
    """A Python integer rounded once (to nearest, ties to even) to the real ``dtype``, as a float.

    ``float(value)`` then a cast to float32 or float16 would round twice, and
    ``float(value)`` raises OverflowError beyond float64's range; the value is
    rounded to the dtype's significant bits in integer arithmetic instead.
    """
    magnitude = abs(value)
    shift = magnitude.bit_length() - _SIGNIFICANT_BITS[dtype]
    if shift > 0:
        kept, rest = magnitude >> shift, magnitude & ((1 << shift) - 1)
        half = 1 << (shift - 1)
        magnitude = (kept + (rest > half or (rest == half and kept & 1))) << shift
    rounded = math.inf if magnitude > _LARGEST[dtype] else float(magnitude)
    return rounded if value >= 0 else -rounded


def _number(value: Any, numpy: Any) -> Any:
    """A NumPy scalar or 0-d array as a Python number; bool and complex are refused."""
    kind = numpy.asarray(value).dtype.kind
    if kind not in "iuf":
        raise TypeError(f"grad_output must be real, got {value!r} of dtype {value.dtype}")
    return value.item()


_tracers: dict[type, bool] = {}


def _is_tracer(cls: type) -> bool:
    """Whether ``cls`` is a JAX tracer: an array being traced, which has no device yet."""
    try:
        return _tracers[cls]
    except KeyError:
        found = any(type_name(base) == "jax._src.core:Tracer" for base in cls.__mro__)
        return _tracers.setdefault(cls, found)


def _check_devices(arrays: tuple[Array, ...]) -> None:
    """Refuse arrays of one library that live on different devices.

    JAX tracers are left out: they stand for arrays whose placement JAX decides.
    """
    import array_api_compat

    arrays = tuple(a for a in arrays if not _is_tracer(type(a)))
    if len(arrays) < 2:
        return
    try:
        devices = [array_api_compat.device(a) for a in arrays]
    except (TypeError, AttributeError, ValueError):
        return  # the library has no device notion array-api-compat knows; backends check
    if any(d != devices[0] for d in devices[1:]):
        placed = zip(arrays, devices, strict=True)
        raise TypeError(
            "arrays on different devices cannot be mixed: got "
            + " and ".join(f"{type_name(type(a))} on {d}" for a, d in placed)
            + "; l1backends never moves data between devices, so move them first"
        )


def _overlaps(out: Any, array: Any) -> bool:
    """Whether ``out`` may share memory with ``array`` (exactly where that is cheap to tell)."""
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(array, numpy.ndarray):
        if not numpy.may_share_memory(out, array):
            return False
        try:
            return bool(numpy.shares_memory(out, array, max_work=10_000))
        except numpy.exceptions.TooHardError:
            return True  # bounds overlap and the exact answer is costly: assume they do
    storage = getattr(array, "untyped_storage", None)
    if storage is not None:  # torch: tensors viewing one storage may overlap
        return bool(out.untyped_storage().data_ptr() == storage().data_ptr())
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(array, cupy.ndarray):
        return bool(cupy.may_share_memory(out, array))
    return False


def _check_out(out: Any, plan: Plan, operation: str, arrays: tuple[Any, ...]) -> None:
    """Refuse an ``out=`` buffer that the call cannot write, before anything is written."""
    input = arrays[0]
    if _family(type(out)) != _family(type(input)) or not hasattr(out, "shape"):
        raise TypeError(
            f"out is a {type_name(type(out))} but input is a {type_name(type(input))}; "
            "out must be an array of the inputs' library, on their device"
        )
    out = _admit(out, "out")
    if _family(type(input)) != "numpy":  # NumPy arrays all live in host memory
        _check_devices((input, out))
    check_out(plan, operation, _shape(out, "out"), dtype_name(out.dtype))
    flags = getattr(out, "flags", None)
    if flags is not None and not getattr(flags, "writeable", True):
        raise ValueError("out is read-only; pass a writeable array")
    roles = ("input", "target", "weight", "grad_output")
    for role, array in zip(roles, arrays, strict=False):
        if array is not None and hasattr(array, "shape") and _overlaps(out, array):
            raise ValueError(f"out overlaps the {role}; pass a buffer of its own")


def _check_options(reduction: Any, broadcast: Any, axis: Any) -> Any:
    """Refuse malformed options before they reach a cache; return ``axis`` made hashable."""
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(
            f"reduction={reduction!r} is not valid; choose one of "
            + ", ".join(repr(r) for r in REDUCTIONS)
        )
    if not isinstance(broadcast, bool):
        raise TypeError(f"broadcast must be True or False, got {broadcast!r}")
    if isinstance(axis, list):
        axis = tuple(axis)
    for ax in axis if isinstance(axis, tuple) else () if axis is None else (axis,):
        # bool, float and the like compare equal to ints: refused before any cache sees them.
        if isinstance(ax, bool) or not hasattr(ax, "__index__"):
            raise TypeError(f"axis must be an int or a tuple of ints, got {axis!r}")
    return axis


def _prepare(
    operation: str,
    input: Array,
    target: Array,
    reduction: str,
    weight: Array | None,
    axis: int | tuple[int, ...] | None,
    broadcast: bool,
    backend: str | None,
    grad_output: Array | float | None,
    out: Array | None = None,
) -> tuple[Any, Plan, Array, Array, Array | None, Any]:
    """Validate a call and choose its backend.

    Returns the implementation, the plan and the arguments as the backend takes them.
    """
    # The checks of the hot path are inlined: a call of a few microseconds feels each one.
    if type(input) is not _ndarray:
        input = _admit(input, "input")
    if type(target) is not _ndarray:
        target = _admit(target, "target")
    forced = backend if backend is not None else _forced_backend.get()
    if forced is _UNSET:
        forced = _DEFAULT_BACKEND
    key: tuple[Any, ...] | None = None
    if (
        weight is None
        and grad_output is None
        and forced is None
        and type(broadcast) is bool
        and (axis is None or type(axis) is int)
    ):
        # Hot path for small arrays: one lookup of the whole call signature.  Arrays of a
        # library with devices add their devices, so that a mixed call never hits.  (The
        # option types are checked first: 1 == True and 0.0 == 0 would share keys.)
        try:
            key = (
                type(input),
                type(target),
                input.shape,
                input.dtype,
                target.shape,
                target.dtype,
                reduction,
                axis,
                broadcast,
                out is not None,  # the plan says whether the call writes into out=
            )
            if type(input) is not _ndarray:
                key += (_device_key(input), _device_key(target))
            if _call_cache.version == registry.version:
                hit = _call_cache.entries.get(key)
            else:
                hit = _call_cache.get(key)
        except Exception:  # not arrays, an unhashable option, a tracer: the full path
            key, hit = None, None
        if hit is not None:
            implementation, plan = hit
            if _dispatch_logger.isEnabledFor(logging.DEBUG):
                registry.select((input, target), None, operation, plan)  # logs the decision
            if out is not None:  # the buffer itself is checked on every call
                _check_out(out, plan, operation, (input, target, None))
            return implementation, plan, input, target, None, None

    if weight is not None:
        weight = _admit(weight, "weight")
    arrays = (input, target) if weight is None else (input, target, weight)
    registry.decision(tuple(map(type, arrays)))  # non-arrays and mixed libraries raise here
    axis = _check_options(reduction, broadcast, axis)
    grad_output, grad_output_shape, grad_output_dtype = _grad_output(grad_output, input)
    if _family(type(input)) != "numpy":
        _check_devices(arrays if grad_output_dtype is None else (*arrays, grad_output))

    plan = make_plan(
        _shape(input, "input"),
        dtype_name(input.dtype),
        _shape(target, "target"),
        dtype_name(target.dtype),
        reduction,
        None if weight is None else _shape(weight, "weight"),
        None if weight is None else dtype_name(weight.dtype),
        axis,
        broadcast,
        grad_output_shape,
        grad_output_dtype,
        out is not None,
    )
    if out is not None:
        _check_out(out, plan, operation, (*arrays, grad_output))
    if type(grad_output) is int and abs(grad_output) >= 2**53:  # exact below: rounded once later
        grad_output = _rounded_integer(grad_output, plan.result_dtype)
    implementation = registry.select(arrays, forced, operation, plan)
    if key is not None and registry.static_choice(arrays) is implementation:
        _call_cache.put(key, (implementation, plan))
    return implementation, plan, input, target, weight, grad_output


def l1_loss(
    input: Array,
    target: Array,
    reduction: str = "mean",
    *,
    weight: Array | None = None,
    axis: int | tuple[int, ...] | None = None,
    broadcast: bool = False,
    backend: str | None = None,
    out: Array | None = None,
) -> Array:
    """Mean absolute error (L1 loss) between ``input`` and ``target``.

    Parameters
    ----------
    input, target : array
        Arrays of one library and device, of the same shape (or broadcastable
        with ``broadcast=True``).  Float16/32/64 and complex64/128 are supported;
        integers are promoted to floating point.
    reduction : {"mean", "sum", "none"}
        "none" returns ``weight * |input - target|`` elementwise; "sum" its sum;
        "mean" the sum divided by the count, or by ``sum(weight)`` when weighted.
    weight : array, optional
        Real weights broadcastable to the loss shape; cast to the result dtype.
    axis : int or tuple of int, optional
        Axes that "mean"/"sum" reduce; all axes by default.
    broadcast : bool
        Allow input and target of different shapes to broadcast.
    backend : str, optional
        Force a backend by name instead of dispatching on the array type.
    out : array, optional
        A writeable buffer of the loss's shape and real result dtype, in the inputs'
        library and on their device, overlapping none of them: the loss is written
        into it and it is returned.  A buffer that does not fit raises, untouched.

    Returns
    -------
    array
        The loss, in the inputs' namespace and on their device, of the real
        result dtype: 0-d for "mean"/"sum" without ``axis``.
    """
    if _compiling():  # torch.compile traces this: a traceable path to the custom ops
        if out is not None:
            raise TypeError("out= is not supported under torch.compile; return the result")
        from ._backends.torch import _ops

        return _ops.compiled_call(
            "l1_loss", input, target, reduction, weight, axis, broadcast, backend
        )
    implementation, plan, input, target, weight, _ = _prepare(
        "l1_loss", input, target, reduction, weight, axis, broadcast, backend, None, out
    )
    if out is None:
        return implementation.loss(plan, input, target, weight)
    return implementation.loss(plan, input, target, weight, out=out)


def l1_loss_grad(
    input: Array,
    target: Array,
    reduction: str = "mean",
    *,
    grad_output: Array | float | None = None,
    weight: Array | None = None,
    axis: int | tuple[int, ...] | None = None,
    broadcast: bool = False,
    backend: str | None = None,
    out: Array | None = None,
) -> Array:
    """Subgradient of :func:`l1_loss` with respect to ``input``.

    It is ``sign(input - target) * scale`` (``(input - target) / |input - target|``
    for complex), 0 at ties and NaN where either argument is NaN.  The scale is
    ``grad_output`` times 1 for "sum", ``1/count`` (weighted: ``weight/sum(weight)``)
    for "mean", and ``weight`` for "none".  The gradient with respect to
    ``target`` is its negative (or, with ``broadcast=True``,
    ``l1_loss_grad(target, input, ...)``).

    Parameters
    ----------
    input, target, reduction, weight, axis, broadcast, backend
        As for :func:`l1_loss`.
    grad_output : array or float, optional
        The upstream gradient: a scalar or an array of the loss's shape; 1 by default.
    out : array, optional
        A buffer for the gradient (the input's shape, the promoted dtype), under the
        rules of :func:`l1_loss`'s ``out``.

    Returns
    -------
    array
        The gradient, of the input's shape and the promoted dtype.
    """
    if _compiling():  # torch.compile traces this: a traceable path to the custom ops
        if out is not None:
            raise TypeError("out= is not supported under torch.compile; return the result")
        from ._backends.torch import _ops

        return _ops.compiled_call(
            "l1_loss_grad", input, target, reduction, weight, axis, broadcast, backend, grad_output
        )
    implementation, plan, input, target, weight, grad_output = _prepare(
        "l1_loss_grad", input, target, reduction, weight, axis, broadcast, backend, grad_output, out
    )
    if out is None:
        return implementation.grad(plan, input, target, weight, grad_output)
    return implementation.grad(plan, input, target, weight, grad_output, out=out)


def l1_loss_and_grad(
    input: Array,
    target: Array,
    reduction: str = "mean",
    *,
    grad_output: Array | float | None = None,
    weight: Array | None = None,
    axis: int | tuple[int, ...] | None = None,
    broadcast: bool = False,
    backend: str | None = None,
    out: Array | None = None,
) -> tuple[Array, Array]:
    """Loss and gradient with respect to ``input``, computed in one pass where the backend can.

    Parameters
    ----------
    input, target, reduction, grad_output, weight, axis, broadcast, backend
        As for :func:`l1_loss_grad`.
    out : array, optional
        A buffer for the gradient, as for :func:`l1_loss_grad`; the loss stays a fresh
        array.

    Returns
    -------
    tuple of array
        ``(l1_loss(...), l1_loss_grad(...))``.
    """
    if _compiling():  # torch.compile traces this: a traceable path to the custom ops
        if out is not None:
            raise TypeError("out= is not supported under torch.compile; return the result")
        from ._backends.torch import _ops

        return _ops.compiled_call(
            "l1_loss_and_grad", input, target, reduction, weight, axis, broadcast, backend,
            grad_output,
        )  # fmt: skip
    implementation, plan, input, target, weight, grad_output = _prepare(
        "l1_loss_and_grad", input, target, reduction, weight, axis, broadcast, backend, grad_output,
        out,
    )  # fmt: skip
    if out is None:
        return implementation.loss_and_grad(plan, input, target, weight, grad_output)
    return implementation.loss_and_grad(plan, input, target, weight, grad_output, out=out)


class L1Loss:
    """A loss object in the style of ``torch.nn.L1Loss``.

    Parameters
    ----------
    reduction : {"mean", "sum", "none"}
        The reduction, as for :func:`l1_loss`.
    size_average, reduce : bool, optional
        torch's deprecated arguments; when either is given they set the reduction
        exactly as torch does, with a ``DeprecationWarning``.
    """

    def __init__(
        self,
        reduction: str = "mean",
        *,
        size_average: bool | None = None,
        reduce: bool | None = None,
    ) -> None:
        if size_average is not None or reduce is not None:
            reduction = legacy_reduction(size_average, reduce)
        if not isinstance(reduction, str) or reduction not in REDUCTIONS:
            raise ValueError(
                f"reduction={reduction!r} is not valid; choose one of "
                + ", ".join(repr(r) for r in REDUCTIONS)
            )
        self.reduction = reduction

    def __repr__(self) -> str:
        return f"L1Loss(reduction={self.reduction!r})"

    def forward(self, input: Array, target: Array, **options: Any) -> Array:
        """Return :func:`l1_loss` of ``input`` and ``target`` with this reduction.

        Parameters
        ----------
        input, target : array
            As for :func:`l1_loss`.
        **options
            ``weight``, ``axis``, ``broadcast`` or ``backend``, as for :func:`l1_loss`.
        """
        return l1_loss(input, target, self.reduction, **options)

    __call__ = forward

    def grad(self, input: Array, target: Array, **options: Any) -> Array:
        """Return :func:`l1_loss_grad` with this reduction.

        Parameters
        ----------
        input, target : array
            As for :func:`l1_loss`.
        **options
            ``grad_output``, ``weight``, ``axis``, ``broadcast`` or ``backend``.
        """
        return l1_loss_grad(input, target, self.reduction, **options)

    def loss_and_grad(self, input: Array, target: Array, **options: Any) -> tuple[Array, Array]:
        """Return :func:`l1_loss_and_grad` with this reduction.

        Parameters
        ----------
        input, target : array
            As for :func:`l1_loss`.
        **options
            ``grad_output``, ``weight``, ``axis``, ``broadcast`` or ``backend``.
        """
        return l1_loss_and_grad(input, target, self.reduction, **options)


def backends() -> list[BackendInfo]:
    """List every known backend, probing whether it can run here.

    Returns
    -------
    list of BackendInfo
        One record per backend with ``.name``, ``.array_types``, ``.available``,
        ``.reason`` (why not, else None) and ``.capabilities``.
    """
    return registry.info()


def register_backend(spec: BackendSpec, *, replace: bool = False) -> BackendSpec:
    """Register a backend (plugins may instead use the ``l1backends.backends`` entry points).

    Parameters
    ----------
    spec : BackendSpec
        The backend's registration.
    replace : bool
        Replace a backend already registered under the same name.

    Returns
    -------
    BackendSpec
        The registered spec.
    """
    return registry.register(spec, replace=replace)


def unregister_backend(name: str) -> None:
    """Remove a registered backend.

    Parameters
    ----------
    name : str
        The backend's name.
    """
    registry.unregister(name)


@contextmanager
def use_backend(name: str | None) -> Iterator[None]:
    """Force backend ``name`` for calls in this block; None dispatches by type in it.

    The choice lives in a ``ContextVar``, so it is local to the thread or asyncio
    task that entered the block.  It beats ``L1BACKENDS_BACKEND``: ``use_backend(None)``
    restores dispatch by type even where that variable sets a default; an explicit
    ``backend=`` beats both.

    Parameters
    ----------
    name : str or None
        A known backend name.
    """
    if name is not None:
        registry.spec(name)  # unknown names fail here, not at the first call
    token = _forced_backend.set(name)
    try:
        yield
    finally:
        _forced_backend.reset(token)
