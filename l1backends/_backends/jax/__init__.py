"""The JAX backend ("jax"): JAX arrays on the native kernels, under every JAX transform.

Concrete CPU arrays are read in place (DLPack) by the backend the registry picks for
NumPy; traced code (``jit``, ``grad``, ``vmap``) gets a ``jax.custom_vjp`` loss whose
value runs natively on the CPU through an XLA FFI custom call and in XLA elsewhere,
and whose gradient is the spec's subgradient.  See :mod:`._backend`.

This module does not import JAX: :func:`probe` does, and ``backend`` is loaded on
first access.
"""

from __future__ import annotations

from typing import Any

from ...registry import BackendSpec, Capabilities
from .. import ROUNDED_ONCE_ULPS

__all__ = ["MIN_VERSION", "SPEC", "backend", "probe"]

#: jax.ffi (public, with vmap_method) and lax.platform_dependent: JAX 0.5.
MIN_VERSION = (0, 5)

SPEC = BackendSpec(
    name="jax",
    implementation="l1backends._backends.jax:backend",
    probe="l1backends._backends.jax:probe",
    # The concrete array type has moved between jaxlib versions; every tracer (jit, grad,
    # vmap, ...) derives from jax._src.core.Tracer.
    array_types=(
        "jaxlib._jax:ArrayImpl",
        "jaxlib.xla_extension:ArrayImpl",
        "jax._src.core:Tracer",
    ),
    capabilities=Capabilities(ulps=ROUNDED_ONCE_ULPS, deterministic=True),
    before=("array-api",),
)


def probe() -> str | None:
    """Return None when JAX can be used, else the real reason (missing, or too old)."""
    try:
        import jax
    except Exception as error:  # the import error is the reason shown to users
        return (
            f"jax cannot be imported ({type(error).__name__}: {error}); "
            "install it with pip install 'l1backends[frameworks]'"
        )
    version = tuple(int(part) for part in jax.__version__.split(".")[:2])
    if version < MIN_VERSION:
        return f"jax {jax.__version__} is too old: the jax backend needs jax >= 0.5"
    return None


def __getattr__(name: str) -> Any:
    if name == "backend":
        from ._backend import backend

        return backend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
