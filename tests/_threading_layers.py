"""numba's threading layers, for tests that run a subprocess under each of them.

numba-cpu runs its parallel work on Python threads, never on a numba threading layer,
so no layer changes a result; these tests hold that true with each layer started in
the same process by other code, as in a user's process.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path

import pytest

LAYERS = ["default", "omp", "tbb", "workqueue"]


def layer_environment(layer: str) -> dict[str, str]:
    """The environment of a subprocess whose numba uses threading layer ``layer``.

    Skips the calling test when the layer is tbb and the ``tbb`` package is absent.
    pip's tbb wheel puts ``libtbb.so`` in the environment's ``lib`` directory, which
    the loader searches only when told to.
    """
    environment = dict(os.environ, NUMBA_THREADING_LAYER=layer)
    if layer == "tbb":
        try:
            metadata.version("tbb")
        except metadata.PackageNotFoundError:
            pytest.skip("the tbb package is not installed (it is in the 'test' extra)")
        library = str(Path(sys.prefix) / "lib")
        previous = environment.get("LD_LIBRARY_PATH")
        environment["LD_LIBRARY_PATH"] = library + (os.pathsep + previous if previous else "")
    return environment
