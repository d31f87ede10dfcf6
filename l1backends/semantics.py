"""The L1-loss specification as code.

This module turns the arguments of a call, described only by shapes and dtype
names, into a validated :class:`Plan`.  It imports no array library: every
backend and face asks it the same questions and gets the same answers, so the
rules live here and nowhere else.
"""

from __future__ import annotations

import math
import warnings
from contextlib import suppress
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache

__all__ = [
    "ACCUMULATE_DTYPE",
    "COMPLEX_DTYPES",
    "FLOAT_DTYPES",
    "INTEGER_DTYPES",
    "OUT_WRITES",
    "REDUCTIONS",
    "SUPPORTED_DTYPES",
    "Finish",
    "GradScale",
    "Plan",
    "broadcast_shapes",
    "check_out",
    "dtype_name",
    "legacy_reduction",
    "make_plan",
    "normalize_axis",
    "promote_dtypes",
    "real_dtype",
]

REDUCTIONS = ("none", "mean", "sum")
FLOAT_DTYPES = ("float16", "float32", "float64")
COMPLEX_DTYPES = ("complex64", "complex128")
SUPPORTED_DTYPES = FLOAT_DTYPES + COMPLEX_DTYPES
INTEGER_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
# Sums are carried in float64 for every dtype: float16 and float32 differences are then
# exact, and float64 sums are additionally compensated by each backend.
ACCUMULATE_DTYPE = "float64"

_REAL_OF = {
    "float16": "float16",
    "float32": "float32",
    "float64": "float64",
    "complex64": "float32",
    "complex128": "float64",
}
_COMPLEX_OF = {"float16": "complex64", "float32": "complex64", "float64": "complex128"}
_FLOAT_RANK = {"float16": 0, "float32": 1, "float64": 2}


class Finish(IntEnum):
    """How a loss is finished from its sums: the one place this decision is made.

    Kernels receive these integer codes (the CUDA C++ source gets them generated from
    this enum), so every backend finishes a reduction the same way.
    """

    NONE = 0  #: "none": elementwise ``w·|d|``, nothing is summed
    SUM = 1  #: "sum": the sum, rounded once
    MEAN_BY_COUNT = 2  #: unweighted "mean": the sum divided by the count
    MEAN_BY_WEIGHT = 3  #: weighted "mean": Σ w·|d| divided by Σ w


class GradScale(IntEnum):
    """What the subgradient ``sign(d)`` is scaled by, besides ``grad_output`` and the weight."""

    PLAIN = 0  #: "none" and "sum": ``grad_output · w``
    BY_COUNT = 1  #: unweighted "mean": ``grad_output / count``
    BY_WEIGHT_SUM = 2  #: weighted "mean": ``grad_output · w / Σw`` (Σw needed before the pass)


# Keyed by (type, dtype) so that dtypes of different libraries are never compared
# with each other (array-api-strict warns when compared with NumPy dtypes).
_dtype_names: dict[tuple[type, object], str] = {}


def dtype_name(dtype: object) -> str:
    """Return the canonical name (``"float32"``, ``"int64"``, ...) of any library's dtype.

    Parameters
    ----------
    dtype : object
        A NumPy/CuPy/JAX/Dask dtype (these have ``.name``), a torch dtype or an
        array-api-strict dtype (whose ``str`` ends in the name).

    Returns
    -------
    str
        The dtype's name, such as ``"float32"``.
    """
    key = (type(dtype), dtype)
    try:
        return _dtype_names[key]
    except (KeyError, TypeError):
        pass
    name = getattr(dtype, "name", None)
    if not isinstance(name, str):
        name = str(dtype).rsplit(".", 1)[-1]
    with suppress(TypeError):  # unhashable dtype objects are simply not cached
        _dtype_names[key] = name
    return name


def _check_dtype(role: str, name: str) -> None:
    if name in SUPPORTED_DTYPES or name in INTEGER_DTYPES:
        return
    raise TypeError(
        f"{role} has dtype {name}, which l1backends does not support; supported dtypes are "
        f"{', '.join(SUPPORTED_DTYPES)}, and integer dtypes are promoted to floating point"
    )


def promote_dtypes(a: str, b: str) -> str:
    """Return the dtype in which ``a - b`` is computed (the gradient's dtype).

    Follows the Array-API promotion table, except that integer inputs are
    promoted to floating point: integer with a float or complex dtype gives that
    dtype, and integer with integer gives float64.

    Parameters
    ----------
    a, b : str
        Dtype names of input and target.

    Returns
    -------
    str
        The promoted floating-point or complex dtype name.

    Raises
    ------
    TypeError
        If either dtype is bool, object, string or another unsupported dtype.
    """
    _check_dtype("input", a)
    _check_dtype("target", b)
    a_int, b_int = a in INTEGER_DTYPES, b in INTEGER_DTYPES
    if a_int and b_int:
        return "float64"
    if a_int:
        return b
    if b_int:
        return a
    real_a, real_b = _REAL_OF[a], _REAL_OF[b]
    real = real_a if _FLOAT_RANK[real_a] >= _FLOAT_RANK[real_b] else real_b
    if a in COMPLEX_DTYPES or b in COMPLEX_DTYPES:
        return _COMPLEX_OF[real]
    return real


def real_dtype(name: str) -> str:
    """Return the real dtype of a supported floating or complex dtype (complex64 -> float32)."""
    return _REAL_OF[name]


def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """Broadcast shapes by the Array-API rules.

    Parameters
    ----------
    *shapes : tuple of int
        The shapes to broadcast.

    Returns
    -------
    tuple of int
        The broadcast shape.

    Raises
    ------
    ValueError
        If the shapes are not broadcast-compatible; the message names them.
    """
    ndim = max((len(s) for s in shapes), default=0)
    result = []
    for position in range(-ndim, 0):
        size = 1
        for shape in shapes:
            if len(shape) < -position:
                continue
            dim = shape[position]
            if dim == 1:
                continue
            if size not in (1, dim):
                listed = ", ".join(str(tuple(s)) for s in shapes)
                raise ValueError(f"shapes {listed} cannot be broadcast together")
            size = dim
        result.append(size)
    return tuple(result)


def normalize_axis(axis: int | tuple[int, ...] | None, ndim: int) -> tuple[int, ...]:
    """Turn ``axis`` into a sorted tuple of non-negative axes.

    Parameters
    ----------
    axis : int, tuple of int or None
        The axes to reduce; negatives count from the end; None means all axes.
    ndim : int
        Number of dimensions of the loss.

    Returns
    -------
    tuple of int
        Sorted, distinct, non-negative axes.

    Raises
    ------
    TypeError
        If an axis is not an integer.
    ValueError
        If an axis is out of range or repeated.
    """
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if not isinstance(axis, (tuple, list)) else tuple(axis)
    normalized = []
    for ax in axes:
        if isinstance(ax, bool) or not hasattr(ax, "__index__"):
            raise TypeError(f"axis must be an int or a tuple of ints, got {ax!r}")
        ax = ax.__index__()
        if not -ndim <= ax < ndim:
            raise ValueError(
                f"axis {ax} is out of range for a loss with {ndim} dimension(s); "
                f"valid axes are {-ndim}..{ndim - 1}"
                if ndim
                else f"axis {ax} is out of range for a 0-d loss, which has no axes"
            )
        normalized.append(ax % ndim)
    if len(set(normalized)) != len(normalized):
        raise ValueError(f"axis {axis!r} repeats an axis")
    return tuple(sorted(normalized))


def legacy_reduction(size_average: bool | None, reduce: bool | None) -> str:
    """Map torch's deprecated ``size_average``/``reduce`` pair to a reduction, with a warning.

    The mapping is torch's: a None argument counts as True; ``reduce=False``
    gives "none", else ``size_average=False`` gives "sum", else "mean".

    Parameters
    ----------
    size_average, reduce : bool or None
        The legacy arguments; at least one is not None.

    Returns
    -------
    str
        The equivalent reduction.
    """
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if not reduce:
        reduction = "none"
    elif size_average:
        reduction = "mean"
    else:
        reduction = "sum"
    warnings.warn(
        f"size_average and reduce are deprecated, as in torch; use reduction={reduction!r} instead",
        DeprecationWarning,
        stacklevel=3,
    )
    return reduction


@dataclass(frozen=True, slots=True, eq=False)
class Plan:
    """A validated description of one L1-loss call.

    Plans are interned by :func:`make_plan`'s cache and compare by identity, so that
    backends can key their own caches on a plan at the cost of an ``id``.

    Attributes
    ----------
    reduction : str
        "none", "mean" or "sum".
    input_shape, target_shape : tuple of int
        The shapes of input and target.
    weight_shape : tuple of int or None
        The weight's shape, or None when unweighted.
    shape : tuple of int
        The elementwise loss shape (input and target broadcast together).
    reduced_axes : tuple of int
        Sorted axes of ``shape`` that "mean"/"sum" reduce; empty for "none".
    out_shape : tuple of int
        The loss result's shape: ``shape`` for "none", else ``shape`` without
        ``reduced_axes``.
    count : int
        Number of elements reduced into each output element (1 for "none").
    compute_dtype : str
        The promoted dtype of ``input - target``; the gradient's dtype.
    result_dtype : str
        The loss's dtype: the real dtype of ``compute_dtype``.
    accumulate_dtype : str
        The dtype sums are carried in (float64; compensated for float64 results).
    grad_output_shape : tuple of int or None
        Shape of the given ``grad_output`` (``()`` for a scalar), None for the default.
    finish : Finish
        How the loss is finished from its sums (derived from reduction and weight).
    writes_out : bool
        Whether the array result is written into a caller's ``out=`` buffer.
    """

    reduction: str
    input_shape: tuple[int, ...]
    target_shape: tuple[int, ...]
    weight_shape: tuple[int, ...] | None
    shape: tuple[int, ...]
    reduced_axes: tuple[int, ...]
    out_shape: tuple[int, ...]
    count: int
    compute_dtype: str
    result_dtype: str
    accumulate_dtype: str
    grad_output_shape: tuple[int, ...] | None
    finish: Finish
    writes_out: bool = False

    @property
    def weighted(self) -> bool:
        """Whether a weight was given."""
        return self.weight_shape is not None

    @property
    def elementwise(self) -> bool:
        """Whether the loss is elementwise ("none"): nothing is summed."""
        return self.finish is Finish.NONE

    @property
    def averages(self) -> bool:
        """Whether the loss is a mean (by the count, or by Σw when weighted)."""
        return self.finish in (Finish.MEAN_BY_COUNT, Finish.MEAN_BY_WEIGHT)

    @property
    def grad_scale(self) -> GradScale:
        """What the gradient's ``sign(d)`` is scaled by, besides ``grad_output`` and the weight."""
        if self.finish is Finish.MEAN_BY_COUNT:
            return GradScale.BY_COUNT
        if self.finish is Finish.MEAN_BY_WEIGHT:
            return GradScale.BY_WEIGHT_SUM
        return GradScale.PLAIN

    @property
    def needs_weight_sum(self) -> bool:
        """Whether the gradient needs Σw over the reduced axes before its pass (weighted mean)."""
        return self.grad_scale is GradScale.BY_WEIGHT_SUM

    @property
    def grad_output_is_array(self) -> bool:
        """Whether ``grad_output`` is an array of the loss's shape (not a scalar or absent)."""
        return self.grad_output_shape not in (None, ())

    @property
    def is_complex(self) -> bool:
        """Whether the difference is complex (the loss is then its modulus)."""
        return self.compute_dtype in COMPLEX_DTYPES

    @property
    def kept_axes(self) -> tuple[int, ...]:
        """Axes of ``shape`` that survive the reduction, in order."""
        return tuple(ax for ax in range(len(self.shape)) if ax not in self.reduced_axes)

    @property
    def keepdims_shape(self) -> tuple[int, ...]:
        """``out_shape`` with the reduced axes kept as size 1, to broadcast against ``shape``."""
        if self.elementwise:
            return self.shape
        return tuple(1 if ax in self.reduced_axes else n for ax, n in enumerate(self.shape))

    @property
    def size(self) -> int:
        """Number of elements of the elementwise loss."""
        return math.prod(self.shape)

    @property
    def input_broadcast_axes(self) -> tuple[int, ...]:
        """Axes of ``shape`` along which the input was broadcast: its gradient sums them."""
        lead = len(self.shape) - len(self.input_shape)
        return tuple(range(lead)) + tuple(
            lead + ax
            for ax, n in enumerate(self.input_shape)
            if n == 1 and self.shape[lead + ax] != 1
        )

    @property
    def input_broadcast(self) -> bool:
        """Whether the input is smaller than the loss, so its gradient must be summed back."""
        return self.input_shape != self.shape


@lru_cache(maxsize=4096, typed=True)
def make_plan(
    input_shape: tuple[int, ...],
    input_dtype: str,
    target_shape: tuple[int, ...],
    target_dtype: str,
    reduction: str = "mean",
    weight_shape: tuple[int, ...] | None = None,
    weight_dtype: str | None = None,
    axis: int | tuple[int, ...] | None = None,
    broadcast: bool = False,
    grad_output_shape: tuple[int, ...] | None = None,
    grad_output_dtype: str | None = None,
    writes_out: bool = False,
) -> Plan:
    """Validate one call's arguments and plan it.

    Parameters
    ----------
    input_shape, target_shape : tuple of int
        Shapes of input and target.
    input_dtype, target_dtype : str
        Their dtype names (see :func:`dtype_name`).
    reduction : str
        "none", "mean" or "sum".
    weight_shape : tuple of int or None
        Shape of the weight, or None when unweighted.
    weight_dtype : str or None
        Dtype name of the weight.
    axis : int, tuple of int or None
        Axes reduced by "mean"/"sum"; None means all.
    broadcast : bool
        Whether input and target may broadcast against each other.
    grad_output_shape : tuple of int or None
        Shape of ``grad_output`` (``()`` for a scalar), or None when it is absent.
    grad_output_dtype : str or None
        Its dtype name, or None for a Python number.
    writes_out : bool
        Whether the call writes its array result into a buffer given as ``out=``
        (checked against the plan by :func:`check_out`).

    Returns
    -------
    Plan
        The validated plan.

    Raises
    ------
    ValueError
        For a bad reduction, mismatched shapes, a bad axis, a weight that does not
        broadcast to the loss shape, or a ``grad_output`` of the wrong shape.
    TypeError
        For unsupported dtypes (bool, object, string, ...) or a complex weight.
    """
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(
            f"reduction={reduction!r} is not valid; choose one of "
            + ", ".join(repr(r) for r in REDUCTIONS)
        )
    compute_dtype = promote_dtypes(input_dtype, target_dtype)
    result_dtype = _REAL_OF[compute_dtype]

    if broadcast:
        shape = broadcast_shapes(input_shape, target_shape)
    elif input_shape != target_shape:
        raise ValueError(
            f"input shape {input_shape} and target shape {target_shape} differ; "
            "pass broadcast=True to broadcast them by the Array-API rules"
        )
    else:
        shape = input_shape

    if weight_shape is not None:
        if weight_dtype in COMPLEX_DTYPES:
            raise TypeError(f"weight has complex dtype {weight_dtype}; weights must be real")
        if weight_dtype not in FLOAT_DTYPES and weight_dtype not in INTEGER_DTYPES:
            raise TypeError(
                f"weight has dtype {weight_dtype}; weights must be a real integer or "
                "floating-point array"
            )
        try:
            weighted_shape = broadcast_shapes(shape, weight_shape)
        except ValueError:
            weighted_shape = None
        if weighted_shape != shape:
            raise ValueError(
                f"weight shape {weight_shape} does not broadcast to the loss shape {shape}"
            )

    if reduction == "none":
        if axis is not None:
            raise ValueError(
                f"axis={axis!r} was given with reduction='none', which reduces nothing; "
                "use reduction='mean' or 'sum' to reduce along axes"
            )
        reduced_axes: tuple[int, ...] = ()
        out_shape = shape
    else:
        reduced_axes = normalize_axis(axis, len(shape))
        out_shape = tuple(n for ax, n in enumerate(shape) if ax not in reduced_axes)
    count = math.prod(shape[ax] for ax in reduced_axes)

    if grad_output_shape is not None:
        if grad_output_dtype is not None and grad_output_dtype not in FLOAT_DTYPES + INTEGER_DTYPES:
            raise TypeError(
                f"grad_output has dtype {grad_output_dtype}; it must be real, like the loss"
            )
        if grad_output_shape not in ((), out_shape):
            raise ValueError(
                f"grad_output has shape {grad_output_shape}, but the loss has shape {out_shape}; "
                "pass a scalar or an array of the loss's shape"
            )

    return Plan(
        reduction=reduction,
        input_shape=input_shape,
        target_shape=target_shape,
        weight_shape=weight_shape,
        shape=shape,
        reduced_axes=reduced_axes,
        out_shape=out_shape,
        count=count,
        compute_dtype=compute_dtype,
        result_dtype=result_dtype,
        accumulate_dtype=ACCUMULATE_DTYPE,
        grad_output_shape=grad_output_shape,
        finish=_FINISH[reduction, weight_shape is not None],
        writes_out=bool(writes_out),
    )


#: What each public function writes into ``out=``: the loss, or the gradient.
OUT_WRITES = {"l1_loss": "loss", "l1_loss_grad": "gradient", "l1_loss_and_grad": "gradient"}


def check_out(plan: Plan, operation: str, shape: tuple[int, ...], dtype: str) -> None:
    """Check an ``out=`` buffer's shape and dtype against what ``operation`` writes.

    ``l1_loss`` writes the loss (``plan.out_shape``, the result dtype); ``l1_loss_grad``
    and ``l1_loss_and_grad`` write the gradient (the input's shape, the compute dtype;
    the loss of ``l1_loss_and_grad`` stays a fresh array).

    Raises
    ------
    ValueError
        If the shape differs; the message names both shapes.
    TypeError
        If the dtype differs; the message names both dtypes.
    """
    what = OUT_WRITES[operation]
    if what == "loss":
        expected_shape, expected_dtype = plan.out_shape, plan.result_dtype
    else:
        expected_shape, expected_dtype = plan.input_shape, plan.compute_dtype
    if shape != expected_shape:
        raise ValueError(
            f"out has shape {shape}, but {operation} writes a {what} of shape {expected_shape}"
        )
    if dtype != expected_dtype:
        raise TypeError(
            f"out has dtype {dtype}, but {operation} writes a {what} of dtype {expected_dtype}"
        )


_FINISH = {
    ("none", False): Finish.NONE,
    ("none", True): Finish.NONE,
    ("sum", False): Finish.SUM,
    ("sum", True): Finish.SUM,
    ("mean", False): Finish.MEAN_BY_COUNT,
    ("mean", True): Finish.MEAN_BY_WEIGHT,
}
