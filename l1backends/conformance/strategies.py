"""Hypothesis strategies for the conformance suite, modelled on data-apis/array-api-tests.

A drawn :class:`Case` holds the logical NumPy values of one call and how to
build them (memory layouts, read-only flags); :meth:`Case.repro` prints it as
one line of Python that reproduces the call.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ..semantics import (
    COMPLEX_DTYPES,
    INTEGER_DTYPES,
    REDUCTIONS,
    Plan,
    make_plan,
    promote_dtypes,
    real_dtype,
)
from .adapters import EXTRA_LAYOUTS, ArrayAdapter, build

__all__ = ["Case", "cases", "dtype_pairs"]

# Bounds that keep every intermediate finite: |x - y| <= 2**1001 and a weighted sum of
# up to 2**10 terms with weights below 2**10 stays far from float64's 2**1024.
_MAX_MAGNITUDE = {"float16": None, "float32": None, "float64": 2.0**1000}
_MAX_WEIGHT = 2.0**10
_MIN_WEIGHT = 2.0**-20
_MAX_GRAD_OUTPUT = 2.0**10
_INTEGER_BOUND = 2**20
_WIDTH: dict[str, Literal[16, 32, 64]] = {"float16": 16, "float32": 32, "float64": 64}


@dataclass
class Case:
    """One drawn call: logical values, options and memory layouts.

    Attributes
    ----------
    input, target : numpy.ndarray
        The logical values (their dtypes are the call's dtypes).
    reduction : str
        The reduction.
    weight : numpy.ndarray or None
        Non-negative weights, or None.
    axis : int, tuple of int or None
        The ``axis`` argument.
    broadcast : bool
        The ``broadcast`` argument.
    grad_output : None, float or numpy.ndarray
        The ``grad_output`` argument for gradient calls.
    layouts : dict
        Layout (see :func:`l1backends.conformance.adapters.build`) per role.
    read_only : bool
        Whether arrays are made read-only where the library can.
    probe : numpy.ndarray or None
        A second point of the input's shape and dtype, for the convexity check.
    """

    input: np.ndarray
    target: np.ndarray
    reduction: str = "mean"
    weight: np.ndarray | None = None
    axis: int | tuple[int, ...] | None = None
    broadcast: bool = False
    grad_output: Any = None
    layouts: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    read_only: bool = False
    probe: np.ndarray | None = None

    def plan(self, swapped: bool = False, grad_output: Any = None) -> Plan:
        """The plan of this call (with input and target swapped when ``swapped``)."""
        first, second = (self.target, self.input) if swapped else (self.input, self.target)
        g = grad_output
        g_shape = None if g is None else (() if isinstance(g, float) else tuple(g.shape))
        g_dtype = None if g is None or isinstance(g, float) else g.dtype.name
        return make_plan(
            first.shape,
            first.dtype.name,
            second.shape,
            second.dtype.name,
            self.reduction,
            None if self.weight is None else self.weight.shape,
            None if self.weight is None else self.weight.dtype.name,
            self.axis,
            self.broadcast,
            g_shape,
            g_dtype,
        )

    def build(self, adapter: ArrayAdapter, role: str, values: np.ndarray | None = None) -> Any:
        """Build the array of ``role`` ("input", "target", "weight", "probe") in the library."""
        values = getattr(self, role) if values is None else values
        array = build(adapter, values, self.layouts.get(role, ("C",)))
        if self.read_only:
            frozen = adapter.read_only(array)
            array = array if frozen is None else frozen
        return array

    def kwargs(self, adapter: ArrayAdapter, *, gradient: bool) -> dict[str, Any]:
        """Keyword arguments of the call, with arrays built in the library."""
        options: dict[str, Any] = {"axis": self.axis, "broadcast": self.broadcast}
        if self.weight is not None:
            options["weight"] = self.build(adapter, "weight")
        if gradient and self.grad_output is not None:
            g = self.grad_output
            options["grad_output"] = g if isinstance(g, float) else adapter.from_numpy(g)
        return options

    def repro(self, backend: str, adapter: ArrayAdapter, function: str) -> str:
        """One line of Python that makes this call."""
        x, y = self.input, self.target
        if function.endswith("(target)"):
            function = function.removesuffix("(target)")
            x, y = y, x
        arguments = [adapter.repro(_literal(x)), adapter.repro(_literal(y)), repr(self.reduction)]
        if self.weight is not None:
            arguments.append("weight=" + adapter.repro(_literal(self.weight)))
        if self.axis is not None:
            arguments.append(f"axis={self.axis!r}")
        if self.broadcast:
            arguments.append("broadcast=True")
        if function != "l1_loss" and self.grad_output is not None:
            g = self.grad_output
            arguments.append(
                "grad_output=" + (repr(g) if isinstance(g, float) else adapter.repro(_literal(g)))
            )
        arguments.append(f"backend={backend!r}")
        layouts = ", ".join(f"{role}={layout[0]}" for role, layout in self.layouts.items())
        read_only = ", read-only" if self.read_only else ""
        return (
            f"{adapter.imports}; import l1backends as l1; "
            f"l1.{function}({', '.join(arguments)})  # layouts: {layouts or 'C'}{read_only}"
        )


def _scalar_literal(value: Any) -> str:
    if isinstance(value, (complex, np.complexfloating)):
        return f"complex({_scalar_literal(value.real)}, {_scalar_literal(value.imag)})"
    if isinstance(value, (np.integer, int)):
        return str(int(value))
    value = float(value)
    if math.isnan(value) or math.isinf(value):
        return f"float('{value}')"
    return repr(value)


def _literal(array: np.ndarray) -> str:
    """NumPy source that rebuilds ``array`` exactly (floats print their float64 repr)."""
    values = ", ".join(_scalar_literal(v) for v in array.ravel())
    source = f"np.asarray([{values}], dtype='{array.dtype.name}')"
    if array.ndim != 1:
        source += f".reshape({array.shape!r})"
    return source


def dtype_pairs(
    declared: tuple[str, ...], unsupported: frozenset[str] = frozenset()
) -> list[tuple[str, str]]:
    """(input, target) dtype pairs whose promoted dtype is declared, same dtypes first.

    Integer inputs promote (to the float of the other side, or float64); mixed
    float precisions promote by the Array-API table.  Dtypes in ``unsupported``
    (the library cannot hold them) are left out.
    """
    declared = tuple(d for d in declared if d not in unsupported)
    candidates = [*declared, "int8", "int32", "int64", "uint8", "uint16"]
    same = [(d, d) for d in declared]
    mixed = [
        (a, b)
        for a, b in itertools.product(candidates, repeat=2)
        if a != b and promote_dtypes(a, b) in declared
    ]
    return same + mixed


def _values(
    dtype: str, shape: tuple[int, ...], finite: bool, subnormals: bool = True
) -> st.SearchStrategy[np.ndarray]:
    if dtype in INTEGER_DTYPES:
        info = np.iinfo(dtype)
        elements = st.integers(max(info.min, -_INTEGER_BOUND), min(info.max, _INTEGER_BOUND))
        return hnp.arrays(dtype, shape, elements=elements, fill=st.nothing())
    if dtype in COMPLEX_DTYPES:
        part = real_dtype(dtype)
        component = _float_elements(part, finite, subnormals)
        pairs = st.tuples(component, component).map(lambda parts: complex(*parts))
        return hnp.arrays(dtype, shape, elements=pairs, fill=st.nothing())
    return hnp.arrays(
        dtype, shape, elements=_float_elements(dtype, finite, subnormals), fill=st.nothing()
    )


def _float_elements(dtype: str, finite: bool, subnormals: bool = True) -> st.SearchStrategy[float]:
    """Floats of ``dtype`` including ±0, subnormals, large magnitudes and (unless finite) NaN, ±inf.

    Without ``subnormals``, non-zero values are at least ``2**(emin/2)`` in
    magnitude, so that no difference or product of them is subnormal either.
    """
    bound = _MAX_MAGNITUDE[dtype]
    width = _WIDTH[dtype]
    general = st.floats(
        min_value=None if bound is None else -bound,
        max_value=bound,
        allow_nan=not finite and bound is None,
        allow_infinity=not finite and bound is None,
        allow_subnormal=subnormals,
        width=width,
    )
    info = np.finfo(dtype)
    specials = [0.0, -0.0, 1.0, -1.5]
    if subnormals:
        specials += [float(info.smallest_subnormal), -float(info.tiny)]
    else:
        floor = 2.0 ** (info.minexp // 2)
        general = general.filter(lambda v: v == 0 or not math.isfinite(v) or abs(v) >= floor)
    if not finite:
        specials += [math.nan, math.inf, -math.inf]
    return st.one_of(_full_mantissas(dtype), general, st.sampled_from(specials))


def _full_mantissas(dtype: str) -> st.SearchStrategy[float]:
    """Numbers of ``dtype`` with random full mantissas and nearby exponents.

    Hypothesis's own floats favour simple values whose sums are exact; these
    expose every rounding and accumulation error.
    """
    bits = FORMAT_BITS[dtype]

    def make(negative: bool, mantissa: int, exponent: int) -> float:
        value = math.ldexp(1 + mantissa / 2**bits, exponent)
        return -value if negative else value

    return st.builds(make, st.booleans(), st.integers(0, 2**bits - 1), st.integers(-6, 6))


# Stored mantissa bits per dtype.
FORMAT_BITS = {"float16": 10, "float32": 23, "float64": 52}


@st.composite
def _shapes(draw: st.DrawFn, max_size: int) -> tuple[int, ...]:
    """0-d, empty, small (up to 4-d) or large shapes, drawn evenly by kind.

    Choosing the kind first keeps hypothesis from drawing mostly tiny arrays,
    where accumulation errors cannot show.
    """
    kind = draw(st.sampled_from(["0-d", "empty", "small", "large"]))
    if kind == "0-d":
        return ()
    if kind == "large":
        ndim = draw(st.integers(1, 3))
        sides = [draw(st.integers(1, 4)) for _ in range(ndim - 1)]
        last = max(1, max_size // math.prod(sides))
        return (*sides, draw(st.integers(max(1, last // 2), last)))
    dims = hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=4)
    if kind == "empty":
        return draw(dims.filter(lambda s: 0 in s))
    return draw(dims.filter(lambda s: 0 not in s and math.prod(s) <= max_size))


def _smaller_shape(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A shape that broadcasts to ``shape``: leading axes dropped, some axes set to 1."""
    drop = draw(st.integers(0, len(shape)))
    kept = shape[drop:]
    ones = draw(st.lists(st.booleans(), min_size=len(kept), max_size=len(kept)))
    return tuple(1 if one else n for n, one in zip(kept, ones, strict=True))


def _layout(draw: st.DrawFn, adapter: ArrayAdapter, values: np.ndarray) -> tuple[Any, ...]:
    """A layout ``adapter`` can build for ``values`` (broadcast layouts need constant axes)."""
    ndim = values.ndim
    choices = ["C", *(k for k in EXTRA_LAYOUTS if k in adapter.layouts)]
    if ndim >= 1:
        choices += [k for k in ("negative", "step", "broadcast") if k in adapter.layouts]
    if ndim >= 2:
        choices += [k for k in ("F", "transposed") if k in adapter.layouts]
    kind = draw(st.sampled_from(choices))
    if kind == "transposed":
        axes = draw(st.permutations(range(ndim)).filter(lambda p: list(p) != sorted(p)))
        return ("transposed", tuple(axes))
    if kind == "step":
        return ("step", draw(st.integers(0, ndim - 1)))
    if kind == "broadcast":
        return ("broadcast", draw(_broadcast_source(values.shape)))
    return (kind,)


@st.composite
def _broadcast_source(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[int, ...]:
    ones = draw(st.lists(st.booleans(), min_size=len(shape), max_size=len(shape)))
    return tuple(1 if one else n for n, one in zip(shape, ones, strict=True))


def _apply_layout_values(values: np.ndarray, layout: tuple[Any, ...]) -> np.ndarray:
    """Make ``values`` constant along the axes a broadcast layout stretches."""
    if layout[0] != "broadcast":
        return values
    small = values[tuple(slice(0, n) for n in layout[1])]
    return np.array(np.broadcast_to(small, values.shape))


@st.composite
def cases(
    draw: st.DrawFn,
    adapter: ArrayAdapter,
    dtypes: list[tuple[str, str]],
    *,
    finite: bool = False,
    gradient: bool = False,
    reductions: tuple[str, ...] = REDUCTIONS,
    allow_broadcast: bool = True,
    probe: bool = False,
    positive_weight_sums: bool = False,
) -> Case:
    """Draw a :class:`Case`.

    Parameters
    ----------
    draw : callable
        Hypothesis's draw function (supplied by ``st.composite``).
    adapter : ArrayAdapter
        The library the arrays are built in (its layouts and ``max_size`` apply).
    dtypes : list of (str, str)
        The (input, target) dtype pairs to draw from.
    finite : bool
        Only finite values (no NaN or inf).
    gradient : bool
        Also draw a ``grad_output``.
    reductions : tuple of str
        Reductions to draw from.
    allow_broadcast : bool
        Whether ``broadcast=True`` cases with different shapes may be drawn.
    probe : bool
        Also draw a second point for the convexity check.
    positive_weight_sums : bool
        Reject weighted "mean" cases where a reduced group's weights sum to zero
        (its gradient is 0/0).
    """
    same = [pair for pair in dtypes if pair[0] == pair[1]]
    mixed = [pair for pair in dtypes if pair[0] != pair[1]]
    # Half the draws use one dtype: the many mixed pairs must not crowd it out.
    input_dtype, target_dtype = draw(
        st.one_of([st.sampled_from(group) for group in (same, mixed) if group])
    )
    shape = draw(_shapes(adapter.max_size))
    broadcast = allow_broadcast and draw(st.booleans())
    input_shape = target_shape = shape
    if broadcast:
        input_shape = _smaller_shape(draw, shape) if draw(st.booleans()) else shape
        target_shape = _smaller_shape(draw, shape) if draw(st.booleans()) else shape
        # The loss shape is the broadcast of both, which may be smaller than ``shape``.
        shape = np.broadcast_shapes(input_shape, target_shape)

    reduction = draw(st.sampled_from(reductions))
    axis = None
    if reduction != "none" and shape and draw(st.booleans()):
        ndim = len(shape)
        chosen = draw(st.lists(st.integers(0, ndim - 1), unique=True, max_size=ndim))
        signed = [a - ndim if draw(st.booleans()) else a for a in chosen]
        axis = signed[0] if len(signed) == 1 and draw(st.booleans()) else tuple(signed)

    subnormals = adapter.subnormals
    # Half the cases are finite throughout, so that one NaN does not hide every rounding error.
    finite = finite or draw(st.booleans())
    input_values = draw(_values(input_dtype, input_shape, finite, subnormals))
    target_values = draw(_values(target_dtype, target_shape, finite, subnormals))
    if (
        input_shape == target_shape
        and input_values.size
        and np.can_cast(input_dtype, target_dtype, "same_kind")
    ):
        # Ties, including +0 against -0: copy input values that the target dtype holds exactly.
        ties = draw(hnp.arrays(bool, input_shape))
        with np.errstate(all="ignore"):
            converted = input_values.astype(target_dtype)
            exact = converted == input_values
        target_values = np.where(ties & exact, converted, target_values).astype(target_dtype)

    weight = None
    result_dtype = real_dtype(promote_dtypes(input_dtype, target_dtype))
    if draw(st.booleans()):
        weight_shape = _smaller_shape(draw, shape) if draw(st.booleans()) else shape
        weight_dtypes = [result_dtype, "float16", "int16"]
        weight_dtype = draw(
            st.sampled_from([d for d in weight_dtypes if d not in adapter.unsupported_dtypes])
        )
        weight = draw(_weights(weight_dtype, weight_shape, adapter.subnormals))

    layouts = {}
    for role, values in (("input", input_values), ("target", target_values), ("weight", weight)):
        if values is None:
            continue
        layouts[role] = _layout(draw, adapter, values)
    input_values = _apply_layout_values(input_values, layouts["input"])
    target_values = _apply_layout_values(target_values, layouts["target"])
    if weight is not None:
        weight = _apply_layout_values(weight, layouts["weight"])

    case = Case(
        input=input_values,
        target=target_values,
        reduction=reduction,
        weight=weight,
        axis=axis,
        broadcast=broadcast,
        layouts=layouts,
        read_only=draw(st.booleans()),
    )
    plan = case.plan()
    if gradient:
        case.grad_output = draw(_grad_outputs(plan, subnormals))
    if probe:
        case.probe = draw(_values(input_dtype, input_shape, True, subnormals))
    if positive_weight_sums and weight is not None and reduction == "mean":
        sums = np.broadcast_to(weight.astype("float64"), plan.shape).sum(axis=plan.reduced_axes)
        assume(bool(np.all(sums > 0)))
    return case


def _weights(
    dtype: str, shape: tuple[int, ...], subnormals: bool = True
) -> st.SearchStrategy[np.ndarray]:
    """Non-negative weights: 0, or between 2**-20 (at least the smallest normal) and 2**10.

    Tinier weights would make w·|d| subnormal in float64, where no backend that
    multiplies in float64 can keep the declared accuracy: the suite does not ask it to.
    """
    if dtype in INTEGER_DTYPES:
        return hnp.arrays(dtype, shape, elements=st.integers(0, 100), fill=st.nothing())
    if subnormals:
        floor = max(_MIN_WEIGHT, float(np.finfo(dtype).tiny))
        elements = st.one_of(
            st.floats(floor, _MAX_WEIGHT, width=_WIDTH[dtype]),
            st.sampled_from([0.0, 1.0, floor]),
        )
    else:
        elements = st.sampled_from([0.0, 0.0625, 0.75, 1.0, 3.0, 1000.0])
    return hnp.arrays(dtype, shape, elements=elements, fill=st.nothing())


def _grad_outputs(plan: Plan, subnormals: bool = True) -> st.SearchStrategy[Any]:
    """None, a Python float, a 0-d array or an array of the loss's shape, of the result dtype."""
    dtype = plan.result_dtype
    elements = st.floats(-_MAX_GRAD_OUTPUT, _MAX_GRAD_OUTPUT, width=_WIDTH[dtype])
    if not subnormals:
        elements = st.sampled_from([0.0, -0.5, 0.75, 1.0, 3.0, -1000.0])
    options = [
        st.none(),
        elements,
        hnp.arrays(dtype, (), elements=elements),
        hnp.arrays(dtype, plan.out_shape, elements=elements),
    ]
    return st.one_of(options)
