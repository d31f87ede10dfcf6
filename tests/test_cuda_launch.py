"""Host planning shared by the CUDA backends: the partition, the codes, the occupancy model."""

from __future__ import annotations

import itertools

import pytest

from l1backends._backends import _cuda_launch as launch
from l1backends._backends._cuda_passes import path_names, plan_passes
from l1backends._backends._occupancy import (
    ARCHITECTURES,
    H100,
    modelled_fraction,
    resident_blocks,
    tail_cost,
)
from l1backends.semantics import make_plan


@pytest.mark.parametrize(
    ("rows", "count", "itemsize"),
    [(1, 0, 4), (1, 1, 4), (1, 7, 2), (1, 513, 4), (1, 4097, 8), (3, 1000, 16), (5, 33, 2)],
)
def test_every_element_of_a_row_is_taken_once_in_a_fixed_order(rows, count, itemsize) -> None:
    part = launch.partition(rows, count, itemsize, max_threads=64)
    taken = [
        e
        for chunk, thread in itertools.product(range(part.chunks), range(part.threads))
        for e in part.elements(chunk, thread)
    ]
    assert sorted(taken) == list(range(count))
    assert part.threads in (32, 64) and part.lanes == launch.lanes_of(itemsize)
    # each thread takes its vectors in order, lanes in order
    for chunk, thread in itertools.product(range(part.chunks), range(part.threads)):
        order = part.elements(chunk, thread)
        assert order == sorted(order)


def test_chunks_are_full_but_the_last_and_bounded() -> None:
    for count in (10, 4096, 4097, 10**6, 2**28, 2**31):
        part = launch.partition(1, count, 4)
        per_chunk = part.threads * part.iters
        assert 1 <= part.chunks <= launch.MAX_CHUNKS
        assert (part.chunks - 1) * per_chunk < part.vectors <= part.chunks * per_chunk


def test_the_partition_depends_on_sizes_and_item_size_alone() -> None:
    assert launch.partition(7, 1234, 4) == launch.partition(7, 1234, 4)
    assert launch.partition(1, 2**28, 4) == launch.Partition(1, 2**28, 4, 256, 16, 16384)
    assert launch.partition(1, 2**28, 2).lanes == 8 and launch.partition(1, 9, 16).lanes == 1
    short = launch.partition(10**6, 3, 4)
    assert (short.threads, short.chunks, short.blocks) == (32, 1, 10**6)


@pytest.mark.parametrize("itemsize", [2, 4])
def test_at_two_to_the_28_the_last_wave_costs_under_ten_percent(itemsize: int) -> None:
    part = launch.partition(1, 2**28, itemsize)
    for resident in range(1, 9):  # 256-thread blocks an SM may hold
        assert tail_cost(part.blocks, resident, H100.sms) <= 0.10, (itemsize, resident)


def test_cuda_constants_come_from_the_enums() -> None:
    lines = launch.cuda_constants().splitlines()
    assert "#define L1_OP_LOSS 1" in lines and "#define L1_FINISH_MEAN_BY_WEIGHT 3" in lines
    assert "#define L1_SCALE_BY_WEIGHT_SUM 2" in lines
    assert len(lines) == len(launch.Op) + 4 + 3


def test_limit_reason_checks_every_pass_a_plan_needs() -> None:
    wide = (2,) * 9
    assert "9 dimensions" in launch.limit_reason(
        make_plan(wide, "float32", wide, "float32", "none")
    )
    assert launch.limit_reason(make_plan(wide, "float32", wide, "float32", "sum", axis=0)) is None
    small = (1,) + (2,) * 8
    # the input broadcast along 9 axes: its gradient's sum-back pass has 9 reduced dimensions
    plan = make_plan((1,), "float32", (2,) * 9, "float32", "sum", axis=0, broadcast=True)
    assert "9 dimensions" in launch.limit_reason(plan)
    assert launch.limit_reason(make_plan(small, "float32", small, "float32")) is None
    assert [launch.group_dims(n) for n in (0, 1, 2, 3, 5, 8)] == [1, 1, 2, 4, 8, 8]
    with pytest.raises(ValueError, match="9 dimensions"):
        launch.group_dims(9)


def test_passes_of_a_call() -> None:
    plan = make_plan((4, 5), "float32", (4, 5), "float32", "mean", (1, 5), "float32", axis=0)
    options = {"g_array": True, "want_loss": True, "want_grad": True, "max_threads": 256}
    weight_sum, main = plan_passes(plan, **options)
    assert weight_sum.sink == "weight-sum" and weight_sum.lead == "w"
    assert main.operands == ("x", "y", "w", "g", "sw", "grad") and main.sink == "loss"
    broadcast = make_plan((4, 1), "float64", (4, 5), "float64", "sum", broadcast=True)
    main, back = plan_passes(broadcast, **options)
    assert "grad" not in main.operands and back.kind == "grad-sum" and back.sink == "grad"
    assert (back.kept, back.reduced) == ((0,), (1,))
    assert "strided:grad-sum" in path_names() and "finish" in path_names()


def test_occupancy_model_matches_the_calculator() -> None:
    sm90 = ARCHITECTURES["sm_90"]
    # the issue's figures: 94 registers give 2 blocks (25 %), 66 give 3 (37.5 %)
    assert resident_blocks(sm90, 94, 8192, 256) == 2
    assert resident_blocks(sm90, 66, 1024, 256) == 3
    assert resident_blocks(sm90, 48, 1024, 256) == 5
    assert resident_blocks(sm90, 32, 1024, 256) == 8  # then threads (2048) decide
    assert resident_blocks(sm90, 16, 60_000, 256) == 3  # then shared memory decides
    assert H100.bytes_in_flight_needed == pytest.approx(3.35e12 * 700e-9 / 132)
    # 12 KiB in flight per SM is latency-bound; 40 KiB reaches the memory system's limit
    assert modelled_fraction(H100, 12 * 1024, 0.0) == pytest.approx(12 * 1024 * 132 / 700e-9 / 3e12)
    assert modelled_fraction(H100, 40 * 1024, 0.02) == pytest.approx(0.98)
    # unless the loop cannot issue its instructions fast enough: 600 per 32 bytes read
    slow = modelled_fraction(H100, 40 * 1024, 0.0, instructions=600, bytes_per_vector=32)
    assert slow == pytest.approx(H100.issue_bound(600, 32) / 3e12) and slow < 1.0
