"""Dispatch registry: laziness, ordering, plugins, overrides and observability."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

import l1backends as l1
from l1backends.registry import (
    EXACT,
    GENERIC,
    PROTOCOL,
    SUBCLASS,
    BackendSpec,
    Capabilities,
    Registry,
)

HEAVY = ("numba", "cupy", "dask", "torch", "jax")


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )


def test_import_is_light_and_fast() -> None:
    result = run_python(
        f"""
        import sys, time
        start = time.perf_counter()
        import l1backends
        elapsed = time.perf_counter() - start
        loaded = [m for m in {HEAVY!r} if m in sys.modules]
        print(elapsed, loaded)
        """
    )
    assert result.returncode == 0, result.stderr
    elapsed, loaded = result.stdout.split(" ", 1)
    assert loaded.strip() == "[]"
    # The budget is 150 ms; measured ~40 ms here (numpy is not imported either).
    assert float(elapsed) < 0.15


def test_importing_l1backends_does_not_import_numpy_either() -> None:
    result = run_python("import sys, l1backends; print('numpy' in sys.modules)")
    assert result.stdout.strip() == "False", result.stderr


def test_backends_function_is_not_shadowed_by_the_subpackage() -> None:
    import l1backends._backends.array_api  # noqa: F401

    assert callable(l1.backends)
    assert {row.name for row in l1.backends()} >= {
        "numba-cpu",
        "numba-cuda",
        "cupy",
        "dask",
        "array-api",
    }


class Base:
    """A fake array library: only shape/dtype are needed for matching."""


class Child(Base):
    pass


class CudaLike:
    __cuda_array_interface__ = None  # only its presence matters to dispatch


def spec(name: str, **fields: object) -> BackendSpec:
    return BackendSpec(name=name, implementation=f"{__name__}:FAKE_IMPLEMENTATION", **fields)


FAKE_IMPLEMENTATION = object()
BASE = f"{__name__}:Base"


def test_match_levels() -> None:
    exact = spec("exact", array_types=(BASE,))
    assert exact.match(Base) == (EXACT, 0)
    assert exact.match(Child) == (SUBCLASS, -1)
    assert exact.match(CudaLike) is None
    protocol = spec("protocol", protocols=("__cuda_array_interface__",))
    assert protocol.match(CudaLike) == (PROTOCOL, 0)
    assert spec("generic", generic=True).match(np.ndarray) == (GENERIC, 0)
    assert spec("generic", generic=True).match(list) is None


def test_unimported_module_is_never_imported_to_match() -> None:
    never = spec("never", array_types=("l1backends_module_that_does_not_exist:Array",))
    assert never.match(Base) is None
    assert "l1backends_module_that_does_not_exist" not in sys.modules


def ordered_names(registry: Registry, *types: type) -> list[str]:
    return [c.spec.name for c in registry._decide(types).candidates]


def test_order_exact_subclass_protocol_generic() -> None:
    registry = Registry(
        [
            spec("generic", generic=True),
            spec("protocol", protocols=("__cuda_array_interface__",)),
            spec("parent", array_types=(BASE,)),
            spec("child", array_types=(f"{__name__}:Child",)),
        ]
    )

    class CudaChild(Child, CudaLike):
        __array_namespace__ = None

    assert ordered_names(registry, CudaChild, CudaChild) == [
        "child",
        "parent",
        "protocol",
        "generic",
    ]
    assert ordered_names(registry, Child, Child) == ["child", "parent"]


def test_priority_and_before_after_preferences() -> None:
    registry = Registry(
        [
            spec("first", array_types=(BASE,)),
            spec("second", array_types=(BASE,), priority=5),
            spec("plugin", array_types=(BASE,), before=("second",), after=("first",)),
        ]
    )
    # priority puts "second" first; "plugin" must precede "second" but follow "first".
    assert ordered_names(registry, Base, Base) == ["first", "plugin", "second"]
    registry.register(spec("generic-first", generic=True, before=("first",)))

    class ArrayLike(Base):
        __array_namespace__ = None

    assert ordered_names(registry, ArrayLike, ArrayLike)[0] == "generic-first"


def test_decision_is_cached_per_type_tuple() -> None:
    registry = Registry([spec("only", array_types=(BASE,))])
    registry.select((Base(), Base()), None, "test")
    assert (Base, Base) in registry._cache
    first = registry._cache[(Base, Base)]
    registry.select((Base(), Base()), None, "test")
    assert registry._cache[(Base, Base)] is first
    registry.register(spec("another", array_types=(BASE,)))
    assert registry._cache == {}  # registering invalidates the cache


def test_protocol_is_checked_on_instances() -> None:
    class MaybeCuda:
        @property
        def __cuda_array_interface__(self) -> dict:
            raise AttributeError("a CPU tensor has no CUDA interface")

        __array_namespace__ = None

    registry = Registry(
        [spec("protocol", protocols=("__cuda_array_interface__",)), spec("generic", generic=True)]
    )
    assert ordered_names(registry, MaybeCuda, MaybeCuda) == ["protocol", "generic"]
    chosen = registry.select((MaybeCuda(), MaybeCuda()), None, "test")
    assert chosen is FAKE_IMPLEMENTATION
    with pytest.raises(TypeError, match="does not expose __cuda_array_interface__"):
        registry.select((MaybeCuda(), MaybeCuda()), "protocol", "test")


def test_unavailable_backend_is_skipped_with_its_real_reason(caplog) -> None:
    registry = Registry(
        [
            BackendSpec(
                name="broken",
                implementation="l1backends_missing_module:backend",
                array_types=(BASE,),
            ),
            spec("fallback", array_types=(BASE,)),
        ]
    )
    with caplog.at_level(logging.DEBUG, logger="l1backends.dispatch"):
        assert registry.select((Base(), Base()), None, "l1_loss") is FAKE_IMPLEMENTATION
    assert "ran 'fallback'" in caplog.text
    assert "'broken' skipped" in caplog.text
    assert "No module named 'l1backends_missing_module'" in caplog.text
    rows = {row.name: row for row in registry.info()}
    assert not rows["broken"].available
    assert "ModuleNotFoundError" in rows["broken"].reason
    assert rows["fallback"].available and rows["fallback"].reason is None
    with pytest.raises(TypeError, match="'broken' cannot take these arrays: it is unavailable"):
        registry.select((Base(), Base()), "broken", "l1_loss")


def test_dispatch_log_names_the_backend_that_ran(caplog) -> None:
    x = np.ones(3)
    with caplog.at_level(logging.DEBUG, logger="l1backends.dispatch"):
        l1.l1_loss(x, x)
    ran = [r.getMessage() for r in caplog.records if r.name == "l1backends.dispatch"]
    assert ran and "l1_loss: ran '" in ran[-1]
    assert "numpy:ndarray" in ran[-1]


def test_registering_twice_needs_replace() -> None:
    registry = Registry([spec("one", array_types=(BASE,))])
    with pytest.raises(ValueError, match="already registered"):
        registry.register(spec("one", array_types=(BASE,)))
    registry.register(spec("one", array_types=(BASE,), priority=1), replace=True)
    assert registry.spec("one").priority == 1
    with pytest.raises(TypeError, match="BackendSpec"):
        registry.register("one")  # type: ignore[arg-type]


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="module:attribute"):
        BackendSpec(name="x", implementation="no_colon")
    with pytest.raises(ValueError, match="non-empty name"):
        BackendSpec(name="", implementation="a:b")
    with pytest.raises(ValueError, match="no ulp bound"):
        Capabilities(dtypes=("float32",), ulps={})


def test_unknown_backend_lists_known_ones() -> None:
    x = np.ones(2)
    with pytest.raises(ValueError) as error:
        l1.l1_loss(x, x, backend="no-such-backend")
    assert "'no-such-backend'" in str(error.value)
    assert "'array-api'" in str(error.value)
    with pytest.raises(ValueError, match="no-such-backend"), l1.use_backend("no-such-backend"):
        pass


def test_backend_that_cannot_take_the_arrays_says_why() -> None:
    x = np.ones(2)
    with pytest.raises(TypeError) as error:
        l1.l1_loss(x, x, backend="dask")
    assert "'dask' cannot take these arrays" in str(error.value)
    assert "numpy:ndarray" in str(error.value)


def test_use_backend_is_context_local() -> None:
    x = np.ones(4)
    seen: dict[str, object] = {}

    def other_thread() -> None:
        # A thread does not inherit the block: plain dispatch works here.
        seen["thread"] = float(l1.l1_loss(x, x))

    with l1.use_backend("dask"):
        with pytest.raises(TypeError, match="'dask' cannot take"):
            l1.l1_loss(x, x)
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
        # An explicit backend= beats the block.
        assert float(l1.l1_loss(x, x, backend="array-api")) == 0.0
    assert seen["thread"] == 0.0
    assert float(l1.l1_loss(x, x)) == 0.0


def test_use_backend_in_concurrent_async_tasks() -> None:
    x = np.ones(4)

    async def forced(name: str) -> str:
        with l1.use_backend(name):
            await asyncio.sleep(0.01)
            try:
                l1.l1_loss(x, x)
            except TypeError:
                return "refused"
            return "ran"

    async def both() -> list[str]:
        return await asyncio.gather(forced("dask"), forced("array-api"))

    assert asyncio.run(both()) == ["refused", "ran"]


def test_environment_variable_sets_the_default_backend() -> None:
    code = """
        import numpy as np, l1backends as l1
        try:
            l1.l1_loss(np.ones(2), np.ones(2))
        except TypeError as error:
            print("refused:", error)
        print(float(l1.l1_loss(np.ones(2), np.zeros(2), backend="array-api")))
    """
    result = run_python(code, L1BACKENDS_BACKEND="dask")
    assert result.returncode == 0, result.stderr
    assert "refused: backend 'dask' cannot take these arrays" in result.stdout
    assert result.stdout.strip().endswith("1.0")


def write_plugin(root: Path, name: str, module_source: str, target: str) -> None:
    (root / f"{name}.py").write_text(textwrap.dedent(module_source))
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[l1backends.backends]\n{name} = {target}\n")


def test_plugins_load_from_entry_points_and_broken_ones_only_warn(tmp_path: Path) -> None:
    write_plugin(
        tmp_path,
        "goodplugin",
        """
        from l1backends import BackendSpec, Capabilities

        class Impl:
            def loss(self, plan, input, target, weight):
                return "plugin ran"

        backend = Impl()

        def specs():
            return [BackendSpec(
                name="good-plugin",
                implementation="goodplugin:backend",
                array_types=("numpy:ndarray",),
                before=("numba-cpu",),
                capabilities=Capabilities(dtypes=("float64",), ulps={"float64": 1}),
            )]
        """,
        "goodplugin:specs",
    )
    write_plugin(tmp_path, "badplugin", "raise RuntimeError('plugin exploded')\n", "badplugin:x")
    code = """
        import warnings
        warnings.simplefilter("always")
        import numpy as np
        import l1backends as l1
        with warnings.catch_warnings(record=True) as caught:
            names = [row.name for row in l1.backends()]
        print(names)
        print([str(w.message) for w in caught])
        print(l1.l1_loss(np.ones(2), np.ones(2)))
    """
    result = run_python(code, PYTHONPATH=str(tmp_path))
    assert result.returncode == 0, result.stderr
    names, warned, ran = result.stdout.strip().splitlines()
    assert "'good-plugin'" in names
    assert "badplugin" in warned and "plugin exploded" in warned
    assert ran == "plugin ran"


def test_cache_hit_does_not_match_types_again(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = Registry([spec("only", array_types=(BASE,))])
    registry.select((Base(), Base()), None, "test")

    def refuse(types: tuple[type, ...]) -> None:
        raise AssertionError(f"types {types} were matched again")

    monkeypatch.setattr(registry, "_decide", refuse)
    assert registry.select((Base(), Base()), None, "test") is FAKE_IMPLEMENTATION
