"""The shared conformance suite: one pytest suite that holds every backend to the same rules.

Run it on any registered backend, a third party's plugin included, by name::

    pytest conformance --backend NAME              # from a checkout of l1backends
    python -m l1backends check --backend NAME      # from an installed l1backends
    L1BACKENDS_CONFORMANCE_BACKEND=NAME pytest conformance

``--backend`` may be repeated or given a comma-separated list; without it every
known backend runs, and an unavailable one is reported as skipped with its
reason.  ``--conformance-profile thorough`` runs many more hypothesis examples
than the default ``ci`` profile.

A backend is fed arrays by the adapters its ``BackendSpec.test_adapters`` names
(see :mod:`l1backends.conformance.adapters`) and is held to exactly what its
``capabilities`` declare: every declared dtype, its ulp bound, determinism.
The suite needs pytest and hypothesis (the ``test`` extra).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
from pathlib import Path

__all__ = ["BACKEND_ENV_VAR", "PROFILE_ENV_VAR", "run", "use_cuda_simulator_without_driver"]

#: Comma-separated backend names to run when ``--backend`` is not given.
BACKEND_ENV_VAR = "L1BACKENDS_CONFORMANCE_BACKEND"
#: The hypothesis settings profile ("ci" or "thorough") when ``--conformance-profile`` is not given.
PROFILE_ENV_VAR = "L1BACKENDS_CONFORMANCE_PROFILE"

_DRIVER_LIBRARIES = {"win32": ("nvcuda.dll",), "darwin": ()}


def use_cuda_simulator_without_driver() -> bool:
    """Turn on numba's CUDA simulator when no CUDA driver can be loaded.

    Must run before anything imports ``numba.cuda``.  An explicit
    ``NUMBA_ENABLE_CUDASIM`` is respected; otherwise the simulator is selected
    exactly when the driver library does not load, so a machine with a GPU tests
    the real device.

    Returns
    -------
    bool
        Whether the simulator is (now) selected.
    """
    explicit = os.environ.get("NUMBA_ENABLE_CUDASIM")
    if explicit is not None:
        return explicit == "1"
    for library in _DRIVER_LIBRARIES.get(sys.platform, ("libcuda.so.1", "libcuda.so")):
        try:
            ctypes.CDLL(library)
        except OSError:
            continue
        return False
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    return True


def run(backends: list[str] | None = None, pytest_args: list[str] | None = None) -> int:
    """Run the installed conformance suite with pytest.

    Parameters
    ----------
    backends : list of str, optional
        Backend names to check; all known backends when None.
    pytest_args : list of str, optional
        Further pytest arguments (``-x``, ``-k ...``, ``--conformance-profile thorough``).

    Returns
    -------
    int
        pytest's exit code (0 when every selected check passed).

    Raises
    ------
    ImportError
        If pytest or hypothesis is missing, saying how to install them.
    """
    # Only look the packages up: importing them here would stop pytest rewriting asserts.
    missing = [name for name in ("pytest", "hypothesis") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(
            f"the l1backends conformance suite needs {' and '.join(missing)}; "
            "install them with: pip install 'l1backends[test]'"
        )
    import pytest

    here = Path(__file__).resolve().parent
    arguments = [str(here), "-p", "no:cacheprovider"]
    for name in backends or ():
        arguments += ["--backend", name]
    arguments += list(pytest_args or ())
    return int(pytest.main(arguments))
