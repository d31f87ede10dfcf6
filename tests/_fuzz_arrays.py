"""Arrays as NumPy users really hold them, built from a recipe, for the fuzzer.

A :class:`Recipe` says how an array's logical values lie in memory (axis order,
steps, reversed and zero-stride axes, byte order, a byte offset that may leave it
misaligned), what holds the memory (an ndarray, a memory-mapped file, a
``bytearray`` or an immutable ``bytes`` object) and what the array is wrapped in
(``np.matrix``, a masked array, ndarray subclasses).  :func:`realize` builds it;
its ``repr`` is valid Python, so a failing case prints as one line that rebuilds
the very same arrays.  Skipped memory is filled with the byte 0x55, a value no
correct kernel reads.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from itertools import count
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

__all__ = [
    "CONTAINERS",
    "WRAPPERS",
    "Hostile",
    "Recipe",
    "Subclass",
    "constant_along",
    "dyadic_values",
    "literal",
    "plain_values",
    "realize",
]

CONTAINERS = ("ndarray", "memmap", "bytearray", "bytes")
WRAPPERS = ("none", "matrix", "masked", "subclass", "hostile")
POISON = 0x55
_files = count()


class Subclass(np.ndarray):
    """An ndarray subclass that changes nothing."""


class Hostile(np.ndarray):
    """A subclass whose overrides give wrong answers to code that calls them.

    ``reshape`` keeps a unit axis (once crashed the process after a plain call of
    the same shape), ``ravel`` reverses, ``astype``/``copy`` shift every value, and
    NumPy functions and ufuncs are not implemented for it, as for a strict
    subclass.  Code that reads it as its base-class view sees none of this.
    """

    def reshape(self, *shape: Any, **options: Any) -> np.ndarray:  # type: ignore[override]
        return np.ndarray.reshape(self, *shape, **options)[..., None]

    def ravel(self, order: Any = "C") -> np.ndarray:  # type: ignore[override]
        return np.ndarray.ravel(self, order)[::-1]

    def astype(self, *args: Any, **options: Any) -> np.ndarray:  # type: ignore[override]
        converted = np.ndarray.astype(self.view(np.ndarray), *args, **options)
        return converted + converted.dtype.type(1)

    def copy(self, order: Any = "C") -> np.ndarray:  # type: ignore[override]
        return self.astype(self.dtype)

    def __array_function__(self, *args: Any, **options: Any) -> Any:
        return NotImplemented

    def __array_ufunc__(self, *args: Any, **options: Any) -> Any:
        return NotImplemented


_WRAPPER_TYPES = {"subclass": Subclass, "hostile": Hostile, "matrix": np.matrix}


@dataclass(frozen=True)
class Recipe:
    """How one array is laid out and held.

    Attributes
    ----------
    steps : tuple of int
        Per axis: the step between elements in memory (1 is dense; negative is
        reversed; 0 is a zero stride, for values constant along the axis).
    order : tuple of int
        The axes in memory order, outermost first (C order is ``0, 1, ...``).
    swapped : bool
        Non-native byte order.
    offset : int
        Bytes before the first element in its buffer (not a multiple of the
        itemsize: misaligned).
    container : str
        One of :data:`CONTAINERS`; ``bytes`` is read-only by nature.
    wrapper : str
        One of :data:`WRAPPERS`.
    read_only : bool
        Whether the array is made read-only.
    mask_seed : int
        Which elements a masked wrapper masks.
    """

    steps: tuple[int, ...] = ()
    order: tuple[int, ...] = ()
    swapped: bool = False
    offset: int = 0
    container: str = "ndarray"
    wrapper: str = "none"
    read_only: bool = False
    mask_seed: int = 0

    @property
    def plain(self) -> bool:
        """Whether the recipe makes a native, C-contiguous, writeable plain ndarray."""
        return (
            all(s == 1 for s in self.steps)
            and list(self.order) == sorted(self.order)
            and not self.swapped
            and self.offset == 0
            and self.container == "ndarray"
            and self.wrapper == "none"
            and not self.read_only
        )


def realize(values: np.ndarray, recipe: Recipe, directory: str | None = None) -> Any:
    """Build an array holding ``values`` as ``recipe`` says.

    Parameters
    ----------
    values : numpy.ndarray
        The logical values, in native byte order; constant along zero-step axes.
    recipe : Recipe
        The layout, container and wrapper.
    directory : str, optional
        Where memory-mapped files go (a fresh temporary directory by default).

    Returns
    -------
    numpy.ndarray
        An array (or subclass instance) equal to ``values``.
    """
    ndim = values.ndim
    steps = recipe.steps or (1,) * ndim
    order = recipe.order or tuple(range(ndim))
    dtype = values.dtype.newbyteorder("S") if recipe.swapped else values.dtype
    if dtype.hasobject:  # pointers: no raw buffers for these
        return values.astype(dtype)
    extents = [
        min(n, 1) if s == 0 else n * abs(s) for n, s in zip(values.shape, steps, strict=True)
    ]
    memory_shape = tuple(extents[axis] for axis in order)
    size = math.prod(memory_shape)
    stored = values[tuple(slice(0, 1) if s == 0 else slice(None) for s in steps)]
    container = recipe.container if size else "ndarray"

    def view(parent: np.ndarray) -> np.ndarray:
        logical = parent.transpose(np.argsort(order))
        index = tuple(slice(None, None, s) if s else slice(0, 1) for s in steps)
        return logical[(*index, Ellipsis)]  # the Ellipsis keeps a 0-d result an array

    if container == "memmap":
        path = os.path.join(directory or tempfile.mkdtemp(), f"fuzz-{next(_files)}.bin")
        with open(path, "wb") as handle:
            handle.write(bytes([POISON]) * (recipe.offset + size * dtype.itemsize))
        parent = np.memmap(path, dtype, "r+", recipe.offset, memory_shape)
        view(parent)[...] = stored
        parent.flush()
        if recipe.read_only:
            parent = np.memmap(path, dtype, "r", recipe.offset, memory_shape)
    elif container == "ndarray":
        raw = np.full(recipe.offset + size * dtype.itemsize, POISON, np.uint8)
        parent = raw[recipe.offset :].view(dtype).reshape(memory_shape)
        view(parent)[...] = stored
    else:
        buffer = bytearray([POISON]) * (recipe.offset + size * dtype.itemsize)
        parent = np.frombuffer(buffer, dtype, size, recipe.offset).reshape(memory_shape)
        view(parent)[...] = stored
        if container == "bytes":
            parent = np.frombuffer(bytes(buffer), dtype, size, recipe.offset)
            parent = parent.reshape(memory_shape)
    array = view(parent)
    if 0 in steps:
        strides = tuple(0 if s == 0 else st for s, st in zip(steps, array.strides, strict=True))
        array = as_strided(array, values.shape, strides, subok=True, writeable=False)
    if recipe.read_only and array.flags.writeable:
        array.flags.writeable = False
    if recipe.wrapper == "masked":
        mask = np.random.default_rng(recipe.mask_seed).random(values.shape) < 0.3
        return np.ma.MaskedArray(array, mask=mask, copy=False)
    if recipe.wrapper in _WRAPPER_TYPES:
        array = array.view(_WRAPPER_TYPES[recipe.wrapper])
    return array


def constant_along(values: np.ndarray, steps: tuple[int, ...]) -> np.ndarray:
    """``values`` made constant along the zero-step axes (a zero stride can hold nothing else)."""
    if 0 not in steps:
        return values
    first = values[tuple(slice(0, 1) if s == 0 else slice(None) for s in steps)]
    return np.array(np.broadcast_to(first, values.shape))


def plain_values(array: Any) -> np.ndarray:
    """The values an array built by :func:`realize` holds, as a native plain ndarray."""
    data = array.data if isinstance(array, np.ma.MaskedArray) else array
    data = data.view(np.ndarray)
    return np.array(data, dtype=data.dtype.newbyteorder("="))


def dyadic_values(
    seed: int, shape: tuple[int, ...], dtype: str, specials: bool, nonnegative: bool = False
) -> np.ndarray:
    """Multiples of 1/4 in [-128, 128) (integers for integer dtypes), NaN and inf if ``specials``.

    Every sum of up to 2**24 products of two such values is exact in float64, so
    references of large arrays need no fractions.  ``nonnegative`` keeps them >= 0.
    """
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        low, high = max(0 if nonnegative else -100, int(info.min)), min(100, int(info.max))
        return rng.integers(low, high, size=shape, endpoint=True).astype(dtype)
    values = np.array(rng.integers(0 if nonnegative else -512, 512, size=shape), np.float64)
    values /= 4.0  # in place: a 0-d array stays an array
    if specials:
        where = rng.random(shape)
        values[where < 1e-4] = np.nan
        values[(where >= 1e-4) & (where < 2e-4)] = np.inf
        values[(where >= 2e-4) & (where < 3e-4)] = -np.inf
    return values.astype(dtype)


def _scalar(value: Any) -> str:
    if isinstance(value, (complex, np.complexfloating)):
        return f"complex({_scalar(value.real)}, {_scalar(value.imag)})"
    if isinstance(value, (bool, np.bool_)):
        return repr(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, str):
        return repr(value)
    value = float(value)
    return f"float('{value}')" if not math.isfinite(value) else repr(value)


def literal(values: np.ndarray) -> str:
    """NumPy source that rebuilds ``values`` exactly."""
    items = ", ".join(_scalar(v) for v in values.ravel().tolist())
    source = f"np.asarray([{items}], dtype={values.dtype.str!r})"
    return source if values.ndim == 1 else f"{source}.reshape({values.shape!r})"
