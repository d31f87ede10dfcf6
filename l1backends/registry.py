"""The dispatch registry: which backend serves which arrays.

Backends are known by lazy ``"module:attribute"`` strings, and array types by
``"module:qualname"`` strings that are resolved only when their module is
already in ``sys.modules``: a library that is not imported is never imported to
test a type.  Candidates are ordered by specificity (exact type, then subclass,
then a protocol such as ``__cuda_array_interface__``, then the generic
Array-API fallback), then by declared ``before``/``after`` preferences and
``priority``.  The ordering is cached per tuple of argument types.

Every dispatch decision is logged at DEBUG on the ``"l1backends.dispatch"`` logger.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .semantics import SUPPORTED_DTYPES

__all__ = [
    "EXACT",
    "GENERIC",
    "PLUGIN_GROUP",
    "PROTOCOL",
    "SUBCLASS",
    "BackendInfo",
    "BackendSpec",
    "Capabilities",
    "Registry",
    "registry",
]

PLUGIN_GROUP = "l1backends.backends"
logger = logging.getLogger("l1backends.dispatch")

# Specificity of a match, highest first.
EXACT, SUBCLASS, PROTOCOL, GENERIC = 3, 2, 1, 0
_MATCH_NAMES = {EXACT: "exact type", SUBCLASS: "subclass", PROTOCOL: "protocol", GENERIC: "generic"}

# Families of array types that can never be mixed in one call.  The first component of a
# type's module names its library; aliases fold libraries that share one array type.
_FAMILY_ALIASES = {"jaxlib": "jax", "numba_cuda": "numba"}


def load_object(reference: str) -> Any:
    """Import ``"module:attribute"`` (the attribute may be dotted) and return the object.

    Parameters
    ----------
    reference : str
        A lazy reference such as ``"l1backends._backends.array_api:backend"``.

    Returns
    -------
    object
        The referenced object.
    """
    module_name, _, attribute = reference.partition(":")
    obj = importlib.import_module(module_name)
    for part in filter(None, attribute.split(".")):
        obj = getattr(obj, part)
    return obj


def _loaded_type(reference: str) -> type | None:
    """Resolve ``"module:qualname"`` only if its module is already imported."""
    module_name, _, qualname = reference.partition(":")
    obj = sys.modules.get(module_name)
    for part in qualname.split("."):
        if obj is None:
            return None
        obj = getattr(obj, part, None)
    return obj if isinstance(obj, type) else None


def type_name(cls: type) -> str:
    """Return ``"module:qualname"`` for a type."""
    return f"{cls.__module__}:{cls.__qualname__}"


def array_family(cls: type) -> str:
    """Return the library an array type comes from ("numpy", "cupy", "torch", ...)."""
    top = cls.__module__.partition(".")[0]
    return _FAMILY_ALIASES.get(top, top)


@dataclass(frozen=True)
class Capabilities:
    """What a backend declares it delivers; the conformance suite checks exactly this.

    Attributes
    ----------
    dtypes : tuple of str
        Supported input dtypes (integers are promoted and always accepted).
    ulps : Mapping of str to float
        Per-dtype accuracy bound in units in the last place of the result dtype,
        for loss values and gradients alike.
    deterministic : bool
        Whether the same call always returns the same bits.
    """

    dtypes: tuple[str, ...] = SUPPORTED_DTYPES
    ulps: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType({name: 2.0 for name in SUPPORTED_DTYPES})
    )
    deterministic: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtypes", tuple(self.dtypes))
        object.__setattr__(self, "ulps", MappingProxyType(dict(self.ulps)))
        missing = [name for name in self.dtypes if name not in self.ulps]
        if missing:
            raise ValueError(f"capabilities declare no ulp bound for {missing}")


@dataclass(frozen=True)
class BackendSpec:
    """How the registry knows a backend, without importing it.

    Attributes
    ----------
    name : str
        The backend's name, as used by ``backend=`` and ``use_backend``.
    implementation : str
        ``"module:attribute"`` of an object with ``loss``, ``grad`` and
        ``loss_and_grad`` methods taking ``(plan, input, target, weight[, grad_output])``.
    array_types : tuple of str
        ``"module:qualname"`` of the array types served (matched exactly or by subclass).
    protocols : tuple of str
        Attribute names that an array may expose to be served (e.g.
        ``"__cuda_array_interface__"``); checked on each argument.
    generic : bool
        Whether any Array-API array is served (the lowest specificity).
    probe : str or None
        ``"module:attribute"`` of a function returning None when the backend is
        usable, else the reason it is not.  Called once, on first need.
    capabilities : Capabilities
        Declared dtypes, accuracy bounds and determinism.
    priority : int
        Higher wins among candidates of equal specificity.
    before, after : tuple of str
        Names of backends this one must be tried before (or after), whatever
        their specificity; for plugins that declare their place relative to others.
    test_adapters : tuple of str
        ``"module:attribute"`` of conformance-suite array adapters that build
        arrays this backend serves.
    """

    name: str
    implementation: str
    array_types: tuple[str, ...] = ()
    protocols: tuple[str, ...] = ()
    generic: bool = False
    probe: str | None = None
    capabilities: Capabilities = field(default_factory=Capabilities)
    priority: int = 0
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    test_adapters: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for attribute in ("array_types", "protocols", "before", "after", "test_adapters"):
            value = getattr(self, attribute)
            if isinstance(value, str):
                value = (value,)
            object.__setattr__(self, attribute, tuple(value))
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a backend needs a non-empty name, got {self.name!r}")
        if ":" not in self.implementation:
            raise ValueError(
                f"backend {self.name!r}: implementation must be 'module:attribute', "
                f"got {self.implementation!r}"
            )

    def match(self, cls: type) -> tuple[int, int] | None:
        """How specifically this backend serves arrays of type ``cls``, or None.

        Returns
        -------
        tuple of int or None
            ``(level, closeness)``: the level is :data:`EXACT`, :data:`SUBCLASS`,
            :data:`PROTOCOL` or :data:`GENERIC`; among subclass matches, a nearer
            base class ranks higher (closeness ``-k`` for the k-th base in the MRO).
        """
        for reference in self.array_types:
            resolved = _loaded_type(reference)
            if resolved is cls or (resolved is None and reference == type_name(cls)):
                return EXACT, 0
        best = None
        for reference in self.array_types:
            resolved = _loaded_type(reference)
            for distance, base in enumerate(cls.__mro__[1:], start=1):
                if base is resolved or (resolved is None and reference == type_name(base)):
                    best = distance if best is None else min(best, distance)
                    break
        if best is not None:
            return SUBCLASS, -best
        if any(hasattr(cls, attribute) for attribute in self.protocols):
            return PROTOCOL, 0
        if self.generic and _is_array_api_type(cls):
            return GENERIC, 0
        return None


@dataclass(frozen=True)
class BackendInfo:
    """One row of :func:`l1backends.backends`.

    Attributes
    ----------
    name : str
        The backend's name.
    array_types : tuple of str
        The array types it serves (``"module:qualname"``; ``"*"`` for any Array-API array).
    available : bool
        Whether it can run here.
    reason : str or None
        Why it cannot, else None.
    capabilities : Capabilities
        What it declares.
    spec : BackendSpec
        The full registration.
    """

    name: str
    array_types: tuple[str, ...]
    available: bool
    reason: str | None
    capabilities: Capabilities
    spec: BackendSpec


def _is_array_api_type(cls: type) -> bool:
    """Whether instances of ``cls`` are arrays of some Array-API namespace."""
    if hasattr(cls, "__array_namespace__"):
        return True
    # Libraries whose arrays array-api-compat wraps although they lack __array_namespace__.
    return array_family(cls) in {"numpy", "cupy", "torch", "jax", "dask", "ndonnx", "sparse"}


@dataclass(frozen=True)
class _Candidate:
    spec: BackendSpec
    specificity: int


@dataclass
class _Decision:
    """The cached outcome for one tuple of argument types."""

    candidates: tuple[_Candidate, ...]
    fast: tuple[str, Any] | None = None


class Registry:
    """The set of known backends and the dispatch cache.

    Parameters
    ----------
    specs : Iterable of BackendSpec
        The built-in backends, in registration order.
    """

    def __init__(self, specs: Iterable[BackendSpec]) -> None:
        self._specs: dict[str, BackendSpec] = {}
        self._lock = threading.RLock()
        self._cache: dict[tuple[type, ...], _Decision] = {}
        # The API's cache of whole call signatures -> (implementation, plan); kept here so
        # that every change to the registry invalidates it together with the decisions.
        self.call_cache: dict[tuple[Any, ...], tuple[Any, Any]] = {}
        self._implementations: dict[str, Any] = {}
        self._unavailable: dict[str, str] = {}
        self._plugins_loaded = False
        for spec in specs:
            self._specs[spec.name] = spec

    # ----- registration -------------------------------------------------------------------

    def register(self, spec: BackendSpec, *, replace: bool = False) -> BackendSpec:
        """Add a backend; see :func:`l1backends.register_backend`."""
        if not isinstance(spec, BackendSpec):
            raise TypeError(f"register expects a BackendSpec, got {type(spec).__name__}")
        with self._lock:
            if spec.name in self._specs and not replace:
                raise ValueError(
                    f"a backend named {spec.name!r} is already registered; pass replace=True"
                )
            self._specs[spec.name] = spec
            self._forget(spec.name)
        return spec

    def unregister(self, name: str) -> None:
        """Remove a backend by name."""
        with self._lock:
            self._require(name)
            del self._specs[name]
            self._forget(name)

    def _forget(self, name: str) -> None:
        self._cache.clear()
        self.call_cache.clear()
        self._implementations.pop(name, None)
        self._unavailable.pop(name, None)

    def load_plugins(self) -> None:
        """Register the backends advertised in the ``l1backends.backends`` entry-point group.

        An entry point may name a :class:`BackendSpec`, an iterable of them, or a
        callable returning either.  A plugin that fails is reported by a
        ``RuntimeWarning`` naming it and is otherwise ignored.
        """
        with self._lock:
            if self._plugins_loaded:
                return
            self._plugins_loaded = True
            from importlib.metadata import entry_points

            for entry_point in entry_points(group=PLUGIN_GROUP):
                try:
                    loaded = entry_point.load()
                    if callable(loaded) and not isinstance(loaded, BackendSpec):
                        loaded = loaded()
                    specs = [loaded] if isinstance(loaded, BackendSpec) else list(loaded)
                    for spec in specs:
                        self.register(spec, replace=False)
                except Exception as error:  # a plugin must never break l1backends
                    warnings.warn(
                        f"l1backends plugin {entry_point.name!r} ({entry_point.value}) failed "
                        f"to load and is ignored: {type(error).__name__}: {error}",
                        RuntimeWarning,
                        stacklevel=2,
                    )

    # ----- introspection ------------------------------------------------------------------

    def names(self) -> tuple[str, ...]:
        """Names of all known backends, in registration order."""
        self.load_plugins()
        return tuple(self._specs)

    def spec(self, name: str) -> BackendSpec:
        """The registration of backend ``name``."""
        self.load_plugins()
        return self._require(name)

    def _require(self, name: str) -> BackendSpec:
        try:
            return self._specs[name]
        except (KeyError, TypeError):
            known = ", ".join(repr(n) for n in self._specs)
            raise ValueError(f"unknown backend {name!r}; known backends are {known}") from None

    def info(self) -> list[BackendInfo]:
        """One :class:`BackendInfo` per known backend; probes each one's availability."""
        rows = []
        for name in self.names():
            spec = self._specs[name]
            reason = self.unavailable_reason(name)
            rows.append(
                BackendInfo(
                    name=name,
                    array_types=spec.array_types or (("*",) if spec.generic else ()),
                    available=reason is None,
                    reason=reason,
                    capabilities=spec.capabilities,
                    spec=spec,
                )
            )
        return rows

    def unavailable_reason(self, name: str) -> str | None:
        """Why backend ``name`` cannot run here, or None if it can (loads it on first call)."""
        self._implementation(name)
        return self._unavailable.get(name)

    def implementation(self, name: str) -> Any:
        """The loaded implementation object of backend ``name``.

        Raises
        ------
        TypeError
            If the backend is unavailable; the message gives the reason.
        """
        implementation = self._implementation(name)
        if implementation is None:
            raise TypeError(f"backend {name!r} is unavailable: {self._unavailable[name]}")
        return implementation

    def _implementation(self, name: str) -> Any:
        try:
            return self._implementations[name]
        except KeyError:
            pass
        with self._lock:
            if name in self._implementations:
                return self._implementations[name]
            spec = self.spec(name)
            implementation = None
            try:
                reason = load_object(spec.probe)() if spec.probe else None
                if reason is None:
                    implementation = load_object(spec.implementation)
            except Exception as error:  # the real error is the reason shown to users
                reason = f"{type(error).__name__}: {error}"
            if reason is not None:
                self._unavailable[name] = str(reason)
            self._implementations[name] = implementation
            return implementation

    # ----- dispatch -----------------------------------------------------------------------

    def select(self, arrays: tuple[Any, ...], forced: str | None, operation: str) -> Any:
        """Pick the implementation for these arrays.

        Parameters
        ----------
        arrays : tuple
            The array arguments (input, target and, if given, weight).
        forced : str or None
            A backend name that must be used, or None to dispatch by type.
        operation : str
            The public function's name, for the log.

        Returns
        -------
        object
            The implementation object.

        Raises
        ------
        TypeError
            For non-arrays, arrays of different libraries, or a forced backend that
            cannot take these arrays.
        ValueError
            For an unknown forced backend name.
        """
        types = tuple(map(type, arrays))
        decision = self._cache.get(types)
        if decision is None:
            decision = self._decide(types)
        if forced is None and decision.fast is not None:
            if logger.isEnabledFor(logging.DEBUG):
                skipped = {
                    name: f"unavailable: {reason}" for name, reason in self._unavailable.items()
                }
                self._log(operation, types, decision.fast[0], decision.candidates, skipped)
            return decision.fast[1]
        return self._select_slow(arrays, types, decision, forced, operation)

    def static_choice(self, arrays: tuple[Any, ...]) -> Any | None:
        """The implementation chosen by type alone, or None when instances must be inspected.

        Dispatch to a protocol match (``__cuda_array_interface__``) depends on each
        instance, so such decisions are not static and must not be cached per call signature.
        """
        decision = self._cache.get(tuple(map(type, arrays)))
        return None if decision is None or decision.fast is None else decision.fast[1]

    def _select_slow(
        self,
        arrays: tuple[Any, ...],
        types: tuple[type, ...],
        decision: _Decision,
        forced: str | None,
        operation: str,
    ) -> Any:
        described = ", ".join(type_name(t) for t in types)
        if forced is not None:
            spec = self.spec(forced)
            candidate = next((c for c in decision.candidates if c.spec.name == forced), None)
            reason = None
            if candidate is None:
                reason = f"it does not serve {described}"
            elif candidate.specificity == PROTOCOL:
                reason = self._protocol_missing(candidate.spec, arrays)
            if reason is None:
                reason = self.unavailable_reason(forced)
                reason = None if reason is None else f"it is unavailable: {reason}"
            if reason is not None:
                served = ", ".join(spec.array_types + spec.protocols) or "Array-API arrays"
                raise TypeError(
                    f"backend {forced!r} cannot take these arrays: {reason} (it serves {served})"
                )
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("%s: ran %r for (%s): forced", operation, forced, described)
            return self.implementation(forced)

        skipped: dict[str, str] = {}
        for candidate in decision.candidates:
            name = candidate.spec.name
            reason = None
            if candidate.specificity == PROTOCOL:
                reason = self._protocol_missing(candidate.spec, arrays)
            if reason is None:
                reason = self.unavailable_reason(name)
                if reason is not None:
                    reason = f"unavailable: {reason}"
            if reason is not None:
                skipped[name] = reason
                continue
            if logger.isEnabledFor(logging.DEBUG):
                self._log(operation, types, name, decision.candidates, skipped)
            return self.implementation(name)
        details = "; ".join(f"{name!r}: {why}" for name, why in skipped.items())
        raise TypeError(
            f"no available backend can take ({described})" + (f"; {details}" if details else "")
        )

    @staticmethod
    def _protocol_missing(spec: BackendSpec, arrays: tuple[Any, ...]) -> str | None:
        for array in arrays:
            if not any(hasattr(array, attribute) for attribute in spec.protocols):
                return f"{type_name(type(array))} does not expose {' or '.join(spec.protocols)}"
        return None

    def _decide(self, types: tuple[type, ...]) -> _Decision:
        self.load_plugins()
        for cls in types:
            if not any(spec.match(cls) is not None for spec in self._specs.values()):
                raise TypeError(
                    f"expected arrays, got {cls.__name__} ({type_name(cls)}); convert it "
                    "first, for example with np.asarray(...)"
                )
        families = {}
        for cls in types:
            families.setdefault(array_family(cls), cls)
        if len(families) > 1:
            raise TypeError(
                "arrays from different libraries cannot be mixed: got "
                + " and ".join(type_name(cls) for cls in families.values())
                + "; l1backends never moves data between namespaces or devices, so "
                "convert them to one library first"
            )
        matched = []
        for index, spec in enumerate(self._specs.values()):
            ranks = [spec.match(cls) for cls in types]
            if any(rank is None for rank in ranks):
                continue
            level, closeness = min(ranks)  # a backend is as specific as its weakest match
            matched.append(((-level, -closeness, -spec.priority, index), _Candidate(spec, level)))
        matched.sort(key=lambda item: item[0])
        ordered = _apply_preferences([candidate for _, candidate in matched])
        decision = _Decision(tuple(ordered))
        # The fast path may skip candidates that are unavailable (availability is probed
        # once and never changes), but not a protocol match, which is checked per call.
        for candidate in ordered:
            if candidate.specificity == PROTOCOL:
                break
            implementation = self._implementation(candidate.spec.name)
            if implementation is not None:
                decision.fast = (candidate.spec.name, implementation)
                break
        with self._lock:
            self._cache[types] = decision
        return decision

    @staticmethod
    def _log(
        operation: str,
        types: tuple[type, ...],
        chosen: str,
        candidates: tuple[_Candidate, ...],
        skipped: dict[str, str],
    ) -> None:
        described = ", ".join(type_name(t) for t in types)
        why = next(_MATCH_NAMES[c.specificity] for c in candidates if c.spec.name == chosen)
        others = []
        passed = True
        for candidate in candidates:
            name = candidate.spec.name
            if name == chosen:
                passed = False
                continue
            if name in skipped:
                others.append(f"{name!r} skipped ({skipped[name]})")
            elif not passed:
                others.append(
                    f"{name!r} not tried ({_MATCH_NAMES[candidate.specificity]} match ranks lower)"
                )
        logger.debug(
            "%s: ran %r for (%s): %s match%s",
            operation,
            chosen,
            described,
            why,
            "; " + "; ".join(others) if others else "",
        )

    def clear_cache(self) -> None:
        """Forget cached dispatch decisions and loaded implementations (for tests)."""
        with self._lock:
            self._cache.clear()
            self.call_cache.clear()
            self._implementations.clear()
            self._unavailable.clear()


def _apply_preferences(candidates: list[_Candidate]) -> list[_Candidate]:
    """Reorder so that every declared ``before``/``after`` preference holds, else keep order."""
    names = [c.spec.name for c in candidates]
    must_precede: dict[str, set[str]] = {name: set() for name in names}
    for candidate in candidates:
        for other in candidate.spec.before:
            if other in must_precede:
                must_precede[other].add(candidate.spec.name)
        for other in candidate.spec.after:
            if other in must_precede:
                must_precede[candidate.spec.name].add(other)
    by_name = {c.spec.name: c for c in candidates}
    ordered: list[_Candidate] = []
    remaining = list(names)
    while remaining:
        ready = next(
            (n for n in remaining if not (must_precede[n] & set(remaining))), remaining[0]
        )  # a cycle of preferences falls back to the specificity order
        ordered.append(by_name[ready])
        remaining.remove(ready)
    return ordered


_ALL_ULPS_06 = {"float16": 0.6, "float32": 0.6, "float64": 2.0, "complex64": 0.6, "complex128": 2.0}

_BUILTIN = (
    BackendSpec(
        name="numba-cpu",
        implementation="l1backends._backends.numba_cpu:backend",
        probe="l1backends._backends.numba_cpu:probe",
        array_types=("numpy:ndarray",),
        capabilities=Capabilities(ulps=_ALL_ULPS_06, deterministic=True),
        test_adapters=("l1backends.conformance.adapters:NUMPY",),
    ),
    BackendSpec(
        name="numba-cuda",
        implementation="l1backends._backends.numba_cuda:backend",
        probe="l1backends._backends.numba_cuda:probe",
        array_types=(
            "numba.cuda.cudadrv.devicearray:DeviceNDArray",
            "numba.cuda.simulator.cudadrv.devicearray:FakeCUDAArray",
        ),
        protocols=("__cuda_array_interface__",),
        capabilities=Capabilities(ulps=_ALL_ULPS_06, deterministic=True),
        test_adapters=("l1backends.conformance.adapters:NUMBA_CUDA",),
    ),
    BackendSpec(
        name="cupy",
        implementation="l1backends._backends.cupy:backend",
        probe="l1backends._backends.cupy:probe",
        array_types=("cupy:ndarray",),
        capabilities=Capabilities(ulps=_ALL_ULPS_06, deterministic=True),
        test_adapters=("l1backends.conformance.adapters:CUPY",),
    ),
    BackendSpec(
        name="dask",
        implementation="l1backends._backends.dask:backend",
        probe="l1backends._backends.dask:probe",
        array_types=("dask.array.core:Array",),
        capabilities=Capabilities(ulps=_ALL_ULPS_06, deterministic=True),
        test_adapters=("l1backends.conformance.adapters:DASK",),
    ),
    BackendSpec(
        name="array-api",
        implementation="l1backends._backends.array_api:backend",
        generic=True,
        capabilities=Capabilities(ulps=_ALL_ULPS_06, deterministic=True),
        test_adapters=(
            "l1backends.conformance.adapters:NUMPY",
            "l1backends.conformance.adapters:ARRAY_API_STRICT",
            "l1backends.conformance.adapters:TORCH",
            "l1backends.conformance.adapters:JAX",
        ),
    ),
)

registry = Registry(_BUILTIN)
