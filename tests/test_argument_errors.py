"""Arguments, environment and plugins: every wrong input gets the error the spec names.

Regression tests of issue 13's "wrong or unclear errors", and of the numba cache
surviving a bad disk (corrupted entries, no writable location).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import l1backends as l1
from l1backends.registry import BackendSpec, Capabilities


def run_python(
    code: str, *args: str, cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=cwd,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("reduction", [["mean"], {"mean"}, 1, None, b"mean"])
def test_reduction_of_any_other_type_is_a_value_error(reduction: object) -> None:
    x = np.ones(3)
    for function in (l1.l1_loss, l1.l1_loss_grad, l1.l1_loss_and_grad):
        with pytest.raises(ValueError, match="reduction="):
            function(x, x, reduction)  # type: ignore[arg-type]  # the wrong type on purpose


@pytest.mark.parametrize("broadcast", ["no", 1, None, np.True_])
def test_broadcast_must_be_a_bool(broadcast: object) -> None:
    x = np.ones(3)
    l1.l1_loss(x, x, broadcast=True)  # the same signature with a bool first
    with pytest.raises(TypeError, match="broadcast must be True or False"):
        l1.l1_loss(x, x, broadcast=broadcast)  # type: ignore[arg-type]  # on purpose


def test_axis_of_the_wrong_type_is_refused_even_after_a_cached_call() -> None:
    x = np.ones((2, 3))
    l1.l1_loss(x, x, axis=0)
    with pytest.raises(TypeError, match="axis"):
        l1.l1_loss(x, x, axis=False)  # equal to 0, and hashed alike
    with pytest.raises(TypeError, match="axis"):
        l1.l1_loss(x, x, axis=0.0)  # type: ignore[arg-type]  # on purpose


@pytest.mark.parametrize(
    ("fields", "error", "match"),
    [
        ({"array_types": [None]}, TypeError, "array_types"),
        ({"priority": "high"}, TypeError, "priority"),
        ({"priority": True}, TypeError, "priority"),
        ({"implementation": None}, TypeError, "implementation"),
        ({"implementation": "no_colon"}, ValueError, "module:attribute"),
        ({"generic": "yes"}, TypeError, "generic"),
        ({"probe": 3}, TypeError, "probe"),
        ({"capabilities": {"float32": 1}}, TypeError, "capabilities"),
        ({"test_adapters": ["bad"]}, ValueError, "test_adapters"),
    ],
)
def test_backend_spec_validates_its_fields(fields: dict, error: type, match: str) -> None:
    arguments = {"name": "x", "implementation": "a:b", **fields}
    with pytest.raises(error, match=match):
        BackendSpec(**arguments)


def test_capabilities_validate_their_fields() -> None:
    with pytest.raises(ValueError, match="unsupported dtypes"):
        Capabilities(dtypes=("bfloat16",), ulps={"bfloat16": 1})
    with pytest.raises(ValueError, match=r"must be > 0"):
        Capabilities(dtypes=("float32",), ulps={"float32": -1})
    with pytest.raises(ValueError, match=r"at most 0\.5"):
        Capabilities(dtypes=("float32",), ulps={"float32": 1}, correctly_rounded=("float32",))


def test_numpy_scalars_and_huge_integers_as_grad_output() -> None:
    x, y = np.array([1.0, 2.0, 3.0], np.float32), np.zeros(3, np.float32)
    expected = l1.l1_loss_grad(x, y, "sum", grad_output=2.0)
    for g in (np.float32(2.0), np.float64(2.0), np.int16(2), np.array(2.0)):
        np.testing.assert_array_equal(l1.l1_loss_grad(x, y, "sum", grad_output=g), expected)
    huge = l1.l1_loss_grad(x, y, "sum", grad_output=10**400)
    assert np.isinf(huge).all() and (huge > 0).all()
    with pytest.raises(TypeError, match="real"):
        l1.l1_loss_grad(x, y, "sum", grad_output=np.complex64(1))
    strict = pytest.importorskip("array_api_strict", reason="array-api-strict is a test extra")
    sx, sy = strict.asarray([1.0, 2.0, 3.0]), strict.asarray([0.0, 0.0, 0.0])
    for g in (np.float64(2.0), np.array(2.0), 2):
        result = l1.l1_loss_grad(sx, sy, "sum", grad_output=g)
        np.testing.assert_array_equal(np.asarray(strict.asarray(result)), [2.0, 2.0, 2.0])


def test_use_backend_none_restores_dispatch_by_type_over_the_environment() -> None:
    code = """
        import numpy as np, l1backends as l1
        x = np.ones(2)
        try:
            l1.l1_loss(x, x)
        except TypeError:
            print("default is dask")
        with l1.use_backend(None):
            print(float(l1.l1_loss(x, x * 3)))
        print(l1.default_backend())
    """
    result = run_python(code, L1BACKENDS_BACKEND="dask")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines == ["default is dask", "2.0", "('dask', None)"]


def test_an_unknown_backend_in_the_environment_is_flagged_at_import() -> None:
    code = """
        import warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import numpy as np, l1backends as l1
        print([str(w.message) for w in caught])
        print(float(l1.l1_loss(np.ones(2), np.zeros(2))))
    """
    result = run_python(code, L1BACKENDS_BACKEND="no-such-thing")
    assert result.returncode == 0, result.stderr
    warned, value = result.stdout.strip().splitlines()
    assert "L1BACKENDS_BACKEND='no-such-thing' is ignored" in warned
    assert value == "1.0"  # dispatch by type goes on
    info = subprocess.run(
        [sys.executable, "-m", "l1backends", "info"],
        capture_output=True,
        text=True,
        env={**os.environ, "L1BACKENDS_BACKEND": "no-such-thing"},
        timeout=300,
        check=False,
    )
    assert "WARNING: L1BACKENDS_BACKEND='no-such-thing' is ignored" in info.stdout


def write_plugin(root: Path, name: str, source: str, target: str) -> None:
    (root / f"{name}.py").write_text(textwrap.dedent(source))
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[l1backends.backends]\n{name} = {target}\n")


def test_under_w_error_each_broken_plugin_raises_alone_and_the_others_load(
    tmp_path: Path,
) -> None:
    write_plugin(tmp_path, "brokenone", "raise RuntimeError('first broke')\n", "brokenone:x")
    write_plugin(tmp_path, "brokentwo", "raise RuntimeError('second broke')\n", "brokentwo:x")
    good = """
        from l1backends import BackendSpec
        SPEC = BackendSpec(name="good", implementation="l1backends._backends.array_api:backend",
                           array_types=("good:Nothing",))
    """
    write_plugin(tmp_path, "good", good, "good:SPEC")
    code = """
        import l1backends as l1
        try:
            l1.backends()
        except RuntimeWarning as error:
            print("raised:", error, "|", getattr(error, "__notes__", []))
        print([row.name for row in l1.backends()])
    """
    result = run_python(code, "-W", "error", PYTHONPATH=str(tmp_path))
    assert result.returncode == 0, result.stderr
    raised, names = result.stdout.strip().splitlines()
    assert ("broke" in raised and "first broke" in raised + names) or "second broke" in raised
    assert "'good'" in names and "'numba-cpu'" in names


def test_a_corrupted_numba_cache_is_recompiled_with_a_warning(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    code = """
        import warnings, numpy as np, l1backends as l1
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = float(l1.l1_loss(np.arange(9.0)[::2], np.zeros(5)))
        print(value, [str(w.message) for w in caught if "cached" in str(w.message)])
    """
    first = run_python(code, NUMBA_CACHE_DIR=str(cache))
    assert first.returncode == 0, first.stderr
    files = [path for path in cache.rglob("*") if path.suffix in (".nbi", ".nbc")]
    assert files, "numba wrote no cache"
    for path in files:
        path.write_bytes(path.read_bytes()[:20])  # truncated, as an interrupted write leaves it
    second = run_python(code, NUMBA_CACHE_DIR=str(cache))
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("4.0 ") and "could not be read" in second.stdout
    third = run_python(code, NUMBA_CACHE_DIR=str(cache))
    assert third.stdout.strip() == "4.0 []", third.stdout  # rewritten: no warning now


def test_without_a_writable_cache_numba_cpu_still_serves_numpy(tmp_path: Path) -> None:
    """No writable cache location: one warning, kernels compile uncached, no fallback."""
    import l1backends as package

    copy = tmp_path / "site"
    shutil.copytree(Path(package.__file__).parent, copy / "l1backends")
    for cache in (copy / "l1backends").rglob("__pycache__"):
        shutil.rmtree(cache)
    (copy / "l1backends" / "_backends" / "numba_cpu" / "__pycache__").write_text("a file")
    code = f"""
        import warnings, numpy as np, l1backends as l1
        assert l1.__file__.startswith({str(copy)!r}), l1.__file__
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = float(l1.l1_loss(np.arange(4.0), np.zeros(4)))
        print(value, sum("cannot cache" in str(w.message) for w in caught))
        print([b.name for b in l1.backends() if b.available][0])
    """
    # Run from elsewhere: the checkout in the working directory would come first.
    result = run_python(
        code, cwd=tmp_path, PYTHONPATH=str(copy), NUMBA_CACHE_DIR="/dev/null/no", HOME="/dev/null"
    )
    assert result.returncode == 0, result.stderr
    value_line, first_backend = result.stdout.strip().splitlines()
    assert value_line == "1.5 1"
    assert first_backend == "numba-cpu"


def test_grad_output_overflow_rounds_to_inf_not_error() -> None:
    x = np.array([2.0], np.float32)
    gradient = l1.l1_loss_grad(x, np.zeros(1, np.float32), "sum", grad_output=1e300)
    assert math.isinf(float(gradient[0]))
