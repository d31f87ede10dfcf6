"""The public functions: ``l1_loss``, ``l1_loss_grad``, ``l1_loss_and_grad`` and ``L1Loss``."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from .registry import BackendInfo, BackendSpec, array_family, registry, type_name
from .semantics import REDUCTIONS, Plan, dtype_name, legacy_reduction, make_plan

__all__ = [
    "BACKEND_ENV_VAR",
    "L1Loss",
    "backends",
    "l1_loss",
    "l1_loss_and_grad",
    "l1_loss_grad",
    "register_backend",
    "unregister_backend",
    "use_backend",
]

Array = Any

BACKEND_ENV_VAR = "L1BACKENDS_BACKEND"
# Read once at import: a process-wide default for ``backend=``.
_DEFAULT_BACKEND = os.environ.get(BACKEND_ENV_VAR) or None
_forced_backend: ContextVar[str | None] = ContextVar("l1backends_backend", default=None)
_dispatch_logger = logging.getLogger("l1backends.dispatch")
_CALL_CACHE_SIZE = 4096


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


def _grad_output_meta(
    grad_output: Array | float | None, input: Array
) -> tuple[tuple[int, ...] | None, str | None]:
    """Shape and dtype name of ``grad_output`` (``()`` and None for a Python number)."""
    if grad_output is None:
        return None, None
    if isinstance(grad_output, (int, float)) and not isinstance(grad_output, bool):
        return (), None
    if not hasattr(grad_output, "shape") or not hasattr(grad_output, "dtype"):
        raise TypeError(f"grad_output must be a real number or an array, got {grad_output!r}")
    if _family(type(grad_output)) != _family(type(input)):
        raise TypeError(
            f"grad_output is a {type_name(type(grad_output))} but input is a "
            f"{type_name(type(input))}; arrays from different libraries cannot be mixed"
        )
    return _shape(grad_output, "grad_output"), dtype_name(grad_output.dtype)


def _check_devices(arrays: tuple[Array, ...]) -> None:
    """Refuse arrays of one library that live on different devices."""
    import array_api_compat

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
) -> tuple[Any, Plan]:
    forced = backend if backend is not None else (_forced_backend.get() or _DEFAULT_BACKEND)
    if weight is None and grad_output is None and forced is None:
        # Hot path for small arrays: one lookup of the whole call signature.
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
            )
            hit = registry.call_cache.get(key)
        except (AttributeError, TypeError):  # not arrays, or an unhashable axis: slow path
            key, hit = None, None
        if hit is not None:
            if _dispatch_logger.isEnabledFor(logging.DEBUG):
                registry.select((input, target), None, operation)  # logs the decision
            return hit
    else:
        key = None

    arrays = (input, target) if weight is None else (input, target, weight)
    implementation = registry.select(arrays, forced, operation)
    grad_output_shape, grad_output_dtype = _grad_output_meta(grad_output, input)
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
        tuple(axis) if isinstance(axis, list) else axis,
        bool(broadcast),
        grad_output_shape,
        grad_output_dtype,
    )
    if key is not None and registry.static_choice(arrays) is implementation:
        if len(registry.call_cache) >= _CALL_CACHE_SIZE:
            registry.call_cache.clear()
        registry.call_cache[key] = (implementation, plan)
    return implementation, plan


def l1_loss(
    input: Array,
    target: Array,
    reduction: str = "mean",
    *,
    weight: Array | None = None,
    axis: int | tuple[int, ...] | None = None,
    broadcast: bool = False,
    backend: str | None = None,
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

    Returns
    -------
    array
        The loss, in the inputs' namespace and on their device, of the real
        result dtype: 0-d for "mean"/"sum" without ``axis``.
    """
    implementation, plan = _prepare(
        "l1_loss", input, target, reduction, weight, axis, broadcast, backend, None
    )
    return implementation.loss(plan, input, target, weight)


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

    Returns
    -------
    array
        The gradient, of the input's shape and the promoted dtype.
    """
    implementation, plan = _prepare(
        "l1_loss_grad", input, target, reduction, weight, axis, broadcast, backend, grad_output
    )
    return implementation.grad(plan, input, target, weight, grad_output)


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
) -> tuple[Array, Array]:
    """Loss and gradient with respect to ``input``, computed in one pass where the backend can.

    Parameters
    ----------
    input, target, reduction, grad_output, weight, axis, broadcast, backend
        As for :func:`l1_loss_grad`.

    Returns
    -------
    tuple of array
        ``(l1_loss(...), l1_loss_grad(...))``.
    """
    implementation, plan = _prepare(
        "l1_loss_and_grad", input, target, reduction, weight, axis, broadcast, backend, grad_output
    )
    return implementation.loss_and_grad(plan, input, target, weight, grad_output)


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
    """Force backend ``name`` for calls in this block (None restores type dispatch).

    The choice lives in a ``ContextVar``, so it is local to the thread or
    asyncio task that entered the block.

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
