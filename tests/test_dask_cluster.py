"""The Dask backend on a real dask.distributed cluster, and numba's threads inside dask tasks.

The cluster is a ``LocalCluster`` of two worker processes bound to 127.0.0.1,
one thread each, with no dashboard.  Each worker gets ``NUMBA_NUM_THREADS=1``,
its share of this machine's cores, the policy the README recommends for several
worker processes on one machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

da = pytest.importorskip("dask.array", reason="dask is not installed (l1backends[dask])")
dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed")

from _threading_layers import LAYERS, layer_environment  # noqa: E402

import l1backends as l1  # noqa: E402
from l1backends._backends.dask._blocks import numba_threads_per_task  # noqa: E402
from l1backends.registry import registry  # noqa: E402

pytestmark = pytest.mark.slow

WORKERS = 2


def _numpy_backend_name() -> str:
    return registry.select((np.ones(1), np.ones(1)), None, "test").name


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=WORKERS,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            env={"NUMBA_NUM_THREADS": "1"},
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def _data(n: int = 300_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n).astype(np.float32)
    y = rng.standard_normal(n).astype(np.float32)
    return x, y, rng.random(n).astype(np.float32)


def test_cluster_value_equals_the_single_machine_backend(client):
    x, y, w = _data()
    single_loss, single_grad = l1.l1_loss_and_grad(x, y, weight=w)  # numba-cpu when available
    xd, yd, wd = (da.from_array(a, chunks=60_000) for a in (x, y, w))
    loss, grad = l1.l1_loss_and_grad(xd, yd, weight=wd)
    threaded = dask.compute(loss, grad, scheduler="threads")
    on_cluster = client.compute([loss, grad], sync=True)

    np.testing.assert_array_max_ulp(on_cluster[0], single_loss, 1)
    np.testing.assert_array_max_ulp(on_cluster[1], single_grad, 1)
    # The bits depend on the chunking alone, never on the scheduler.
    assert on_cluster[0].tobytes() == threaded[0].tobytes()
    assert on_cluster[1].tobytes() == threaded[1].tobytes()
    assert _numpy_backend_name() in {"numba-cpu", "array-api"}


def test_chunks_run_on_the_workers_with_their_numba_thread_share(client):
    def share() -> tuple[int, int, int, str]:
        import numba

        from l1backends._backends.dask._blocks import numba_threads_per_task
        from l1backends.registry import registry

        chosen = registry.select((np.ones(1), np.ones(1)), None, "test").name
        return os.getpid(), numba.config.NUMBA_NUM_THREADS, numba_threads_per_task(64), chosen

    results = client.run(share)
    assert len({pid for pid, *_ in results.values()}) == WORKERS
    for _, cores, threads, chosen in results.values():
        assert cores == 1
        assert threads == 1
        assert chosen == _numpy_backend_name()


def test_concurrent_graphs_on_the_cluster_neither_crash_nor_differ(client):
    x, y, w = _data(seed=1)
    xd, yd, wd = (da.from_array(a, chunks=50_000) for a in (x, y, w))
    losses = [l1.l1_loss(xd, yd, reduction, weight=wd) for reduction in ("mean", "sum")] * 3
    results = client.compute(losses, sync=True)
    assert all(r.tobytes() == results[0].tobytes() for r in results[0::2])
    assert all(r.tobytes() == results[1].tobytes() for r in results[1::2])
    np.testing.assert_array_max_ulp(results[0], l1.l1_loss(x, y, weight=w), 1)
    assert client.run(lambda: True) == dict.fromkeys(client.scheduler_info()["workers"], True)


def test_threaded_scheduler_shares_the_cores_among_tasks():
    numba = pytest.importorskip("numba")
    cores = numba.config.NUMBA_NUM_THREADS
    with dask.config.set(num_workers=cores):
        assert numba_threads_per_task(8 * cores) == 1
        assert numba_threads_per_task(1) == cores


@pytest.mark.parametrize("layer", LAYERS)
def test_threaded_scheduler_under_each_numba_threading_layer(layer):
    """Many dask threads entering numba's parallel kernels at once must not abort."""
    pytest.importorskip("numba")
    script = textwrap.dedent(
        """
        import numpy as np, dask, dask.array as da, l1backends as l1
        rng = np.random.default_rng(0)
        x = rng.standard_normal(1_600_000).astype(np.float32)
        y = rng.standard_normal(1_600_000).astype(np.float32)
        xd, yd = da.from_array(x, chunks=200_000), da.from_array(y, chunks=200_000)
        graphs = [l1.l1_loss(xd, yd), l1.l1_loss_grad(xd, yd, "sum")]
        with dask.config.set(num_workers=4):
            first = dask.compute(*graphs, scheduler="threads")
            again = dask.compute(*graphs, scheduler="threads")
        assert first[0].tobytes() == again[0].tobytes()
        assert first[1].tobytes() == again[1].tobytes()
        np.testing.assert_array_max_ulp(first[0], l1.l1_loss(x, y), 1)
        import numba
        print(numba.threading_layer())
        """
    )
    environment = layer_environment(layer)
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode and "No threading layer could be loaded" in result.stderr:
        pytest.skip(f"numba's {layer} threading layer is not available here")
    assert result.returncode == 0, result.stderr[-3000:]
    if _numpy_backend_name() == "numba-cpu" and layer != "default":
        assert result.stdout.strip().splitlines()[-1] == layer
