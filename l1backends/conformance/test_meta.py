"""Meta-tests: the suite must FAIL deliberately wrong backends, and pass the right one.

Each faulty backend of :mod:`l1backends.conformance.faulty` is registered only
for the duration of its test, fed NumPy arrays, and run through the very
properties the suite runs on real backends (same strategies, same checks).
The test passes only if the suite raises, with a one-line reproduction that
names the faulty backend.  A control registers the correct generic backend
under a temporary name and shows the same harness passes it, so the failures
come from the faults and not from the harness.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis.errors import Flaky

from .. import api
from ..registry import BackendSpec, Capabilities, type_name
from . import test_devices
from .adapters import ARRAY_API_STRICT, NUMPY, ArrayAdapter
from .checks import Target, run_property
from .matrix import CHECKS, matrix

__all__ = [
    "test_correct_backend_passes_the_same_harness",
    "test_faulty_backend_fails_the_suite",
    "test_honest_loose_bound_passes_where_an_overclaim_fails",
]

_EXAMPLES = 150
# Rounding faults show only on some draws (long finite sums): search longer for them.
# The search stops at the first failure, so this costs time only if the suite misses one.
_SEARCH = 1000
_ALL = ("float16", "float32", "float64", "complex64", "complex128")
_EXACT = Capabilities(ulps=dict.fromkeys(_ALL, 0.6) | {"float64": 2.0, "complex128": 2.0})

# (faulty object in l1backends.conformance.faulty, capabilities, dtype, properties that must fail)
FAULTS = {
    "tie gradient is +1, not 0": ("TIE_GRADIENT", _EXACT, "float64", ("ties", "grad")),
    "float32 accumulation": ("FLOAT32_ACCUMULATION", _EXACT, "float32", ("loss",)),
    "claims 0.6 ulp for float64 but sums naively": (
        "NAIVE_FLOAT64_SUM",
        Capabilities(dtypes=("float64",), ulps={"float64": 0.6}),
        "float64",
        ("loss",),
    ),
    "gradient 0 where it must be NaN": ("NAN_GRADIENT_ZERO", _EXACT, "float32", ("grad",)),
    "gradient wrt target returned for input": (
        "GRADIENT_WRT_TARGET",
        _EXACT,
        "float64",
        ("convexity", "finite_differences", "grad"),
    ),
    "weighted-mean gradient ignores the weight": (
        "IGNORES_WEIGHT",
        _EXACT,
        "float64",
        ("finite_differences", "grad"),
    ),
    "grad_output ignored": ("DROPS_GRAD_OUTPUT", _EXACT, "float32", ("grad",)),
    "'none' returns a view of a reused buffer": (
        "REUSES_NONE_BUFFER",
        _EXACT,
        "float32",
        ("loss",),
    ),
    "input mutated in place": ("MUTATES_INPUT", _EXACT, "float64", ("loss",)),
    "float64 loss for float32 inputs": ("WRONG_LOSS_DTYPE", _EXACT, "float32", ("loss",)),
    "claims complex dtypes it cannot compute": ("NO_COMPLEX", _EXACT, "complex64", ("loss",)),
    "claims determinism but varies": ("NONDETERMINISTIC", _EXACT, "float64", ("loss_and_grad",)),
}


def _text(error: BaseException) -> str:
    """The message of an error and of every error it groups."""
    parts = [str(error)]
    for inner in getattr(error, "exceptions", ()):
        parts.append(_text(inner))
    return "\n".join(parts)


@contextmanager
def registered(
    name: str, implementation: str, capabilities: Capabilities, adapter: ArrayAdapter = NUMPY
) -> Iterator[Target]:
    """Register a backend serving ``adapter``'s arrays (NumPy by default) for the block only."""
    spec = BackendSpec(
        name=name,
        implementation=implementation,
        array_types=(type_name(adapter.array_type()),),
        capabilities=capabilities,
        before=("array-api",),
    )
    api.register_backend(spec)
    try:
        yield Target(name, adapter, capabilities)
    finally:
        api.unregister_backend(name)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_faulty_backend_fails_the_suite(fault: str) -> None:
    attribute, capabilities, dtype, properties = FAULTS[fault]
    name = "conformance-meta-" + attribute.lower().replace("_", "-")
    with registered(name, f"l1backends.conformance.faulty:{attribute}", capabilities) as target:
        for prop in properties:
            # A fault that shows only sometimes surfaces as hypothesis's Flaky group.
            with pytest.raises((AssertionError, Flaky)) as caught:
                run_property(target, prop, dtype, max_examples=_SEARCH, shrink=False)
            message = _text(caught.value)
            assert "reproduce: " in message, message
            line = message.split("reproduce: ", 1)[1].splitlines()[0]
            assert f"backend={name!r}" in line, line
            compile(line, "<reproduction>", "exec")  # one valid line of Python


def test_correct_backend_passes_the_same_harness() -> None:
    """The control: the generic backend under a temporary name passes every faulted property."""
    name = "conformance-meta-control"
    with registered(name, "l1backends._backends.array_api:backend", _EXACT) as target:
        for prop in ("loss", "grad", "ties", "convexity", "finite_differences", "loss_and_grad"):
            run_property(target, prop, "float32", max_examples=_EXAMPLES, shrink=False)


def test_honest_loose_bound_passes_where_an_overclaim_fails() -> None:
    """Naive float64 summation passes when it declares a bound it meets (2**12 ulps)."""
    honest = Capabilities(dtypes=("float64",), ulps={"float64": 2.0**12})
    name = "conformance-meta-honest-naive"
    with registered(name, "l1backends.conformance.faulty:NAIVE_FLOAT64_SUM", honest) as target:
        run_property(target, "loss", "float64", max_examples=_EXAMPLES, shrink=False)
    assert math.isfinite(honest.ulps["float64"])


def test_path_matrix_catches_a_wrong_weight_sum_offset() -> None:
    """The matrix's deterministic cases fail a gradient that reads Σw from the wrong offset."""
    name = "conformance-meta-wrong-weight-sum-offset"
    reference = "l1backends.conformance.faulty:WRONG_WEIGHT_SUM_OFFSET"
    with registered(name, reference, _EXACT) as target:
        failures = []
        for entry in matrix(target, None):
            for check in entry.checks:
                try:
                    CHECKS[check](target, entry.case)
                except AssertionError as error:
                    failures.append(str(error))
        assert failures, "the path matrix passed a backend whose weighted-mean gradient is wrong"
        assert all("reproduce: " in failure for failure in failures)


def test_device_check_catches_a_cache_that_ignores_devices() -> None:
    """Results put on a cached device instead of the inputs' fail the device check."""
    if ARRAY_API_STRICT.unavailable_reason() is not None:
        pytest.skip(f"array-api-strict is absent: {ARRAY_API_STRICT.unavailable_reason()}")
    name = "conformance-meta-device-blind-cache"
    reference = "l1backends.conformance.faulty:DEVICE_BLIND_CACHE"
    strict = Capabilities(dtypes=("float32", "float64"), ulps={"float32": 0.6, "float64": 2.0})
    with (
        registered(name, reference, strict, ARRAY_API_STRICT) as target,
        pytest.raises(AssertionError, match="device"),
    ):
        test_devices.test_devices_are_kept_and_never_mixed(target)
