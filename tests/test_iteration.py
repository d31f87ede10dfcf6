"""The shared iteration space: every element visited once, with the offsets np.nditer gives."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l1backends._backends._iteration import (
    MAX_GROUP_DIMS,
    broadcast_strides,
    build_space,
    c_strides,
    element_strides,
    group_limit_reason,
    reduced_axis_strides,
)


@st.composite
def operand_views(draw: st.DrawFn, shape: tuple[int, ...]) -> np.ndarray:
    """A view whose every element holds its own offset in the buffer it views.

    Its layout is drawn: C or Fortran order, permuted, reversed axes, steps, and
    broadcast (zero-stride) axes, so the space must merge and order real strides.
    """
    ndim = len(shape)
    source_shape = tuple(1 if draw(st.booleans()) else n for n in shape)
    steps = [draw(st.sampled_from([1, 1, 2, -1, -2])) for _ in range(ndim)]
    order = draw(st.permutations(range(ndim)))
    allocated = [abs(step) * max(n, 1) for step, n in zip(steps, source_shape, strict=True)]
    buffer = np.arange(math.prod(allocated), dtype=np.int64)
    base = buffer.reshape([allocated[axis] for axis in order]).transpose(np.argsort(order))
    view = base[tuple(slice(None, None, step) for step in steps)]
    view = view[tuple(slice(0, n) for n in source_shape)]
    return np.broadcast_to(view, shape)


@st.composite
def calls(draw: st.DrawFn):
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=4)))
    views = [draw(operand_views(shape)) for _ in range(draw(st.integers(1, 3)))]
    reduced = sorted(draw(st.sets(st.sampled_from(range(len(shape))))) if shape else ())
    kept = [axis for axis in range(len(shape)) if axis not in reduced]
    lead = draw(st.integers(0, len(views) - 1))
    return shape, views, kept, reduced, lead


def offsets_by_row(shape, views, kept) -> dict[tuple[int, ...], Counter]:
    """The reference: per kept multi-index, the multiset of per-operand offsets (np.nditer)."""
    rows: dict[tuple[int, ...], Counter] = {}
    for index in itertools.product(*(range(shape[axis]) for axis in kept)):
        rows[index] = Counter()
    if 0 in shape:
        return rows
    iterator = np.nditer(list(views), flags=["multi_index", "refs_ok", "zerosize_ok"])
    for values in iterator:
        values = values if isinstance(values, tuple) else (values,)  # one operand: no tuple
        row = tuple(iterator.multi_index[axis] for axis in kept)
        rows[row][tuple(int(v) for v in values)] += 1
    return rows


def walk(space, bases) -> list[Counter]:
    """Enumerate a space as a kernel does: rows in C order, each row's elements."""
    result = []
    for row in itertools.product(*(range(n) for n in space.kept_shape)):
        start = [
            base + sum(i * s for i, s in zip(row, strides, strict=True))
            for base, strides in zip(bases, space.kept_strides, strict=True)
        ]
        counter: Counter = Counter()
        for inner in itertools.product(*(range(n) for n in space.reduced_shape)):
            counter[
                tuple(
                    first + sum(i * s for i, s in zip(inner, strides, strict=True))
                    for first, strides in zip(start, space.reduced_strides, strict=True)
                )
            ] += 1
        result.append(counter)
    return result


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(calls())
def test_space_visits_the_offsets_nditer_visits(call) -> None:
    shape, views, kept, reduced, lead = call
    strides = [
        broadcast_strides(v.shape, element_strides(v.strides, v.itemsize), shape) for v in views
    ]
    space = build_space(shape, kept, reduced, strides, lead)
    expected = offsets_by_row(shape, views, kept)
    # Element 0 of each view: its offset in the buffer, the base every walk starts from.
    bases = [int(v[(0,) * v.ndim]) if v.size else 0 for v in views]
    rows = walk(space, bases)
    if space.rows == 0 or space.count == 0:
        assert all(not counter for counter in expected.values())
        return
    assert space.rows == len(expected) and space.count * space.rows == math.prod(shape)
    assert rows == list(expected.values())  # rows in the output's C order, each complete
    assert len(space.kept_shape) <= len(kept) and len(space.reduced_shape) <= len(reduced)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(st.lists(st.integers(2, 4), min_size=1, max_size=4), st.booleans())
def test_contiguous_operands_merge_to_one_dimension(shape, fortran) -> None:
    array = np.zeros(shape, order="F" if fortran else "C")
    strides = element_strides(array.strides, array.itemsize)
    space = build_space(shape, (), range(len(shape)), [strides, c_strides(shape)], lead=0)
    if fortran and len(shape) > 1:
        # The lead's order wins: its innermost stride is 1 even though the other is C.
        assert space.reduced_strides[0][-1] == 1
    else:
        assert space.reduced_shape == (math.prod(shape),)
        assert space.reduced_strides == ((1,), (1,))


def test_reduced_axes_follow_the_lead_operand() -> None:
    shape = (3, 5)
    transposed = (1, 3)  # a (5, 3) C array viewed transposed
    space = build_space(shape, (), (0, 1), [transposed, c_strides(shape)], lead=0)
    assert space.reduced_strides[0] == (3, 1)
    space = build_space(shape, (), (0, 1), [transposed, c_strides(shape)], lead=1)
    assert space.reduced_strides[1] == (5, 1)


def test_helpers() -> None:
    assert c_strides((2, 3, 4)) == (12, 4, 1)
    assert c_strides((2, 3), unit=2) == (6, 2)
    assert c_strides((0, 3)) == (3, 1)
    assert element_strides((24, 8), 8) == (3, 1)
    assert element_strides((12, 4), 8) is None
    assert broadcast_strides((3, 1), (1, 1), (2, 3, 4)) == (0, 1, 0)
    with pytest.raises(ValueError, match=r"\(3, 2\) does not broadcast"):
        broadcast_strides((3, 2), (2, 1), (3, 4))
    assert reduced_axis_strides(3, (0, 2), (5, 1)) == (5, 0, 1)
    padded = build_space((4, 5), (0,), (1,), [(5, 1)]).padded(3)
    assert padded.kept_shape == (1, 1, 4) and padded.reduced_shape == (1, 1, 5)
    with pytest.raises(ValueError, match="needs 2 dimensions"):
        build_space((4, 5), (0, 1), (), [(1, 4)]).padded(1)
    # the reduced group may be padded to its own width
    space = build_space((4, 5, 6), (0,), (1, 2), [(1, 4, 40)])
    uneven = space.padded(1, 4)
    assert uneven.kept_shape == (4,) and uneven.reduced_shape == (1, 1, 6, 5)
    assert uneven.kept_strides == ((1,),) and uneven.reduced_strides == ((0, 0, 40, 4),)
    with pytest.raises(ValueError, match="reduced group needs 2 dimensions, over 1"):
        space.padded(2, 1)


def test_group_limit_is_decided_on_the_plan() -> None:
    wide = (2,) * (MAX_GROUP_DIMS + 1)
    axes = range(len(wide))
    assert group_limit_reason(wide, (), axes) is not None
    assert "kept axes have 9 dimensions" in group_limit_reason(wide, axes, ())
    assert group_limit_reason((*wide, 1), (), range(MAX_GROUP_DIMS)) is None
