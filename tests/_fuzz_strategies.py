"""Hypothesis strategies of the fuzzer: valid calls of every shape kind, and calls built to fail.

Shape kinds: ``small`` (0-d, empty and up to 4-d), ``unit-axes`` (20 to 40
dimensions, nearly all of length 1), ``many-axes`` (at least 20 axes of length 2
or 3: a million elements and more) and ``large`` (up to 2**20 elements, across
the serial/parallel threshold and the row-chunking sizes).  The last two hold
dyadic values, whose exact results float64 holds (see ``_fuzz_exact``).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
from _fuzz_arrays import CONTAINERS, Recipe, constant_along
from _fuzz_cases import FUNCTIONS, UNSET, FuzzCase, Operand, dyadic_operand, promoted
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from l1backends.semantics import INTEGER_DTYPES, make_plan

__all__ = ["error_cases", "valid_cases"]

SUPPORTED = ("float16", "float32", "float64", "complex64", "complex128")
REAL = ("float16", "float32", "float64")
SMALL_SIZE = 64
_WEIGHT_RANGE = (2.0**-20, 2.0**10)
_GRAD_RANGE = 2.0**10


# ----- values ------------------------------------------------------------------------------------


def _specials(dtype: str, finite: bool) -> list[float]:
    """Every special value of ``dtype``, float16's extremes among them, as floats it holds."""
    info = np.finfo(dtype)
    candidates = [
        0.0, -0.0, 1.0, -1.5, 65504.0, -65504.0, 6e-8, -6e-8, 65519.0,
        float(info.max), -float(info.max), float(info.tiny), -float(info.tiny),
        float(info.smallest_subnormal), -float(info.smallest_subnormal),
    ]  # fmt: skip
    if not finite:
        candidates += [math.nan, math.inf, -math.inf]
    with np.errstate(all="ignore"):
        held = [float(np.asarray(v).astype(dtype)) for v in candidates]
    return [v for v in held if not finite or math.isfinite(v)]


def _full_mantissas(dtype: str) -> st.SearchStrategy[float]:
    """Random full mantissas near 1: the values whose sums expose every rounding error."""
    bits = {"float16": 10, "float32": 23, "float64": 52}[dtype]
    return st.builds(
        lambda negative, mantissa, exponent: (
            (-1) ** negative * math.ldexp(1 + mantissa / 2**bits, exponent)
        ),
        st.booleans(),
        st.integers(0, 2**bits - 1),
        st.integers(-8, 8),
    )


def _float_elements(dtype: str, finite: bool, extremes: bool) -> st.SearchStrategy[float]:
    specials = st.sampled_from(_specials(dtype, finite))
    if extremes:
        return specials
    width = {"float16": 16, "float32": 32, "float64": 64}[dtype]
    floats = st.floats(allow_nan=not finite, allow_infinity=not finite, width=width)
    choices = [specials, specials, _full_mantissas(dtype), floats]  # specials: half
    if not finite:
        choices.append(st.sampled_from([math.nan, math.inf, -math.inf]))
    return st.one_of(choices)


def _elements(dtype: str, finite: bool, extremes: bool = False) -> st.SearchStrategy[Any]:
    """Elements of ``dtype``: special values and random ones, or (``extremes``) specials only."""
    if dtype in INTEGER_DTYPES:
        info = np.iinfo(dtype)
        limits = [int(info.min), int(info.max), 0, 1, int(info.max) - 1, int(info.min) + 1]
        if info.min < 0:
            limits.append(-1)
        if extremes:
            return st.sampled_from(limits)
        return st.one_of(st.sampled_from(limits), st.integers(int(info.min), int(info.max)))
    if dtype.startswith("complex"):
        real = {"complex64": "float32", "complex128": "float64"}[dtype]
        part = _float_elements(real, finite, extremes)
        return st.builds(complex, part, part)
    return _float_elements(dtype, finite, extremes)


def _small_values(draw: st.DrawFn, dtype: str, shape: tuple[int, ...], finite: bool) -> np.ndarray:
    """Arrays of random and special values; a third of them hold special values only."""
    extremes = draw(st.sampled_from([False, False, True]))
    elements = _elements(dtype, finite, extremes)
    return draw(hnp.arrays(dtype, shape, elements=elements, fill=st.nothing()))


# ----- shapes ------------------------------------------------------------------------------------


def _small_shape(draw: st.DrawFn) -> tuple[int, ...]:
    kind = draw(st.sampled_from(["0-d", "empty", "small", "small", "small"]))
    if kind == "0-d":
        return ()
    dims = hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5)
    if kind == "empty":
        return draw(dims.filter(lambda s: 0 in s))
    return draw(dims.filter(lambda s: 0 not in s and math.prod(s) <= SMALL_SIZE))


def _with_unit_axes(draw: st.DrawFn, core: list[int], ndim: int) -> tuple[int, ...]:
    """``core``'s axes in order, with unit axes inserted at drawn places up to ``ndim`` axes."""
    shape = list(core)
    for _ in range(ndim - len(core)):
        shape.insert(draw(st.integers(0, len(shape))), 1)
    return tuple(shape)


def _shape(draw: st.DrawFn, kind: str) -> tuple[int, ...]:
    if kind == "small":
        return _small_shape(draw)
    if kind == "unit-axes":
        core = draw(st.lists(st.integers(0, 3), max_size=3).filter(lambda c: math.prod(c) <= 27))
        return _with_unit_axes(draw, core, draw(st.integers(20, 40)))
    if kind == "many-axes":
        core = [2] * 19 + [draw(st.sampled_from([2, 3]))]
        order = draw(st.permutations(core))
        return _with_unit_axes(draw, list(order), draw(st.integers(len(core), 32)))
    ndim = draw(st.integers(1, 3))
    total = draw(st.integers(2**15, 2**19))
    sides = [draw(st.integers(1, 64)) for _ in range(ndim - 1)]
    return (*sides, max(1, total // math.prod(sides)))


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """The broadcast of two compatible shapes (``np.broadcast_shapes`` stops at 32 axes)."""
    a, b = (1,) * (len(b) - len(a)) + a, (1,) * (len(a) - len(b)) + b
    return tuple(m if n == 1 else n for n, m in zip(a, b, strict=True))


def _smaller(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A shape that broadcasts to ``shape``: leading axes dropped, some axes set to 1."""
    kept = shape[draw(st.integers(0, len(shape))) :]
    ones = draw(st.lists(st.booleans(), min_size=len(kept), max_size=len(kept)))
    return tuple(1 if one else n for n, one in zip(kept, ones, strict=True))


# ----- layouts -----------------------------------------------------------------------------------


def _recipe(draw: st.DrawFn, shape: tuple[int, ...], dtype: np.dtype, large: bool) -> Recipe:
    ndim = len(shape)
    steps = draw(
        st.lists(st.sampled_from([1, 1, 1, 1, 2, 3, -1, -1, -2, 0]), min_size=ndim, max_size=ndim)
    )
    # The parent buffer holds prod(|steps|) times the values: keep it a few times at most.
    budget = 4 if large else 8
    for axis in range(ndim):
        if math.prod(abs(s) for s in steps if s) > budget:
            steps[axis] = 1 if steps[axis] > 0 else -1
    order_kind = draw(st.sampled_from(["C", "C", "F", "permuted"]))
    order = tuple(range(ndim))
    if order_kind == "F":
        order = order[::-1]
    elif order_kind == "permuted":
        order = tuple(draw(st.permutations(range(ndim))))
    wrappers = ["none", "none", "none", "subclass", "hostile"] + ["matrix"] * (ndim == 2)
    return Recipe(
        steps=tuple(steps),
        order=order,
        swapped=dtype.itemsize > 1 and draw(st.booleans()),
        offset=draw(st.sampled_from([0, 0, 1, 3, 7, dtype.itemsize, dtype.itemsize + 1])),
        container=draw(st.sampled_from(CONTAINERS)),
        wrapper=draw(st.sampled_from(wrappers)),
        read_only=draw(st.booleans()),
    )


def _laid_out(draw: st.DrawFn, operand: Operand, large: bool) -> Operand:
    recipe = _recipe(draw, operand.values.shape, operand.values.dtype, large)
    return replace(operand, values=constant_along(operand.values, recipe.steps), recipe=recipe)


# ----- options -----------------------------------------------------------------------------------


def _axis(draw: st.DrawFn, ndim: int) -> Any:
    if ndim == 0 or draw(st.booleans()):
        return draw(st.sampled_from([UNSET, None]))
    chosen = draw(st.lists(st.integers(0, ndim - 1), unique=True, max_size=min(ndim, 6)))
    signed = [a - ndim if draw(st.booleans()) else a for a in chosen]
    form = draw(st.sampled_from(["tuple", "list", "int", "numpy"]))
    if form in ("int", "numpy") and signed:
        return np.int64(signed[0]) if form == "numpy" else signed[0]
    return list(signed) if form == "list" else tuple(signed)


def _weight(
    draw: st.DrawFn, shape: tuple[int, ...], result: str, large: bool, seed: int
) -> Operand:
    weight_shape = _smaller(draw, shape) if draw(st.booleans()) else shape
    dtype = draw(
        st.sampled_from([result, result, "float16", "float32", "float64", "int16", "uint8"])
    )
    if large:
        return dyadic_operand(seed, weight_shape, dtype, False, nonnegative=True)
    if dtype in INTEGER_DTYPES:
        elements: st.SearchStrategy[Any] = st.integers(0, 100)
    else:
        floor = max(_WEIGHT_RANGE[0], float(np.finfo(dtype).tiny), float(np.finfo(result).tiny))
        width = np.dtype(dtype).itemsize * 8
        elements = st.one_of(
            st.floats(floor, _WEIGHT_RANGE[1], width=width),
            st.sampled_from([0.0, 1.0, floor, _WEIGHT_RANGE[1], math.nan, math.inf]),
        )
    values = draw(hnp.arrays(dtype, weight_shape, elements=elements, fill=st.nothing()))
    return Operand(values)


def _grad_output(
    draw: st.DrawFn, out_shape: tuple[int, ...], result: str, weighted: bool, large: bool, seed: int
) -> Any:
    kind = draw(st.sampled_from(["none", "float", "int", "numpy", "0-d", "array", "array"]))
    if large:
        specials = [0.0, -0.0, math.nan, math.inf, -2.5, 0.25]
        finite = st.sampled_from(specials[:1] + specials[4:])
        floats = st.one_of(st.sampled_from(specials), finite)
    else:
        finite = st.floats(-_GRAD_RANGE, _GRAD_RANGE, width=32)
        specials = [0.0, -0.0, math.nan, 1.0, -2.5]
        if not weighted:  # huge values times a weight could overflow float64 inside a backend
            specials += [math.inf, -math.inf, 65504.0, 6e-8, 1e30, -1e300]
        floats = st.one_of(st.sampled_from(specials), finite)
    if kind == "none":
        return None
    if kind == "float":
        return draw(floats)
    if kind == "int":
        huge = [2**53 + 1, 2**54 + 2**30 + 1, 2**64 + 1, -(2**70), 10**400, -(10**400)]
        return draw(st.sampled_from([0, 1, -3, 7, *([] if weighted else huge)]))
    dtype = draw(st.sampled_from([result, "float16", "float32", "float64", "int32", "uint8"]))
    if kind == "numpy":
        if dtype in INTEGER_DTYPES:
            info = np.iinfo(dtype)
            value = draw(st.sampled_from([0, 3, int(info.max) if not weighted else 2]))
            return np.dtype(dtype).type(value)
        with np.errstate(all="ignore"):
            return np.dtype(dtype).type(draw(floats))
    shape = () if kind == "0-d" or not out_shape else out_shape
    if large and shape:
        operand = dyadic_operand(seed, shape, dtype, True)
    else:
        elements = st.integers(0, 9) if dtype in INTEGER_DTYPES else floats
        with np.errstate(all="ignore"):
            values = draw(hnp.arrays(dtype, shape, elements=elements, fill=st.nothing()))
        operand = Operand(values)
    return _laid_out(draw, operand, large)


# ----- cases -------------------------------------------------------------------------------------


@st.composite
def valid_cases(draw: st.DrawFn, kind: str) -> FuzzCase:
    """A call that must return the exact result within the declared ulps."""
    large = kind in ("many-axes", "large")
    function = draw(st.sampled_from(FUNCTIONS))
    floats = REAL if large else SUPPORTED
    if draw(st.booleans()):
        input_dtype = target_dtype = draw(st.sampled_from(floats))
    else:
        input_dtype = draw(st.sampled_from(floats + INTEGER_DTYPES))
        target_dtype = draw(st.sampled_from(floats + INTEGER_DTYPES))
    _, result = promoted(input_dtype, target_dtype)

    shape = _shape(draw, kind)
    broadcast = draw(st.sampled_from([UNSET, False, True]))
    input_shape = target_shape = shape
    if broadcast is True:
        input_shape = _smaller(draw, shape) if draw(st.booleans()) else shape
        target_shape = _smaller(draw, shape) if draw(st.booleans()) else shape
        shape = _broadcast(input_shape, target_shape)
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    axis = UNSET if reduction == "none" else _axis(draw, len(shape))
    plan = make_plan(shape, "float32", shape, "float32", reduction, axis=_tuple(axis))
    weighted = draw(st.booleans())
    if large and reduction == "mean" and (weighted or plan.count & (plan.count - 1)):
        reduction = "sum"  # keeps every exact result a float64 (see _fuzz_exact)
    seeds = iter(draw(st.lists(st.integers(0, 2**32 - 1), min_size=5, max_size=5)))
    weight = _weight(draw, shape, result, large, next(seeds)) if weighted else None
    grad_output = None
    if function != "l1_loss":
        grad_output = _grad_output(draw, plan.out_shape, result, weighted, large, next(seeds))

    if large:
        specials = draw(st.booleans())
        x = dyadic_operand(next(seeds), input_shape, input_dtype, specials)
        y = dyadic_operand(next(seeds), target_shape, target_dtype, specials)
    else:
        finite = draw(st.booleans())  # half the cases: no NaN hides a rounding error
        x = Operand(_small_values(draw, input_dtype, input_shape, finite))
        y = Operand(_small_values(draw, target_dtype, target_shape, finite))
        castable = np.can_cast(input_dtype, target_dtype, "same_kind")
        if input_shape == target_shape and x.values.size and castable and draw(st.booleans()):
            x, y = _with_ties(draw, x, y)
    return FuzzCase(
        function=function,
        input=_laid_out(draw, x, large),
        target=_laid_out(draw, y, large),
        reduction=reduction,
        weight=None if weight is None else _laid_out(draw, weight, large),
        axis=axis,
        broadcast=broadcast,
        grad_output=grad_output,
        large=large,
    )


def _tuple(axis: Any) -> Any:
    if axis is UNSET:
        return None
    return tuple(axis) if isinstance(axis, list) else axis


def _with_ties(draw: st.DrawFn, x: Operand, y: Operand) -> tuple[Operand, Operand]:
    """Copy input values into the target where its dtype holds them: ties, +0 against -0."""
    ties = draw(hnp.arrays(bool, x.values.shape))
    with np.errstate(all="ignore"):
        converted = x.values.astype(y.values.dtype)
        held = converted == x.values
    return x, Operand(np.where(ties & held, converted, y.values).astype(y.values.dtype))


_UNSUPPORTED = ("bool", "<U2", "object", "longdouble", "clongdouble")


def _unsupported(draw: st.DrawFn, shape: tuple[int, ...]) -> Operand:
    dtype = draw(st.sampled_from(_UNSUPPORTED))
    if dtype == "bool":
        values = draw(hnp.arrays(bool, shape))
    elif dtype == "<U2":
        values = np.full(shape, "ab")
    else:
        values = np.full(shape, 1.5).astype(dtype)
    return _laid_out(draw, Operand(values), False) if dtype != "object" else Operand(values)


def _incompatible(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """A shape that does not broadcast with ``shape`` at all, or None if every axis is 1."""
    candidates = [i for i, n in enumerate(shape) if n != 1]
    if not candidates:
        return None
    axis = draw(st.sampled_from(candidates))
    return (*shape[:axis], shape[axis] + 1 if shape[axis] else 2, *shape[axis + 1 :])


def _changed(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A shape that does not broadcast to ``shape``: incompatible, or broadcasting wider."""
    incompatible = _incompatible(draw, shape)
    if incompatible is not None and draw(st.booleans()):
        return incompatible
    return (2, *shape) if draw(st.booleans()) else (*shape, 2)


@st.composite
def error_cases(draw: st.DrawFn) -> FuzzCase:
    """A valid small call with one defect that the README documents an error type for."""
    case = draw(valid_cases(draw(st.sampled_from(["small", "unit-axes"]))))
    plan = case.plan()
    defects = ["masked", "dtype", "weight-dtype", "shape", "axis", "weight-shape", "reduction"]
    defects += ["broadcast-type"] + ["grad-dtype", "grad-shape"] * (case.function != "l1_loss")
    defect = draw(st.sampled_from(defects))
    if defect == "masked":
        role = draw(st.sampled_from(sorted(case.operands())))
        operand = case.operands()[role]
        masked = replace(operand.recipe, wrapper="masked", mask_seed=draw(st.integers(0, 99)))
        changed = replace(operand, recipe=masked)
        if role == "grad_output":
            return replace(case, grad_output=changed, error=TypeError, error_from_layout=True)
        return replace(case, **{role: changed}, error=TypeError, error_from_layout=True)
    if defect == "dtype":
        role = draw(st.sampled_from(["input", "target"]))
        bad = _unsupported(draw, getattr(case, role).values.shape)
        return replace(case, **{role: bad}, error=TypeError)
    if defect == "weight-dtype":
        dtype = draw(st.sampled_from(["complex64", "complex128", "bool"]))
        values = np.ones(plan.shape, dtype=dtype)
        return replace(case, weight=_laid_out(draw, Operand(values), False), error=TypeError)
    if defect == "grad-dtype":
        bad = draw(st.sampled_from(["complex", "numpy-complex", "bool", "numpy-bool", "array"]))
        value: Any = {
            "complex": 1 + 2j, "numpy-complex": np.complex64(1 - 1j),
            "bool": True, "numpy-bool": np.True_,
        }.get(bad)  # fmt: skip
        if bad == "array":
            dtype = draw(st.sampled_from(["complex64", "complex128", "bool"]))
            value = _laid_out(draw, Operand(np.ones(plan.out_shape, dtype)), False)
        return replace(case, grad_output=value, error=TypeError)
    if defect == "shape":
        shape = case.input.values.shape
        incompatible = _incompatible(draw, shape)
        if incompatible is not None and draw(st.booleans()):
            broadcast = draw(st.sampled_from([UNSET, False, True]))
            target_shape = incompatible
        else:  # without broadcast=True even a broadcastable shape is refused
            broadcast = draw(st.sampled_from([UNSET, False]))
            target_shape = _smaller(draw, shape) + (1,) * draw(st.integers(0, 1))
            if target_shape == shape:
                target_shape = (*shape, 1)
        target = _laid_out(draw, Operand(np.zeros(target_shape)), False)
        return replace(case, target=target, broadcast=broadcast, error=ValueError)
    if defect == "axis":
        ndim = len(plan.shape)
        if case.reduction == "none" or ndim == 0:
            return replace(case, axis=draw(st.sampled_from([0, -1, (0,)])), error=ValueError)
        axis = draw(st.integers(0, ndim - 1))
        bad_axis = draw(st.sampled_from([ndim, -ndim - 1, (axis, axis - ndim), (axis, axis)]))
        return replace(case, axis=bad_axis, error=ValueError)
    if defect == "weight-shape":
        values = np.ones(_changed(draw, plan.shape))
        return replace(case, weight=Operand(values), error=ValueError)
    if defect == "grad-shape":
        shape = _changed(draw, plan.out_shape) if plan.out_shape else (1,)
        return replace(case, grad_output=Operand(np.ones(shape)), error=ValueError)
    if defect == "reduction":
        bad_reduction = draw(st.sampled_from(["avg", "MEAN", "", None, ["mean"], 1, b"mean"]))
        return replace(case, reduction=bad_reduction, error=ValueError)
    bad_broadcast = draw(st.sampled_from(["no", 1, 0, None, "True"]))
    return replace(case, broadcast=bad_broadcast, error=TypeError)
