"""A differential fuzzer of the public API on NumPy inputs, against the exact reference.

Arrays come as NumPy users really hold them (``_fuzz_arrays``): any byte order,
``np.matrix``, masked arrays, memory maps, ndarray subclasses (one of them
hostile), misaligned and read-only buffers, 0-d, empty and 20- to 40-d shapes,
negative, zero and stepped strides, transposes, and every special value: NaN,
±inf, ±0, subnormals, float16's extremes and integer extremes of every integer
dtype.  Calls draw reductions, ``axis``, weights (broadcast too), ``broadcast=True``
and ``grad_output`` as Python, NumPy and array scalars and arrays.

Each case runs three times: cold (the API's call cache and the backend's prepared
calls emptied), then on plain arrays of the same shapes and values (native,
C-contiguous, not subclassed: the warm-up that fills the caches), then the case
again, on the cache-hit path.  Every outcome must be the exact result within the
ulps the backend declares, or the documented error type the case was built to
raise; the cold and the cache-hit results must be the same bits, and no input may
change.  A failure prints one line of Python that makes the failing call.

Profiles: ``ci`` (the default: deterministic, sized for the test-time budget) and
``thorough`` (``L1BACKENDS_FUZZ_PROFILE=thorough``: many more random examples,
shrunk to a minimal reproduction on failure).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

pytest.importorskip("numba", reason="the NumPy backend under test needs numba")
hypothesis = pytest.importorskip("hypothesis", reason="the fuzzer needs hypothesis")

from _fuzz_arrays import Recipe, plain_values, realize  # noqa: E402
from _fuzz_cases import FuzzCase  # noqa: E402
from _fuzz_exact import (  # noqa: E402
    compare_exact,
    compare_float64,
    dyadic_grad,
    dyadic_loss,
    exact_grad_elements,
    exact_loss_elements,
    rounded_int,
    ulps_apart,
)
from _fuzz_strategies import error_cases, valid_cases  # noqa: E402
from hypothesis import HealthCheck, Phase, given, note, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import l1backends as l1  # noqa: E402
from l1backends import api  # noqa: E402
from l1backends.conformance.reference import distance_in_ulps  # noqa: E402

PROFILE_ENV_VAR = "L1BACKENDS_FUZZ_PROFILE"
settings.register_profile(
    "l1backends-fuzz-ci",
    max_examples=100,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    # No shrinking in CI: a failure reports its (unminimized) reproduction at once.
    phases=(Phase.explicit, Phase.generate),
    print_blob=False,
)
settings.register_profile(
    "l1backends-fuzz-thorough",
    max_examples=2000,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
PROFILE = settings.get_profile(f"l1backends-fuzz-{os.environ.get(PROFILE_ENV_VAR, 'ci')}")


def scaled(factor: float) -> settings:
    """The selected profile with ``factor`` times its examples (for costlier kinds of case)."""
    return settings(PROFILE, max_examples=max(1, round(PROFILE.max_examples * factor)))


BACKEND = "numba-cpu"
CAPABILITIES = next(info.capabilities for info in l1.backends() if info.name == BACKEND)


def forget_calls() -> None:
    """Empty the API's call cache and the NumPy backend's prepared calls: the next call is cold."""
    from l1backends._backends.numba_cpu import _backend

    api._call_cache.entries.clear()
    _backend.backend._prepared.clear()


@pytest.fixture(scope="module")
def directory() -> Iterator[str]:
    """Where memory-mapped files go; emptied after every case."""
    path = tempfile.mkdtemp(prefix="l1backends-fuzz-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


# ----- one case --------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one call gave: its result or its error, and the RuntimeWarnings it raised."""

    result: Any = None
    error: BaseException | None = None
    warned: list[str] = field(default_factory=list)


def call(case: FuzzCase, arrays: dict[str, Any]) -> Outcome:
    args, options = case.arguments(arrays)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = getattr(l1, case.function)(*args, **options)
        except Exception as error:  # the outcome is judged by check()
            return Outcome(error=error)
    warned = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    return Outcome(result=result, warned=warned)


class Expected:
    """The exact outcome of a valid case, computed once and only when asked for."""

    def __init__(self, case: FuzzCase) -> None:
        self.case = case
        self.plan = case.plan()
        self.bound = float(CAPABILITIES.ulps[self.plan.compute_dtype])
        operands = case.operands()
        self.x = operands["input"].values
        self.y = operands["target"].values
        self.w = None if case.weight is None else case.weight.values
        self.g = case.reference_grad_output(self.plan) if case.wants[1] else None

    def loss_problem(self, got: np.ndarray) -> str | None:
        plan = self.plan
        if self.case.large:
            exact = dyadic_loss(plan, self.x, self.y, self.w)
            return compare_float64(got, exact, plan.result_dtype, self.bound)
        expected = exact_loss_elements(plan, self.x, self.y, self.w)
        return compare_exact(got, expected, plan.result_dtype, self.bound)

    def grad_problem(self, got: np.ndarray) -> str | None:
        plan = self.plan
        if self.case.large:
            exact, magnitude = dyadic_grad(plan, self.x, self.y, self.w, self.g)
            return compare_float64(got, exact, plan.result_dtype, self.bound, magnitude)
        expected = exact_grad_elements(plan, self.x, self.y, self.w, self.g)
        return compare_exact(got, expected, plan.result_dtype, self.bound)


def problems(case: FuzzCase, outcome: Outcome, arrays: dict[str, Any]) -> list[str]:
    """What is wrong with ``outcome`` for ``case`` (nothing: an empty list)."""
    if case.error is not None:
        if outcome.error is None:
            return [f"returned {outcome.result!r}, but must raise {case.error.__name__}"]
        if not isinstance(outcome.error, case.error):
            error = outcome.error
            return [f"raised {type(error).__name__}: {error}; expected {case.error.__name__}"]
        return []
    if outcome.error is not None:
        return [f"raised {type(outcome.error).__name__}: {outcome.error}"]
    found = [f"warned: {message}" for message in outcome.warned]
    expected = Expected(case)
    plan = expected.plan
    want_loss, want_grad = case.wants
    results = outcome.result if want_loss and want_grad else (outcome.result,)
    if not isinstance(results, tuple) or len(results) != 2 - (want_loss != want_grad):
        return [f"returned {outcome.result!r}, not the expected number of arrays"]
    checks = []
    if want_loss:
        checks.append(("loss", plan.out_shape, plan.result_dtype, expected.loss_problem))
    if want_grad:
        checks.append(("gradient", plan.input_shape, plan.compute_dtype, expected.grad_problem))
    for got, (what, shape, dtype, problem_of) in zip(results, checks, strict=True):
        if type(got) is not np.ndarray:
            found.append(f"the {what} is a {type(got).__name__}, not a numpy.ndarray")
            continue
        if got.shape != shape or got.dtype != np.dtype(dtype):
            found.append(f"the {what} has shape {got.shape} and dtype {got.dtype}; "
                         f"expected {shape} and {np.dtype(dtype)}")  # fmt: skip
            continue
        for role, array in arrays.items():
            if np.may_share_memory(got, np.asarray(getattr(array, "data", array))):
                found.append(f"the {what} shares memory with the {role}")
        problem = problem_of(got)
        if problem is not None:
            found.append(f"{what}{problem}")
    return found


def same_bits(a: Any, b: Any) -> bool:
    """Whether two results (arrays or tuples of arrays) hold the same bits."""
    pairs = zip(a, b, strict=True) if isinstance(a, tuple) else [(a, b)]
    return all(x.dtype == y.dtype and x.tobytes() == y.tobytes() for x, y in pairs)


def run_case(case: FuzzCase, directory: str) -> None:
    """Run ``case`` cold, after a plain warm-up and again; fail with a reproduction."""
    note(f"reproduce: {case.repro()}")
    try:
        arrays = {role: op.build(directory) for role, op in case.operands().items()}
        held = {role: plain_values(array) for role, array in arrays.items()}
        forget_calls()
        cold = call(case, arrays)
        plain = case.plainly()
        plain_arrays = {role: op.build(directory) for role, op in plain.operands().items()}
        warm_up = call(plain, plain_arrays)
        hot = call(case, arrays)
        failures = [
            (when, problem)
            for when, which, outcome, used in (
                ("cold", case, cold, arrays),
                ("warm-up on plain arrays", plain, warm_up, plain_arrays),
                ("after the plain warm-up", case, hot, arrays),
            )
            for problem in problems(which, outcome, used)
        ]
        if cold.error is None and hot.error is None and not same_bits(cold.result, hot.result):
            failures.append(("after the plain warm-up", "different bits than the cold call"))
        for role, array in arrays.items():
            if plain_values(array).tobytes() != held[role].tobytes():
                failures.append(("after the calls", f"the {role} was modified"))
    finally:
        for name in os.listdir(directory):
            os.remove(os.path.join(directory, name))
    if failures:
        when = failures[0][0]
        listed = "\n".join(f"  {when}: {problem}" for when, problem in failures)
        if when == "cold":
            repro = case.repro()
        elif when == "warm-up on plain arrays":
            repro = plain.repro()
        else:
            repro = case.repro(warm=True)
        raise AssertionError(f"{case.function} on {BACKEND}:\n{listed}\n    reproduce: {repro}")


# ----- the fuzz tests --------------------------------------------------------------------------


@scaled(2.0)
@given(case=valid_cases("small"))
def test_fuzz_small_arrays(case: FuzzCase, directory: str) -> None:
    """0-d, empty and up to 4-d arrays of every dtype, layout, container and special value."""
    run_case(case, directory)


@scaled(0.6)
@given(case=valid_cases("unit-axes"))
def test_fuzz_many_unit_axes(case: FuzzCase, directory: str) -> None:
    """20 to 40 dimensions, nearly all of length 1 (NumPy allows 64)."""
    run_case(case, directory)


@scaled(0.03)
@given(case=valid_cases("many-axes"))
def test_fuzz_twenty_non_trivial_axes(case: FuzzCase, directory: str) -> None:
    """At least 20 axes of length 2 or 3 (over a million elements), up to 32 dimensions."""
    run_case(case, directory)


@scaled(0.12)
@given(case=valid_cases("large"))
def test_fuzz_large_arrays(case: FuzzCase, directory: str) -> None:
    """2**15 to 2**20 elements: the parallel path, chunked rows and row blocks."""
    run_case(case, directory)


@scaled(1.5)
@given(case=error_cases())
def test_fuzz_documented_errors(case: FuzzCase, directory: str) -> None:
    """Masked arrays, bad dtypes, shapes, axes, reductions and options: the documented error."""
    run_case(case, directory)


# ----- the fuzzer's own parts --------------------------------------------------------------------


@settings(PROFILE, max_examples=max(50, PROFILE.max_examples))
@given(
    dtype=st.sampled_from(["float16", "float32", "float64"]),
    exact=st.one_of(
        st.integers(-(2**40), 2**40).map(lambda k: k / 2**12),
        st.sampled_from([0.0, math.nan, math.inf, -math.inf, 65504.0, 65520.0, 2.0**128]),
    ),
    nudge=st.one_of(st.integers(-3, 3), st.sampled_from([math.nan, math.inf, -math.inf])),
)
def test_vectorized_ulps_agree_with_the_reference(dtype: str, exact: float, nudge: Any) -> None:
    """``ulps_apart`` (large cases) measures exactly what ``distance_in_ulps`` does."""
    with np.errstate(all="ignore"):
        got = np.asarray(exact).astype(dtype)
        if isinstance(nudge, int):
            for _ in range(abs(nudge)):
                got = np.nextafter(got, np.asarray(math.copysign(math.inf, nudge), dtype))
        else:
            got = np.asarray(nudge, dtype)
    exact_value = Fraction(exact) if math.isfinite(exact) else exact
    expected = distance_in_ulps(float(got), exact_value, dtype)
    measured = float(ulps_apart(np.asarray(got), np.asarray(exact), dtype))
    assert measured == expected or (math.isinf(measured) and math.isinf(expected))


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_integers_round_once(dtype: str) -> None:
    """``rounded_int`` is NumPy's correctly rounded int64 cast, and rounds past int64 alike."""
    rng = np.random.default_rng(5)
    values = [int(v) for v in rng.integers(-(2**63), 2**63 - 1, 2000)]
    values += [2**54 + 2**30 + 1, 2**24 + 1, 2**11 + 1, 65519, 65520, 2**63 - 1, -(2**63)]
    for value in values:
        with np.errstate(over="ignore"):
            expected = float(np.asarray(value, dtype=np.int64).astype(dtype))
        assert rounded_int(value, dtype) == expected, value
    assert rounded_int(2**128, "float32") == math.inf
    assert rounded_int(-(10**400), "float64") == -math.inf
    assert rounded_int(2**70 + 2**46 + 1, "float32") == float(2**70 + 2**47)


def test_recipes_build_what_they_say(tmp_path: Any) -> None:
    values = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    recipe = Recipe((1, -2, 3), (2, 0, 1), True, 3, "memmap", "hostile", True)
    array = realize(values, recipe, str(tmp_path))
    assert type(array).__name__ == "Hostile" and array.dtype == np.dtype(">f4")
    assert not array.flags.aligned and not array.flags.writeable and array.strides[1] < 0
    assert np.array_equal(plain_values(array), values)
    constant = np.broadcast_to(values[:, :1], values.shape).copy()
    array = realize(constant, Recipe((1, 0, 1), (0, 1, 2), False, 1, "bytes", "none"))
    assert array.strides[1] == 0 and not array.flags.writeable
    assert np.array_equal(plain_values(array), constant)
    masked = realize(values, Recipe(wrapper="masked", mask_seed=3))
    assert isinstance(masked, np.ma.MaskedArray) and masked.mask.any()


def _any_operand(test: Any) -> Any:
    """A feature test true when ``test`` holds for the input's or the target's values."""
    return lambda case: test(case.input.values) or test(case.target.values)


def _subnormal(values: np.ndarray) -> bool:
    if values.dtype.kind != "f":
        return False
    return bool(np.any((values != 0) & (np.abs(values) < np.finfo(values.dtype).tiny)))


FEATURES = {
    "non-native byte order": lambda c: c.input.recipe.swapped and c.target.recipe.swapped,
    "misaligned": lambda c: c.input.recipe.offset % c.input.values.dtype.itemsize != 0,
    "memmap": lambda c: c.input.recipe.container == "memmap",
    "read-only bytes": lambda c: c.target.recipe.container == "bytes",
    "hostile subclass": lambda c: c.input.recipe.wrapper == "hostile",
    "matrix": lambda c: c.target.recipe.wrapper == "matrix",
    "zero stride": lambda c: 0 in c.input.recipe.steps and c.input.values.size > 1,
    "negative stride": lambda c: any(s < 0 for s in c.target.recipe.steps),
    "0-d": lambda c: c.input.values.ndim == 0,
    "empty": lambda c: c.input.values.size == 0 and c.input.values.ndim > 1,
    "complex big-endian": lambda c: c.input.values.dtype.kind == "c" and c.input.recipe.swapped,
    "integer extreme": _any_operand(lambda v: v.dtype.kind in "iu" and np.iinfo(v.dtype).max in v),
    "float16 extreme": _any_operand(
        lambda v: v.dtype == np.float16 and bool(np.isin(np.abs(v), [65504, 2.0**-24]).any())
    ),
    "subnormal": _any_operand(_subnormal),
    "NaN": _any_operand(lambda v: v.dtype.kind == "f" and bool(np.isnan(v).any())),
    "broadcast weight": lambda c: c.weight is not None and c.weight.values.shape != c.plan().shape,
    "NumPy scalar grad_output": lambda c: isinstance(c.grad_output, np.generic),
    "array grad_output": lambda c: hasattr(c.grad_output, "values") and c.grad_output.values.ndim,
}


def test_the_strategies_reach_every_feature() -> None:
    """Every hostile feature is drawn within a few hundred cases: the fuzzer is not vacuous."""
    seen: set[str] = set()

    @settings(
        max_examples=400, database=None, derandomize=True, phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    @given(case=valid_cases("small"))
    def draw(case: FuzzCase) -> None:
        seen.update(name for name, test in FEATURES.items() if test(case))

    draw()
    assert sorted(set(FEATURES) - seen) == []
