"""Differential check: backends that claim correct rounding for a dtype agree bit for bit.

A correctly rounded result is unique, so any two backends (with any of their
adapters) that both claim it for a dtype must return the same bits on the same
data; the matrix's cases of that dtype are the data.
"""

from __future__ import annotations

from typing import Any

import pytest

from .. import api
from .checks import Target, same_bits
from .matrix import matrix
from .plugin import backend_targets
from .strategies import Case

__all__ = ["test_correctly_rounded_backends_agree"]


def _others(target: Target, dtype: str) -> list[Target]:
    """Every other available backend and adapter that claims correct rounding for ``dtype``."""
    found = []
    for info in api.backends():
        if dtype not in info.capabilities.correctly_rounded:
            continue
        for _, other, reason in backend_targets(info.name):
            if other is None or reason is not None or dtype in other.adapter.unsupported_dtypes:
                continue
            if (other.backend, other.adapter.name) != (target.backend, target.adapter.name):
                found.append(other)
    return found


def _run(target: Target, case: Case, function: str) -> Any:
    adapter = target.adapter
    arguments = case.kwargs(adapter, gradient=function != "l1_loss")
    result = getattr(api, function)(
        case.build(adapter, "input"),
        case.build(adapter, "target"),
        case.reduction,
        backend=target.backend,
        **arguments,
    )
    return adapter.to_numpy(result)


def test_correctly_rounded_backends_agree(conformance_target: Target) -> None:
    claimed = [
        dtype
        for dtype in conformance_target.capabilities.correctly_rounded
        if dtype not in conformance_target.adapter.unsupported_dtypes
    ]
    if not claimed:
        pytest.skip(f"{conformance_target.id} claims correct rounding for no dtype")
    pairs = [(dtype, other) for dtype in claimed for other in _others(conformance_target, dtype)]
    if not pairs:
        pytest.skip(f"no other backend here claims correct rounding for {', '.join(claimed)}")
    for dtype, other in pairs:
        for entry in matrix(conformance_target):
            case = entry.case
            dtypes = {case.input.dtype.name, case.target.dtype.name}
            layouts = {layout[0] for layout in case.layouts.values()}
            if dtypes != {dtype} or not layouts <= set(other.adapter.layouts):
                continue
            if case.input.size > other.adapter.matrix_size:
                continue
            for function in ("l1_loss", "l1_loss_grad"):
                ours, theirs = _run(conformance_target, case, function), _run(other, case, function)
                if not same_bits(ours, theirs):
                    repro = case.repro(
                        conformance_target.backend, conformance_target.adapter, function
                    )
                    raise AssertionError(
                        f"[{conformance_target.id}] and [{other.id}] both claim correct rounding "
                        f"for {dtype} but differ on {entry.label}: {ours!r} vs {theirs!r}"
                        f"\n    reproduce: {repro}"
                    )
