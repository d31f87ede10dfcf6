"""The suite's checks: each runs one drawn call against a backend and raises on a violation.

Every check takes a :class:`Target` (backend name, array adapter, declared
capabilities) and a :class:`~l1backends.conformance.strategies.Case`, forces
the backend by name, and raises ``AssertionError`` whose message ends in a
one-line reproduction.  :func:`run_property` drives a check with the suite's
hypothesis strategies; the tests and the meta-tests both use it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
from hypothesis import Phase, assume, given, note, reject, settings
from hypothesis import strategies as st

from .. import api
from .._typing import Array
from ..registry import Capabilities
from ..semantics import dtype_name, promote_dtypes, real_dtype
from .adapters import ArrayAdapter
from .reference import Ext, distance_in_ulps, exact_grad, exact_loss, exponent_of, to_exact, ulp
from .strategies import Case, cases, dtype_pairs

__all__ = [
    "PROPERTIES",
    "Target",
    "check_autodiff",
    "check_convexity",
    "check_finite_differences",
    "check_grad",
    "check_loss",
    "check_loss_and_grad",
    "check_ties",
    "run_property",
    "same_bits",
]


@dataclass(frozen=True)
class Target:
    """What the suite runs against: a backend forced by name, fed arrays by one adapter.

    Attributes
    ----------
    backend : str
        The registered backend's name.
    adapter : ArrayAdapter
        Builds the arrays the backend receives.
    capabilities : Capabilities
        What the backend declares (dtypes, ulp bounds, determinism).
    """

    backend: str
    adapter: ArrayAdapter
    capabilities: Capabilities

    @property
    def id(self) -> str:
        return f"{self.backend}/{self.adapter.name}"


class _Call:
    """Builds a case's arrays once per call and runs one public function on them."""

    def __init__(self, target: Target, case: Case, function: str, *, swapped: bool = False):
        self.target, self.case, self.function, self.swapped = target, case, function, swapped
        adapter = target.adapter
        self.input = case.build(adapter, "input")
        self.target_array = case.build(adapter, "target")
        self.options = case.kwargs(adapter, gradient=function != "l1_loss")

    @property
    def label(self) -> str:
        return self.function + ("(target)" if self.swapped else "")

    def fail(self, message: str) -> AssertionError:
        repro = self.case.repro(self.target.backend, self.target.adapter, self.label)
        return AssertionError(f"[{self.target.id}] {self.label}: {message}\n    reproduce: {repro}")

    def run(self, **overrides: Any) -> Any:
        first, second = (
            (self.target_array, self.input) if self.swapped else (self.input, self.target_array)
        )
        first = overrides.pop("input", first)
        options = {**self.options, **overrides}
        try:
            with warnings.catch_warnings():
                # "mean of empty slice", "invalid value in ...": the spec promises no warning.
                warnings.simplefilter("error", RuntimeWarning)
                return getattr(api, self.function)(
                    first, second, self.case.reduction, backend=self.target.backend, **options
                )
        except Exception as error:
            raise self.fail(f"raised {type(error).__name__}: {error}") from error

    def check_output(self, out: Array, shape: tuple[int, ...], dtype: str, what: str) -> None:
        problem = self.target.adapter.check_native(out, self.input)
        if problem is not None:
            raise self.fail(f"{what} is not in the inputs' namespace/device: {problem}")
        got_shape = tuple(out.shape)
        if got_shape != shape:
            raise self.fail(f"{what} has shape {got_shape}, expected {shape}")
        got_dtype = dtype_name(out.dtype)
        if got_dtype != dtype:
            raise self.fail(f"{what} has dtype {got_dtype}, expected {dtype}")

    def check_unchanged(self) -> None:
        adapter = self.target.adapter
        for role, array, values in (
            ("input", self.input, self.case.input),
            ("target", self.target_array, self.case.target),
        ):
            if not same_bits(adapter.to_numpy(array), values, nan_equal=False):
                raise self.fail(f"the {role} array was modified")
        weight, weights = self.options.get("weight"), self.case.weight
        if (
            weight is not None
            and weights is not None
            and not same_bits(adapter.to_numpy(weight), weights, nan_equal=False)
        ):
            raise self.fail("the weight array was modified")

    def check_fresh(self, out: Array, what: str) -> None:
        adapter = self.target.adapter
        for role, array in (
            ("input", self.input),
            ("target", self.target_array),
            ("weight", self.options.get("weight")),
        ):
            if array is not None and adapter.shares_memory(out, array):
                raise self.fail(f"{what} shares memory with the {role}: it must be a fresh array")


def same_bits(a: np.ndarray, b: np.ndarray, *, nan_equal: bool = True) -> bool:
    """Whether two arrays hold the same bits (any NaN matching any NaN when ``nan_equal``)."""
    # Values, whatever byte order holds them.
    a, b = (np.asarray(v).astype(np.asarray(v).dtype.newbyteorder("=")) for v in (a, b))
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    a, b = np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(b).reshape(-1)
    if a.dtype.kind == "c":
        a, b = a.view(a.real.dtype), b.view(b.real.dtype)
    if a.dtype.kind != "f":
        return a.tobytes() == b.tobytes()
    bits_equal = a.view(f"u{a.itemsize}") == b.view(f"u{b.itemsize}")
    if nan_equal:
        bits_equal |= np.isnan(a) & np.isnan(b)
    return bool(np.all(bits_equal))


def _bound(target: Target, dtype: str) -> float:
    return float(target.capabilities.ulps[dtype])


def _compare(
    call: _Call,
    got: np.ndarray,
    expected: Sequence[tuple[tuple[Ext, ...], Ext | None]],
    dtype: str,
    bound: float,
    what: str,
) -> None:
    """Fail if any element of ``got`` is farther than ``bound`` ulps from the exact value."""
    flat = got.ravel()
    worst = (-1.0, -1)
    for index, (components, magnitude) in enumerate(expected):
        value = flat[index]
        parts = (value.real, value.imag) if len(components) == 2 else (value,)
        distance = max(
            distance_in_ulps(part, exact, dtype, magnitude)
            for part, exact in zip(parts, components, strict=True)
        )
        if distance > worst[0]:
            worst = (distance, index)
    distance, index = worst
    if distance > bound:
        position = np.unravel_index(index, got.shape) if got.ndim else ()
        components = expected[index][0]
        exact = ", ".join(_show(c) for c in components)
        raise call.fail(
            f"{what}[{', '.join(map(str, position))}] = {flat[index]!r}, but the exact value is "
            f"{exact}: {distance:.4g} ulp of {dtype}, more than the declared {bound}"
        )


def _show(value: Ext) -> str:
    if isinstance(value, float):
        return repr(value)
    return f"{float(value)!r}" if abs(value) < 2**1023 else f"2**{math.log2(value):.6g}"


# ----- the checks ----------------------------------------------------------------------------


def check_loss(target: Target, case: Case) -> None:
    """The loss: namespace, device, shape, dtype, values within the declared ulps, freshness.

    Also: inputs unchanged, no RuntimeWarning (mean of empty is NaN silently), and
    for "none" a fresh array sharing memory neither with the inputs nor with the
    result of an identical second call.
    """
    call = _Call(target, case, "l1_loss")
    plan = case.plan()
    out = call.run()
    call.check_output(out, plan.out_shape, plan.result_dtype, "loss")
    got = target.adapter.to_numpy(out)
    expected = [
        ((value,), None) for value in exact_loss(plan, case.input, case.target, case.weight)
    ]
    _compare(call, got, expected, plan.result_dtype, _bound(target, plan.compute_dtype), "loss")
    call.check_unchanged()
    if case.reduction == "none":
        call.check_fresh(out, "the 'none' loss")
        again = call.run()
        if target.adapter.shares_memory(out, again):
            raise call.fail("two 'none' calls returned arrays that share memory")


def check_grad(target: Target, case: Case, *, wrt: str = "input") -> None:
    """The subgradient by its definition (exact reference), for ``wrt`` "input" or "target".

    The gradient with respect to target is ``l1_loss_grad(target, input, ...)``;
    when input and target have the same shape it must be exactly the negative of
    the input gradient.
    """
    swapped = wrt == "target"
    call = _Call(target, case, "l1_loss_grad", swapped=swapped)
    plan = case.plan(swapped=swapped, grad_output=case.grad_output)
    first, second = (case.target, case.input) if swapped else (case.input, case.target)
    out = call.run()
    call.check_output(out, plan.input_shape, plan.compute_dtype, f"gradient wrt {wrt}")
    got = target.adapter.to_numpy(out)
    expected = exact_grad(plan, first, second, case.weight, case.grad_output)
    bound = _bound(target, plan.compute_dtype)
    _compare(call, got, expected, plan.result_dtype, bound, f"gradient wrt {wrt}")
    call.check_unchanged()
    call.check_fresh(out, f"the gradient wrt {wrt}")
    if swapped and case.input.shape == case.target.shape:
        forward = _Call(target, case, "l1_loss_grad").run()
        negated = -target.adapter.to_numpy(forward)
        # Values, not bits: the sign of a tie's zero is not specified.
        if not np.array_equal(got, negated, equal_nan=True):
            raise call.fail("the gradient wrt target is not exactly minus the gradient wrt input")


def check_target_grad(target: Target, case: Case) -> None:
    """:func:`check_grad` with respect to the target."""
    check_grad(target, case, wrt="target")


def check_ties(target: Target, case: Case) -> None:
    """The subgradient is exactly 0 wherever input == target (after promotion), both ways."""
    plan = case.plan(grad_output=case.grad_output)
    if plan.input_shape != plan.target_shape:
        return
    with np.errstate(all="ignore"):
        x = case.input.astype(plan.compute_dtype)
        y = case.target.astype(plan.compute_dtype)
    ties = x == y
    if not ties.any():
        return
    expected = exact_grad(plan, case.input, case.target, case.weight, case.grad_output)
    # Where the scale itself is NaN (a weight sum of 0) the product is NaN, not a tie's 0.
    scale_defined = np.array(
        [not any(isinstance(c, float) for c in comps) for comps, _ in expected]
    ).reshape(plan.input_shape)
    for wrt in ("input", "target"):
        call = _Call(target, case, "l1_loss_grad", swapped=wrt == "target")
        got = target.adapter.to_numpy(call.run())
        wrong = ties & scale_defined & (got != 0)
        if wrong.any():
            index = tuple(int(i) for i in np.argwhere(wrong)[0])
            raise call.fail(
                f"gradient wrt {wrt}[{index}] = {got[index]!r} at a tie "
                f"(input == target == {x[index]!r}); it must be 0"
            )


def check_loss_and_grad(target: Target, case: Case) -> None:
    """``l1_loss_and_grad`` equals separate calls; repeated calls give the same bits.

    Bitwise when the backend declares itself deterministic, else within the
    declared ulps of each other.
    """
    call = _Call(target, case, "l1_loss_and_grad")
    plan = case.plan(grad_output=case.grad_output)
    both = call.run()
    if not (isinstance(both, tuple) and len(both) == 2):
        raise call.fail(f"returned {type(both).__name__}, expected a (loss, grad) tuple")
    loss, grad = both
    call.check_output(loss, plan.out_shape, plan.result_dtype, "loss")
    call.check_output(grad, plan.input_shape, plan.compute_dtype, "gradient")
    adapter = target.adapter
    separate_loss = adapter.to_numpy(_Call(target, case, "l1_loss").run())
    separate_grad = adapter.to_numpy(_Call(target, case, "l1_loss_grad").run())
    loss, grad = adapter.to_numpy(loss), adapter.to_numpy(grad)
    call.check_unchanged()
    if target.capabilities.deterministic:
        if not same_bits(loss, separate_loss):
            raise call.fail(f"loss {loss!r} differs from l1_loss's {separate_loss!r}")
        if not same_bits(grad, separate_grad):
            raise call.fail(f"gradient {grad!r} differs from l1_loss_grad's {separate_grad!r}")
        again_loss, again_grad = (adapter.to_numpy(a) for a in call.run())
        if not (same_bits(loss, again_loss) and same_bits(grad, again_grad)):
            raise call.fail(
                "the same call twice gave different bits although the backend declares "
                f"itself deterministic: {loss!r}, {grad!r} then {again_loss!r}, {again_grad!r}"
            )
        return
    bound = 2 * _bound(target, plan.compute_dtype)
    for name, one, other in (("loss", loss, separate_loss), ("gradient", grad, separate_grad)):
        expected: list[tuple[tuple[Ext, ...], Ext | None]] = [
            ((c,), None) for c in map(to_exact, other.ravel())
        ]
        if one.dtype.kind == "c":
            expected = [
                ((to_exact(v.real), to_exact(v.imag)), to_exact(abs(v))) for v in other.ravel()
            ]
        _compare(call, one, expected, plan.result_dtype, bound, f"{name} (vs separate call)")


def _objective(call: _Call, **overrides: Any) -> tuple[Fraction, Fraction] | None:
    """Σ of the loss (exact) and the sum of its elements' ulps; None if not finite."""
    out = call.target.adapter.to_numpy(call.run(**overrides)).ravel()
    if not np.all(np.isfinite(out)):
        return None
    dtype = call.case.plan().result_dtype
    total = sum((Fraction(float(v)) for v in out), Fraction(0))
    allowance = sum((ulp(Fraction(float(v)), dtype) for v in out), Fraction(0))
    return total, allowance


def check_convexity(target: Target, case: Case) -> None:
    """L(z) >= L(x) + <g, z - x> for the objective Σ loss, g its gradient at x, z random.

    The tolerance is the declared ulps of every loss value plus the declared ulps
    of every gradient element times |z - x|.
    """
    plan = case.plan()
    assert case.probe is not None, "the convexity strategy draws a probe point"
    loss_call = _Call(target, case, "l1_loss")
    at_x = _objective(loss_call)
    at_z = _objective(loss_call, input=target.adapter.from_numpy(case.probe))
    if at_x is None or at_z is None:
        reject()
    grad_call = _Call(target, case, "l1_loss_grad")
    g = target.adapter.to_numpy(grad_call.run(grad_output=None)).ravel()
    assume(bool(np.all(np.isfinite(g))))
    bound = Fraction(_bound(target, plan.compute_dtype))
    expected = exact_grad(plan, case.input, case.target, case.weight, None)
    with np.errstate(all="ignore"):
        x = case.input.astype(plan.compute_dtype).ravel()
        z = case.probe.astype(plan.compute_dtype).ravel()
    # Integers beyond the compute dtype's range convert to infinities: no inner product.
    assume(bool(np.isfinite(x).all() and np.isfinite(z).all()))
    inner = Fraction(0)
    allowance = (at_x[1] + at_z[1]) * bound
    for g_i, x_i, z_i, (_, magnitude) in zip(g, x, z, expected, strict=True):
        if plan.is_complex:
            re = Fraction(float(z_i.real)) - Fraction(float(x_i.real))
            im = Fraction(float(z_i.imag)) - Fraction(float(x_i.imag))
            inner += Fraction(float(g_i.real)) * re + Fraction(float(g_i.imag)) * im
            length = abs(re) + abs(im)
        else:
            difference = Fraction(float(z_i)) - Fraction(float(x_i))
            inner += Fraction(float(g_i)) * difference
            length = abs(difference)
        allowance += bound * ulp(magnitude, plan.result_dtype) * length
    slack = at_z[0] - (at_x[0] + inner)
    if slack < -allowance:
        raise grad_call.fail(
            f"the convexity inequality L(z) >= L(x) + <g, z - x> fails by {float(-slack):.6g} "
            f"(allowed {float(allowance):.3g}) for z = {case.probe.tolist()!r}"
        )


def check_finite_differences(target: Target, case: Case) -> None:
    """Away from ties, Σ loss changes by g_i * h when input element i moves by h.

    The step moves the element with the largest distance to its ties by a power
    of two at most half that distance, so no term's sign changes and the loss is
    exactly linear along the step: any mismatch beyond the declared ulps of the
    loss values and of g_i is a wrong gradient.
    """
    plan = case.plan()
    if plan.is_complex or case.input.dtype.name != plan.compute_dtype or not case.input.size:
        return
    with np.errstate(all="ignore"):
        x_full = np.broadcast_to(case.input, plan.shape).astype(plan.compute_dtype)
        y_full = np.broadcast_to(case.target.astype(plan.compute_dtype), plan.shape)
    # Integers beyond the compute dtype's range convert to infinities: no linear step there.
    assume(bool(np.isfinite(x_full).all() and np.isfinite(y_full).all()))
    source = np.broadcast_to(np.arange(case.input.size).reshape(case.input.shape), plan.shape)
    distances: dict[int, Fraction] = {}
    for i, a, b in zip(source.ravel(), x_full.ravel(), y_full.ravel(), strict=True):
        gap = abs(Fraction(float(a)) - Fraction(float(b)))
        distances[int(i)] = min(gap, distances.get(int(i), gap))
    candidates = [(gap, i) for i, gap in distances.items() if gap > 0]
    assume(candidates)
    gap, index = max(candidates)
    h = Fraction(2) ** exponent_of(gap / 2)
    dtype = case.input.dtype
    flat = case.input.ravel()
    with np.errstate(all="ignore"):
        plus = dtype.type(float(Fraction(float(flat[index])) + h))
        minus = dtype.type(float(Fraction(float(flat[index])) - h))
    assume(np.isfinite(plus) and np.isfinite(minus) and plus != minus)
    for moved in (plus, minus):
        for k in np.flatnonzero(source.ravel() == index):
            before = Fraction(float(x_full.ravel()[k])) - Fraction(float(y_full.ravel()[k]))
            after = Fraction(float(moved)) - Fraction(float(y_full.ravel()[k]))
            assume((before > 0) == (after > 0) and after != 0)
    loss_call = _Call(target, case, "l1_loss")
    at_plus = _objective(loss_call, input=target.adapter.from_numpy(_with(case.input, index, plus)))
    at_minus = _objective(
        loss_call, input=target.adapter.from_numpy(_with(case.input, index, minus))
    )
    if at_plus is None or at_minus is None:
        reject()
    grad_call = _Call(target, case, "l1_loss_grad")
    g = target.adapter.to_numpy(grad_call.run(grad_output=None)).ravel()[index]
    assume(bool(np.isfinite(g)))
    step = Fraction(float(plus)) - Fraction(float(minus))
    change = at_plus[0] - at_minus[0]
    predicted = Fraction(float(g)) * step
    bound = Fraction(_bound(target, plan.compute_dtype))
    magnitude = exact_grad(plan, case.input, case.target, case.weight, None)[index][1]
    allowance = bound * (at_plus[1] + at_minus[1] + ulp(magnitude, plan.result_dtype) * step)
    if abs(change - predicted) > allowance:
        position = np.unravel_index(index, case.input.shape) if case.input.ndim else ()
        raise grad_call.fail(
            f"finite difference at input{list(map(int, position))}: moving it from "
            f"{float(minus)!r} to {float(plus)!r} changes Σ loss by {float(change):.17g}, "
            f"but the gradient {float(g)!r} predicts {float(predicted):.17g}"
        )


def _with(values: np.ndarray, index: int, value: Any) -> np.ndarray:
    changed = np.array(values, copy=True, order="C")
    changed.reshape(-1)[index] = value
    return changed


def check_autodiff(target: Target, case: Case) -> None:
    """The library's own autodiff of ``l1_loss`` gives the loss and the spec's subgradient.

    Runs the adapter's ``autodiff`` hook (``torch.autograd``, ``jax.vjp``) with the
    case's ``grad_output`` as the cotangent, and holds the loss and the gradients with
    respect to input and target (each in its argument's dtype) to the exact references
    and the declared ulps: 0 at ties, NaN where an input is NaN.
    """
    adapter = target.adapter
    if target.backend not in adapter.autodiff_backends:
        return
    call = _Call(target, case, "l1_loss")
    g = case.grad_output
    options = {**call.options, "backend": target.backend, "grad_output": g}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            loss, gx, gy = adapter.autodiff(
                call.input, call.target_array, case.reduction, **options
            )
    except Exception as error:
        raise call.fail(f"autodiff raised {type(error).__name__}: {error}") from error
    plan = case.plan()
    expected = [((v,), None) for v in exact_loss(plan, case.input, case.target, case.weight)]
    bound = _bound(target, plan.compute_dtype)
    _compare(call, adapter.to_numpy(loss), expected, plan.result_dtype, bound, "autodiff loss")
    for wrt, got, swapped in (("input", gx, False), ("target", gy, True)):
        if got is None:
            continue
        first, second = (case.target, case.input) if swapped else (case.input, case.target)
        with_g = case.plan(swapped=swapped, grad_output=g)
        exact = exact_grad(with_g, first, second, case.weight, g)
        if with_g.is_complex and np.dtype(first.dtype).kind != "c":
            exact = [((components[0],), magnitude) for components, magnitude in exact]
        values = adapter.to_numpy(got)
        if values.shape != first.shape:
            raise call.fail(
                f"autodiff gradient wrt {wrt} has shape {values.shape}, not {first.shape}"
            )
        # The library returns the gradient in the argument's own dtype: judge it there.
        dtype = real_dtype(np.dtype(first.dtype).name)
        _compare(call, values, exact, dtype, bound, f"autodiff gradient wrt {wrt}")


@dataclass(frozen=True)
class Property:
    """A check and the options of the strategy that feeds it."""

    check: Callable[[Target, Case], None]
    options: dict[str, Any]


PROPERTIES: dict[str, Property] = {
    "loss": Property(check_loss, {}),
    "grad": Property(check_grad, {"gradient": True, "positive_weight_sums": True}),
    "target_grad": Property(check_target_grad, {"gradient": True, "positive_weight_sums": True}),
    "ties": Property(
        check_ties, {"gradient": True, "allow_broadcast": False, "positive_weight_sums": True}
    ),
    "loss_and_grad": Property(check_loss_and_grad, {"gradient": True}),
    "convexity": Property(check_convexity, {"finite": True, "probe": True}),
    "finite_differences": Property(check_finite_differences, {"finite": True}),
    "autodiff": Property(check_autodiff, {"gradient": True, "positive_weight_sums": True}),
}


def run_property(
    target: Target,
    name: str,
    dtype: str,
    *,
    max_examples: int | None = None,
    shrink: bool = True,
) -> None:
    """Run property ``name`` on ``target`` for inputs promoting to ``dtype``, under hypothesis.

    Parameters
    ----------
    target : Target
        The backend and adapter.
    name : str
        A key of :data:`PROPERTIES`.
    dtype : str
        The promoted dtype under test; it must be one the backend declares.
    max_examples : int, optional
        Overrides the active settings profile's number of examples (which is
        scaled by the adapter's ``example_factor``).
    shrink : bool
        Whether hypothesis shrinks a failing example to a minimal one.

    Raises
    ------
    AssertionError
        With a one-line reproduction, when the backend violates the property.
    """
    prop = PROPERTIES[name]
    unsupported = target.adapter.unsupported_dtypes
    pairs = [
        p for p in dtype_pairs(target.capabilities.dtypes, unsupported) if _promoted(p) == dtype
    ]
    strategy = cases(target.adapter, pairs, **prop.options)
    if max_examples is None:
        max_examples = max(2, round(settings().max_examples * target.adapter.example_factor))

    phases = tuple(p for p in settings().phases if shrink or p is not Phase.shrink)

    @settings(max_examples=max_examples, phases=phases, report_multiple_bugs=False)
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        case = data.draw(strategy, label="case")
        note(f"reproduce: {case.repro(target.backend, target.adapter, 'l1_loss')}")
        prop.check(target, case)

    run()


def _promoted(pair: tuple[str, str]) -> str:
    return promote_dtypes(*pair)
