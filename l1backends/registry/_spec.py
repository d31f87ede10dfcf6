"""What the registry knows of a backend without importing it: specs, capabilities, type matching.

Array types are named by ``"module:qualname"`` strings and resolved only when their
module is already in ``sys.modules``: a library that is not imported is never
imported to test a type.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..semantics import SUPPORTED_DTYPES

__all__ = [
    "EXACT",
    "GENERIC",
    "MATCH_NAMES",
    "PROTOCOL",
    "SUBCLASS",
    "BackendInfo",
    "BackendSpec",
    "Capabilities",
    "array_family",
    "type_name",
]

# Specificity of a match, highest first.
EXACT, SUBCLASS, PROTOCOL, GENERIC = 3, 2, 1, 0
MATCH_NAMES = {EXACT: "exact type", SUBCLASS: "subclass", PROTOCOL: "protocol", GENERIC: "generic"}

# Families of array types that can never be mixed in one call.  The first component of a
# type's module names its library; aliases fold libraries that share one array type.
_FAMILY_ALIASES = {"jaxlib": "jax", "numba_cuda": "numba"}
# Libraries whose arrays array-api-compat wraps although they lack __array_namespace__.
_ARRAY_API_FAMILIES = frozenset({"numpy", "cupy", "torch", "jax", "dask", "ndonnx", "sparse"})


def type_name(cls: type) -> str:
    """Return ``"module:qualname"`` for a type."""
    return f"{cls.__module__}:{cls.__qualname__}"


def array_family(cls: type) -> str:
    """Return the library an array type comes from ("numpy", "cupy", "torch", ...)."""
    top = cls.__module__.partition(".")[0]
    return _FAMILY_ALIASES.get(top, top)


def _loaded_type(reference: str) -> type | None:
    """Resolve ``"module:qualname"`` only if its module is already imported."""
    module_name, _, qualname = reference.partition(":")
    obj: Any = sys.modules.get(module_name)
    for part in qualname.split("."):
        if obj is None:
            return None
        obj = getattr(obj, part, None)
    return obj if isinstance(obj, type) else None


def _is_array_api_type(cls: type) -> bool:
    """Whether instances of ``cls`` are arrays of some Array-API namespace."""
    return hasattr(cls, "__array_namespace__") or array_family(cls) in _ARRAY_API_FAMILIES


def _reference(owner: str, role: str, value: object, separator: str = ":") -> str:
    """Check that ``value`` is a ``"module:attribute"`` string and return it."""
    if not isinstance(value, str):
        raise TypeError(f"{owner}: {role} must be a 'module:attribute' string, got {value!r}")
    module, _, attribute = value.partition(separator)
    if not module or not attribute:
        raise ValueError(f"{owner}: {role} must be 'module:attribute', got {value!r}")
    return value


def _strings(owner: str, role: str, value: object) -> tuple[str, ...]:
    """A tuple of strings from one string or an iterable of them."""
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, Iterable):
        raise TypeError(f"{owner}: {role} must be a string or strings, got {value!r}")
    items = []
    for item in value:
        if not isinstance(item, str) or not item:
            raise TypeError(f"{owner}: {role} must hold non-empty strings, got {item!r}")
        items.append(item)
    return tuple(items)


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
    correctly_rounded : tuple of str
        Dtypes whose losses and gradients are the exact values rounded once (their ulp
        bound is then at most 0.5): every two backends that claim a dtype must agree
        bit for bit on it, and the conformance suite compares them.
    """

    dtypes: tuple[str, ...] = SUPPORTED_DTYPES
    ulps: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType(dict.fromkeys(SUPPORTED_DTYPES, 2.0))
    )
    deterministic: bool = True
    correctly_rounded: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        dtypes = _strings("capabilities", "dtypes", self.dtypes)
        unknown = [name for name in dtypes if name not in SUPPORTED_DTYPES]
        if unknown:
            raise ValueError(
                f"capabilities name unsupported dtypes {unknown}; choose from {SUPPORTED_DTYPES}"
            )
        if not isinstance(self.ulps, Mapping):
            raise TypeError(f"capabilities: ulps must map dtype names to bounds, got {self.ulps!r}")
        for name, bound in self.ulps.items():
            if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not bound > 0:
                raise ValueError(
                    f"capabilities: the ulp bound of {name} must be > 0, got {bound!r}"
                )
        if not isinstance(self.deterministic, bool):
            raise TypeError(
                f"capabilities: deterministic must be a bool, got {self.deterministic!r}"
            )
        object.__setattr__(self, "dtypes", dtypes)
        object.__setattr__(self, "ulps", MappingProxyType(dict(self.ulps)))
        missing = [name for name in dtypes if name not in self.ulps]
        if missing:
            raise ValueError(f"capabilities declare no ulp bound for {missing}")
        if not all(math.isfinite(self.ulps[name]) for name in dtypes):
            raise ValueError("capabilities: every declared dtype needs a finite ulp bound")
        rounded = _strings("capabilities", "correctly_rounded", self.correctly_rounded)
        loose = [name for name in rounded if name not in dtypes or self.ulps[name] > 0.5]
        if loose:
            raise ValueError(
                f"capabilities claim correct rounding for {loose}, which they must declare "
                "with an ulp bound of at most 0.5"
            )
        object.__setattr__(self, "correctly_rounded", rounded)


@dataclass(frozen=True)
class BackendSpec:
    """How the registry knows a backend, without importing it.

    Every field is checked when the spec is made: a wrong type is a ``TypeError``, a
    malformed value a ``ValueError``, both naming the field and the value.

    Attributes
    ----------
    name : str
        The backend's name, as used by ``backend=`` and ``use_backend``.
    implementation : str
        ``"module:attribute"`` of an object following the :class:`~l1backends.registry.Backend`
        protocol (``loss``, ``grad`` and ``loss_and_grad``; optionally ``can_run`` and
        ``partials``).
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
        arrays this backend serves (for plugins; the suite knows the built-in ones).
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
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a backend needs a non-empty name, got {self.name!r}")
        owner = f"backend {self.name!r}"
        _reference(owner, "implementation", self.implementation)
        if self.probe is not None:
            _reference(owner, "probe", self.probe)
        for attribute in ("array_types", "protocols", "before", "after", "test_adapters"):
            object.__setattr__(
                self, attribute, _strings(owner, attribute, getattr(self, attribute))
            )
        for reference in self.array_types:
            _reference(owner, "each of array_types", reference)
        for reference in self.test_adapters:
            _reference(owner, "each of test_adapters", reference)
        if not isinstance(self.generic, bool):
            raise TypeError(f"{owner}: generic must be a bool, got {self.generic!r}")
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise TypeError(f"{owner}: priority must be an int, got {self.priority!r}")
        if not isinstance(self.capabilities, Capabilities):
            raise TypeError(
                f"{owner}: capabilities must be a Capabilities, got {self.capabilities!r}"
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
        resolved = [(reference, _loaded_type(reference)) for reference in self.array_types]
        for reference, found in resolved:
            if found is cls or (found is None and reference == type_name(cls)):
                return EXACT, 0
        best = None
        for reference, found in resolved:
            for distance, base in enumerate(cls.__mro__[1:], start=1):
                if base is found or (found is None and reference == type_name(base)):
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
