"""The dispatch registry: which backend serves which arrays.

Backends are known by lazy ``"module:attribute"`` strings, and array types by
``"module:qualname"`` strings that are resolved only when their module is
already in ``sys.modules``: a library that is not imported is never imported to
test a type.  Candidates are ordered by specificity (exact type, then subclass,
then a protocol such as ``__cuda_array_interface__``, then the generic
Array-API fallback), then by declared ``before``/``after`` preferences and
``priority``.  The ordering is cached per tuple of argument types.

The built-in backends are registered exactly as plugins are: by references to the
``BackendSpec`` each backend declares beside its implementation, loaded on first
use.  Every change to the registry bumps :attr:`Registry.version`, which callers'
caches compare against.

Every dispatch decision is logged at DEBUG on the ``"l1backends.dispatch"`` logger.
"""

from __future__ import annotations

import importlib
import logging
import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .._typing import Array
from ..semantics import Plan
from ._protocol import Backend, ChunkBackend, Partials
from ._spec import (
    EXACT,
    GENERIC,
    MATCH_NAMES,
    PROTOCOL,
    SUBCLASS,
    BackendInfo,
    BackendSpec,
    Capabilities,
    array_family,
    type_name,
)

__all__ = [
    "BUILTIN_SPECS",
    "EXACT",
    "GENERIC",
    "PLUGIN_GROUP",
    "PROTOCOL",
    "SUBCLASS",
    "Backend",
    "BackendInfo",
    "BackendSpec",
    "Capabilities",
    "ChunkBackend",
    "Partials",
    "Registry",
    "array_family",
    "load_object",
    "registry",
    "type_name",
]

PLUGIN_GROUP = "l1backends.backends"
logger = logging.getLogger("l1backends.dispatch")

#: The built-in backends, in registration order: each names the ``BackendSpec`` its backend
#: declares beside its implementation, loaded on first use like a plugin's entry point.
BUILTIN_SPECS = (
    "l1backends._backends.numba_cpu:SPEC",
    "l1backends._backends.numba_cuda:SPEC",
    "l1backends._backends.cupy:SPEC",
    "l1backends._backends.dask:SPEC",
    "l1backends._backends.torch:SPEC",
    "l1backends._backends.jax:SPEC",
    "l1backends._backends.array_api:SPEC",
)


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


def _specs_of(loaded: Any) -> list[BackendSpec]:
    """The specs an entry point names: a spec, an iterable of them, or a callable giving either."""
    if callable(loaded) and not isinstance(loaded, BackendSpec):
        loaded = loaded()
    specs = [loaded] if isinstance(loaded, BackendSpec) else list(loaded)
    for spec in specs:
        if not isinstance(spec, BackendSpec):
            raise TypeError(f"expected BackendSpec objects, got {spec!r}")
    return specs


def declined(implementation: Any, plan: Plan | None) -> str | None:
    """Why ``implementation`` declines ``plan`` (its ``can_run``), or None when it serves it."""
    can_run = getattr(implementation, "can_run", None)
    if plan is None or can_run is None:
        return None
    return can_run(plan)


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
        Backends to register at once, in order.
    builtins : Iterable of str
        ``"module:attribute"`` references to specs (or callables returning them),
        registered on first use before the plugins.
    """

    def __init__(self, specs: Iterable[BackendSpec] = (), builtins: Iterable[str] = ()) -> None:
        self._specs: dict[str, BackendSpec] = {}
        # Guards registration and the caches; never held while a probe or a plugin runs.
        self._lock = threading.RLock()
        self._cache: dict[tuple[type, ...], _Decision] = {}
        self._implementations: dict[str, Any] = {}
        self._unavailable: dict[str, str] = {}
        self._probe_locks: dict[str, threading.Lock] = {}
        self._builtins = tuple(builtins)
        self._loaded = False
        self._loading = threading.Lock()
        self._version = 0
        for spec in specs:
            self._specs[spec.name] = spec

    @property
    def version(self) -> int:
        """A counter bumped by every registration change: callers' caches compare it."""
        return self._version

    # ----- registration -------------------------------------------------------------------

    def register(self, spec: BackendSpec, *, replace: bool = False) -> BackendSpec:
        """Add a backend; see :func:`l1backends.register_backend`."""
        if not isinstance(spec, BackendSpec):
            raise TypeError(f"register expects a BackendSpec, got {type(spec).__name__}")
        self.load_plugins()
        self._add(spec, replace)
        return spec

    def _add(self, spec: BackendSpec, replace: bool) -> None:
        with self._lock:
            if spec.name in self._specs and not replace:
                raise ValueError(
                    f"a backend named {spec.name!r} is already registered; pass replace=True"
                )
            self._specs[spec.name] = spec
            self._forget(spec.name)

    def unregister(self, name: str) -> None:
        """Remove a backend by name."""
        self.load_plugins()
        with self._lock:
            self._require(name)
            del self._specs[name]
            self._forget(name)

    def _forget(self, name: str) -> None:
        self._cache.clear()
        self._implementations.pop(name, None)
        self._unavailable.pop(name, None)
        self._version += 1

    def load_plugins(self) -> None:
        """Register the built-in backends, then those of the ``l1backends.backends`` entry points.

        An entry point may name a :class:`BackendSpec`, an iterable of them, or a
        callable returning either.  A plugin that fails to load is reported by a
        ``RuntimeWarning`` naming it and is otherwise ignored; the others still load
        (under ``-W error`` the first failure is raised once every plugin was tried).
        """
        if self._loaded:
            return
        with self._loading:
            if self._loaded:
                return
            for reference in self._builtins:
                for spec in _specs_of(load_object(reference)):
                    self._add(spec, replace=False)
            failures = []
            from importlib.metadata import entry_points

            for entry_point in entry_points(group=PLUGIN_GROUP):
                try:
                    for spec in _specs_of(entry_point.load()):
                        self._add(spec, replace=False)
                except Exception as error:  # a plugin must never break l1backends
                    failures.append(
                        f"l1backends plugin {entry_point.name!r} ({entry_point.value}) failed "
                        f"to load and is ignored: {type(error).__name__}: {error}"
                    )
            self._loaded = True
        raised: list[Warning] = []
        for message in failures:
            try:
                warnings.warn(message, RuntimeWarning, stacklevel=3)
            except Warning as error:  # warnings turned into errors: report each, then raise
                raised.append(error)
        if raised:  # one error naming every failure (add_note needs Python 3.11)
            raise type(raised[0])("; ".join(str(error) for error in raised))

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
        spec = self.spec(name)
        with self._lock:
            probe_lock = self._probe_locks.setdefault(name, threading.Lock())
        # Only callers that need this very backend wait for its probe (a slow driver, say).
        with probe_lock:
            if name in self._implementations:
                return self._implementations[name]
            implementation = None
            try:
                reason = load_object(spec.probe)() if spec.probe else None
                if reason is None:
                    implementation = load_object(spec.implementation)
            except Exception as error:  # the real error is the reason shown to users
                reason = f"{type(error).__name__}: {error}"
            with self._lock:
                if self._specs.get(name) is not spec:
                    return implementation  # re-registered meanwhile: do not cache
                if reason is not None:
                    self._unavailable[name] = str(reason)
                self._implementations[name] = implementation
            return implementation

    # ----- dispatch -----------------------------------------------------------------------

    def select(
        self,
        arrays: tuple[Array, ...],
        forced: str | None,
        operation: str,
        plan: Plan | None = None,
    ) -> Any:
        """Pick the implementation for these arrays.

        Parameters
        ----------
        arrays : tuple
            The array arguments (input, target and, if given, weight).
        forced : str or None
            A backend name that must be used, or None to dispatch by type.
        operation : str
            The public function's name, for the log.
        plan : Plan, optional
            The call's plan: a backend whose ``can_run`` declines it is skipped.

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
        decision = self.decision(types)
        if forced is None and decision.fast is not None:
            name, implementation = decision.fast
            if declined(implementation, plan) is None:
                if logger.isEnabledFor(logging.DEBUG):
                    skipped = {n: f"unavailable: {why}" for n, why in self._unavailable.items()}
                    self._log(operation, types, name, decision.candidates, skipped)
                return implementation
        return self._select_slow(arrays, types, decision, forced, operation, plan)

    def decision(self, types: tuple[type, ...]) -> _Decision:
        """The ordered candidates for these argument types (cached).

        Raises
        ------
        TypeError
            For non-arrays or arrays of different libraries.
        """
        decision = self._cache.get(types)
        return self._decide(types) if decision is None else decision

    def static_choice(self, arrays: tuple[Array, ...]) -> Any | None:
        """The implementation chosen by type alone, or None when instances must be inspected.

        Dispatch to a protocol match (``__cuda_array_interface__``) depends on each
        instance, so such decisions are not static and must not be cached per call signature.
        """
        decision = self._cache.get(tuple(map(type, arrays)))
        return None if decision is None or decision.fast is None else decision.fast[1]

    def _select_slow(
        self,
        arrays: tuple[Array, ...],
        types: tuple[type, ...],
        decision: _Decision,
        forced: str | None,
        operation: str,
        plan: Plan | None,
    ) -> Any:
        described = ", ".join(type_name(t) for t in types)
        if forced is not None:
            spec = self.spec(forced)
            candidate = next((c for c in decision.candidates if c.spec.name == forced), None)
            reason = None
            if candidate is None:
                reason = f"it does not serve {described}"
            else:
                reason = self._why_not(candidate, arrays, plan)
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
            reason = self._why_not(candidate, arrays, plan)
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

    def _why_not(
        self, candidate: _Candidate, arrays: tuple[Array, ...], plan: Plan | None
    ) -> str | None:
        """Why ``candidate`` cannot take this call, or None when it can."""
        if candidate.specificity == PROTOCOL:
            reason = self._protocol_missing(candidate.spec, arrays)
            if reason is not None:
                return reason
        reason = self.unavailable_reason(candidate.spec.name)
        if reason is not None:
            return f"it is unavailable: {reason}"
        reason = declined(self.implementation(candidate.spec.name), plan)
        return None if reason is None else f"it declines this call: {reason}"

    @staticmethod
    def _protocol_missing(spec: BackendSpec, arrays: tuple[Array, ...]) -> str | None:
        for array in arrays:
            if not any(hasattr(array, attribute) for attribute in spec.protocols):
                return f"{type_name(type(array))} does not expose {' or '.join(spec.protocols)}"
        return None

    def _decide(self, types: tuple[type, ...]) -> _Decision:
        self.load_plugins()
        specs = list(self._specs.values())
        for cls in types:
            if not any(spec.match(cls) is not None for spec in specs):
                raise TypeError(
                    f"expected arrays, got {cls.__name__} ({type_name(cls)}); convert it "
                    "first, for example with np.asarray(...)"
                )
        families: dict[str, type] = {}
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
        for index, spec in enumerate(specs):
            ranks = [spec.match(cls) for cls in types]
            if any(rank is None for rank in ranks):
                continue
            level, closeness = min(r for r in ranks if r is not None)  # the weakest match
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
            if all(self._specs.get(s.name) is s for s in specs):
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
        why = next(MATCH_NAMES[c.specificity] for c in candidates if c.spec.name == chosen)
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
                    f"{name!r} not tried ({MATCH_NAMES[candidate.specificity]} match ranks lower)"
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
            self._implementations.clear()
            self._unavailable.clear()
            self._version += 1


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


registry = Registry(builtins=BUILTIN_SPECS)
