"""The fuzzer's cases: one public call on arrays built by recipes, and the strategies drawing them.

A :class:`FuzzCase` holds the logical values of every operand and the
:class:`~_fuzz_arrays.Recipe` that lays each out in memory, the call's options,
and what must come of it: the exact result, or the documented error type that
the case was built to provoke.  :meth:`FuzzCase.repro` is one line of Python
that makes the call again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from _fuzz_arrays import (
    Recipe,
    dyadic_values,
    literal,
    plain_values,
    realize,
)
from _fuzz_exact import rounded_int

from l1backends.semantics import Plan, make_plan, promote_dtypes, real_dtype

__all__ = ["UNSET", "FuzzCase", "Operand"]

UNSET: Any = type("Unset", (), {"__repr__": lambda self: "UNSET"})()
FUNCTIONS = ("l1_loss", "l1_loss_grad", "l1_loss_and_grad")


@dataclass
class Operand:
    """One array argument: its logical values and how they are laid out.

    ``seed`` is set for large dyadic values, so that the reproduction rebuilds
    them from the seed instead of printing millions of literals.
    """

    values: np.ndarray
    recipe: Recipe = field(default_factory=Recipe)
    seed: int | None = None
    specials: bool = False
    nonnegative: bool = False

    def build(self, directory: str | None) -> Any:
        array = realize(self.values, self.recipe, directory)
        held = plain_values(array)
        if not _same(held, self.values):  # a bug of the builder, not of l1backends
            raise AssertionError(f"realize() built {held!r} for {self.values!r}")
        return array

    def plain(self) -> np.ndarray:
        """The same values as a native, C-contiguous, writeable plain ndarray."""
        return np.array(self.values, order="C")

    def source(self) -> str:
        if self.seed is not None:
            values = (
                f"dyadic_values({self.seed}, {self.values.shape!r}, "
                f"{self.values.dtype.name!r}, {self.specials}, {self.nonnegative})"
            )
            if 0 in self.recipe.steps:
                values = f"constant_along({values}, {self.recipe.steps!r})"
        else:
            values = literal(self.values)
        return values if self.recipe.plain else f"realize({values}, {self.recipe!r})"


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


@dataclass
class FuzzCase:
    """One call of the public API.

    Attributes
    ----------
    function : str
        "l1_loss", "l1_loss_grad" or "l1_loss_and_grad".
    input, target : Operand
        The arrays.
    reduction : object
        The ``reduction`` argument (a bad one in error cases).
    weight : Operand or None
        The weight.
    axis, broadcast : object
        The arguments, or :data:`UNSET` to leave them out.
    grad_output : object
        None, a Python or NumPy scalar, or an :class:`Operand`.
    error : type or None
        The documented error type the case was built to raise.
    error_from_layout : bool
        Whether only the recipes cause the error (a masked array): the same values
        as plain arrays are then a valid call.
    large : bool
        Whether the values are dyadic (exact references in float64).
    """

    function: str
    input: Operand
    target: Operand
    reduction: Any = "mean"
    weight: Operand | None = None
    axis: Any = UNSET
    broadcast: Any = UNSET
    grad_output: Any = None
    error: type[Exception] | None = None
    error_from_layout: bool = False
    large: bool = False

    @property
    def wants(self) -> tuple[bool, bool]:
        """Whether the call returns a loss, and a gradient."""
        return self.function != "l1_loss_grad", self.function != "l1_loss"

    def operands(self) -> dict[str, Operand]:
        found = {"input": self.input, "target": self.target}
        if self.weight is not None:
            found["weight"] = self.weight
        if isinstance(self.grad_output, Operand):
            found["grad_output"] = self.grad_output
        return found

    def arguments(self, arrays: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Positional and keyword arguments of the call, with ``arrays`` per role."""
        options: dict[str, Any] = {}
        if "weight" in arrays:
            options["weight"] = arrays["weight"]
        if self.axis is not UNSET:
            options["axis"] = self.axis
        if self.broadcast is not UNSET:
            options["broadcast"] = self.broadcast
        if self.wants[1] and self.grad_output is not None:
            options["grad_output"] = arrays.get("grad_output", self.grad_output)
        return (arrays["input"], arrays["target"], self.reduction), options

    def plan(self) -> Plan:
        """The valid call's plan (only for cases that expect a result)."""
        g = self.grad_output if self.wants[1] else None
        if g is None:
            g_shape, g_dtype = None, None
        elif isinstance(g, Operand):
            g_shape, g_dtype = g.values.shape, g.values.dtype.name
        elif isinstance(g, np.generic):
            g_shape, g_dtype = (), g.dtype.name
        else:
            g_shape, g_dtype = (), None
        weight = self.weight
        return make_plan(
            self.input.values.shape,
            self.input.values.dtype.name,
            self.target.values.shape,
            self.target.values.dtype.name,
            self.reduction,
            None if weight is None else weight.values.shape,
            None if weight is None else weight.values.dtype.name,
            None if self.axis is UNSET else _hashable(self.axis),
            False if self.broadcast is UNSET else self.broadcast,
            g_shape,
            g_dtype,
        )

    def reference_grad_output(self, plan: Plan) -> Any:
        """``grad_output`` as the reference takes it: its values, integers rounded once."""
        g = self.grad_output
        if isinstance(g, Operand):
            return g.values
        if isinstance(g, int) and not isinstance(g, bool):
            return rounded_int(g, plan.result_dtype)
        return g

    def plainly(self) -> FuzzCase:
        """This call on plain (native, C-contiguous, writeable, not subclassed) arrays."""

        def plain(operand: Operand) -> Operand:
            return replace(operand, recipe=Recipe())

        g = self.grad_output
        return replace(
            self,
            input=plain(self.input),
            target=plain(self.target),
            weight=None if self.weight is None else plain(self.weight),
            grad_output=plain(g) if isinstance(g, Operand) else g,
            error=None if self.error_from_layout else self.error,
            error_from_layout=False,
        )

    def source(self) -> str:
        """The call as Python source (names from ``_fuzz_arrays``, ``np`` and ``l1``)."""
        arguments = [self.input.source(), self.target.source(), repr(self.reduction)]
        if self.weight is not None:
            arguments.append(f"weight={self.weight.source()}")
        if self.axis is not UNSET:
            arguments.append(f"axis={self.axis!r}")
        if self.broadcast is not UNSET:
            arguments.append(f"broadcast={self.broadcast!r}")
        g = self.grad_output
        if self.wants[1] and g is not None:
            shown = g.source() if isinstance(g, Operand) else _scalar_source(g)
            arguments.append(f"grad_output={shown}")
        return f"l1.{self.function}({', '.join(arguments)})"

    def repro(self, warm: bool = False) -> str:
        """One line of Python (run from the repository's root) that makes this call.

        With ``warm``, the line first makes the same call on plain arrays, as the
        fuzzer's warm-up does, so that the call takes the cache-hit path.
        """
        warm_up = f"{self.plainly().source()}; " if warm else ""
        comment = "after a warm-up call on plain arrays" if warm else "cold"
        return (
            "import sys; sys.path.insert(0, 'tests'); import numpy as np; import l1backends as l1; "
            f"from _fuzz_arrays import *; {warm_up}print({self.source()})  # {comment}"
        )


def _hashable(axis: Any) -> Any:
    return tuple(axis) if isinstance(axis, list) else axis


def _scalar_source(value: Any) -> str:
    if isinstance(value, np.generic):
        return f"np.{type(value).__name__}({literal(np.asarray(value).reshape(1))}[0])"
    if isinstance(value, float) and not math.isfinite(value):
        return f"float('{value}')"
    return repr(value)


def dyadic_operand(
    seed: int, shape: tuple[int, ...], dtype: str, specials: bool, nonnegative: bool = False
) -> Operand:
    """An operand of large dyadic values, rebuilt from its seed in the reproduction."""
    values = dyadic_values(seed, shape, dtype, specials, nonnegative)
    return Operand(values, seed=seed, specials=specials, nonnegative=nonnegative)


def promoted(input_dtype: str, target_dtype: str) -> tuple[str, str]:
    """The compute and result dtypes of a valid dtype pair."""
    compute = promote_dtypes(input_dtype, target_dtype)
    return compute, real_dtype(compute)
