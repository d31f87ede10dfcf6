"""The command line, run as a user would run it."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from l1backends.warmup import wait_for


def run_cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "l1backends", *arguments],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "NUMBA_ENABLE_CUDASIM": os.environ.get("NUMBA_ENABLE_CUDASIM", "1")},
    )


def test_info_lists_every_backend_with_availability() -> None:
    result = run_cli("info")
    assert result.returncode == 0, result.stderr
    for name in ("numba-cpu", "numba-cuda", "cupy", "dask", "array-api"):
        assert f"\n{name}: " in result.stdout
    assert "numpy:ndarray" in result.stdout
    assert "libraries: numpy" in result.stdout
    # Every unavailable backend says why.
    blocks = result.stdout.split("\n\n", 1)[1].split("\n")
    for index, line in enumerate(blocks):
        if line.endswith(": unavailable"):
            assert blocks[index + 2].startswith("  reason: "), line


def test_example_runs_and_shows_the_dispatch() -> None:
    result = run_cli("example")
    assert result.returncode == 0, result.stderr
    assert "[dispatch] l1_loss: ran '" in result.stdout
    assert "array(0.6666667, dtype=float32)" in result.stdout
    assert "loss = array(4., dtype=float32)" in result.stdout


def test_unknown_arguments_are_refused() -> None:
    result = run_cli("info", "--bogus")
    assert result.returncode == 2
    assert "--bogus" in result.stderr


def test_gpu_benchmark_without_a_gpu_says_why() -> None:
    result = run_cli("bench", "--gpu")
    assert result.returncode == 2
    assert "GPU benchmark skipped: " in result.stderr


def test_warmup_compiles_every_numba_cpu_kernel() -> None:
    result = run_cli("warmup")
    assert result.returncode == 0, result.stderr
    match = re.search(
        r"compiled or loaded (\d+) numba-cpu kernel variants for (\d+) calls", result.stdout
    )
    assert match, result.stdout
    assert int(match[1]) >= 10 and int(match[2]) >= 100
    assert "calls" in result.stderr  # the progress bar


def test_warmup_raises_a_failed_workers_error_instead_of_waiting() -> None:
    """A worker that raised sends no more progress: the error surfaces, nothing hangs."""
    done: queue.Queue = queue.Queue()

    def fails() -> None:
        done.put(1)
        raise RuntimeError("a kernel failed to compile")

    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(lambda: done.put(1) or 7), pool.submit(fails)]
        with pytest.raises(RuntimeError, match="failed to compile"):
            wait_for(futures, done, total=10, progress=False, start=0.0)
        fresh: queue.Queue = queue.Queue()
        ok = [pool.submit(lambda: fresh.put(1) or 3) for _ in range(2)]
        assert wait_for(ok, fresh, total=2, progress=False, start=0.0) == [3, 3]
