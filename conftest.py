"""Test-session set-up shared by ``tests/`` and ``conformance/``.

Before pytest-xdist starts its workers, the controller compiles every numba-cpu
kernel into numba's disk cache in parallel processes (``l1backends warmup``), so
that the workers load the kernels instead of each compiling them again.
"""

from __future__ import annotations

import sys

import pytest


def pytest_configure(config: pytest.Config) -> None:
    workers = config.getoption("numprocesses", default=None)
    if hasattr(config, "workerinput") or not workers:
        return  # a worker, or a run without workers: kernels compile on first use
    from l1backends.warmup import run

    calls, variants, seconds = run(progress=False)
    sys.stderr.write(
        f"numba-cpu warm-up: {variants} kernel variants compiled or loaded for {calls} calls "
        f"in {seconds:.1f} s\n"
    )
