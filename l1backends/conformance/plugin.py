"""The suite's pytest hooks: ``--backend``, ``--conformance-profile`` and the target parameters.

``conformance/conftest.py`` in a checkout and ``l1backends/conformance/conftest.py``
in an installed package both re-export these hooks.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings

from . import BACKEND_ENV_VAR, PROFILE_ENV_VAR, use_cuda_simulator_without_driver

# Before anything imports numba.cuda: the simulator where no driver loads.
use_cuda_simulator_without_driver()

from .. import api  # noqa: E402
from ..registry import load_object  # noqa: E402
from .adapters import BUILTIN_ADAPTERS  # noqa: E402
from .checks import Target  # noqa: E402

__all__ = ["backend_targets", "pytest_addoption", "pytest_configure", "pytest_generate_tests"]

_QUIET = list(HealthCheck)
settings.register_profile(
    "l1backends-ci",
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=_QUIET,
    # No shrinking: a failure is reported at once, with its (unminimized) reproduction;
    # the thorough profile shrinks it to a minimal one.
    phases=(Phase.explicit, Phase.generate),
    print_blob=False,
)
settings.register_profile(
    "l1backends-thorough",
    max_examples=300,
    deadline=None,
    suppress_health_check=_QUIET,
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("l1backends", "l1backends conformance suite")
    group.addoption(
        "--backend",
        action="append",
        dest="l1_backends",
        default=[],
        metavar="NAME",
        help=(
            "backend(s) to check, repeatable or comma-separated; default: "
            f"${BACKEND_ENV_VAR}, else every known backend"
        ),
    )
    group.addoption(
        "--conformance-profile",
        dest="l1_profile",
        choices=("ci", "thorough"),
        default=None,
        help=f"hypothesis settings: ci (default, fast) or thorough; also ${PROFILE_ENV_VAR}",
    )


def pytest_configure(config: pytest.Config) -> None:
    profile = config.getoption("l1_profile", default=None) or os.environ.get(PROFILE_ENV_VAR, "ci")
    settings.load_profile(f"l1backends-{profile}")
    _selected(config)  # an unknown backend name is a usage error, reported before collection


def _selected(config: pytest.Config) -> list[str]:
    requested = config.getoption("l1_backends", default=None) or [
        os.environ.get(BACKEND_ENV_VAR, "")
    ]
    names = [n.strip() for item in requested for n in item.split(",") if n.strip()]
    known = [info.name for info in api.backends()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise pytest.UsageError(
            f"unknown backend(s) {', '.join(map(repr, unknown))}; known backends are "
            + ", ".join(map(repr, known))
        )
    return names or known


_TARGETS = pytest.StashKey[list[tuple[str, "Target | None", "str | None"]]]()


def backend_targets(name: str) -> list[tuple[str, Target | None, str | None]]:
    """``(id, target, skip reason)`` for each adapter that feeds backend ``name``."""
    info = next(row for row in api.backends() if row.name == name)
    if not info.available:
        return [(name, None, f"backend {name!r} is unavailable: {info.reason}")]
    references: list[Any] = [*BUILTIN_ADAPTERS.get(name, ()), *info.spec.test_adapters]
    if not references:
        return [(name, None, f"backend {name!r} names no test_adapters to check it")]
    found: list[tuple[str, Target | None, str | None]] = []
    for reference in references:
        try:
            adapter = load_object(reference) if isinstance(reference, str) else reference
            reason = adapter.unavailable_reason()
        except Exception as error:  # the real error is the reason reported
            adapter, reason = None, f"{type(error).__name__}: {error}"
        label = f"{name}/{getattr(adapter, 'name', reference)}"
        if reason is not None:
            found.append((label, None, f"adapter {reference} cannot build arrays: {reason}"))
            continue
        found.append((label, Target(name, adapter, info.capabilities), None))
    return found


def _targets(config: pytest.Config) -> list[tuple[str, Target | None, str | None]]:
    """(id, target, skip reason) for every selected backend and each of its adapters."""
    cached = config.stash.get(_TARGETS, None)
    if cached is None:
        cached = [row for name in _selected(config) for row in backend_targets(name)]
        config.stash[_TARGETS] = cached
    return cached


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "conformance_target" not in metafunc.fixturenames:
        return
    with_dtype = "conformance_dtype" in metafunc.fixturenames
    params: list[Any] = []
    for label, target, reason in _targets(metafunc.config):
        marks = [pytest.mark.skip(reason=reason)] if reason is not None else []
        if not with_dtype:
            params.append(pytest.param(target, marks=marks, id=label))
        elif target is None:
            params.append(pytest.param(None, None, marks=marks, id=label))
        else:
            for dtype in target.capabilities.dtypes:
                marks = []
                if dtype in target.adapter.unsupported_dtypes:
                    reason = f"{target.adapter.name} arrays cannot hold {dtype}"
                    marks = [pytest.mark.skip(reason=reason)]
                params.append(pytest.param(target, dtype, marks=marks, id=f"{label}-{dtype}"))
    names = "conformance_target,conformance_dtype" if with_dtype else "conformance_target"
    metafunc.parametrize(names, params)
