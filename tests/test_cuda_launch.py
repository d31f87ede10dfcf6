"""The launch configuration shared by the CUDA backends: sizes alone decide the grid."""

from __future__ import annotations

import pytest

from l1backends._backends import _cuda_launch as launch


@pytest.mark.parametrize("n", [0, 1, 255, 256 * 4, 256 * 4 + 1, 10**6, 2**28])
def test_flat_launch_covers_n_within_the_block_cap(n: int) -> None:
    config = launch.flat_launch(n)
    assert 1 <= config.blocks <= launch.MAX_BLOCKS
    assert config.threads == launch.THREADS_PER_BLOCK and config.threads % launch.WARP_SIZE == 0
    per_thread = 4  # each thread streams at least four elements before the grid grows
    if config.blocks < launch.MAX_BLOCKS:
        assert config.blocks * config.threads * per_thread >= n
    assert config.blocks == 1 or (config.blocks - 1) * config.threads * per_thread < n


def test_flat_launch_counts_vectors() -> None:
    scalar = launch.flat_launch(4096 * 8)
    vector = launch.flat_launch(4096 * 8, vector=4)
    assert vector.vector == 4 and vector.blocks * 4 == scalar.blocks


def test_vector_width_is_sixteen_bytes_for_contiguous_arrays() -> None:
    assert [launch.vector_width(size, True) for size in (2, 4, 8, 16)] == [8, 4, 2, 1]
    assert launch.vector_width(4, False) == 1
    assert launch.vector_width(3, True) == 1


@pytest.mark.parametrize(("rows", "count"), [(1, 10), (7, 3), (5000, 100), (3, 10**6)])
def test_segmented_launch_threads_grow_with_rows_length(rows: int, count: int) -> None:
    config = launch.segmented_launch(rows, count)
    assert config.blocks == min(rows, launch.MAX_BLOCKS)
    assert launch.WARP_SIZE <= config.threads <= launch.THREADS_PER_BLOCK
    assert config.threads % launch.WARP_SIZE == 0
    if config.threads < launch.THREADS_PER_BLOCK:
        assert config.threads * 4 >= count


def test_shared_bytes_hold_one_double_per_warp() -> None:
    assert launch.LaunchConfig(blocks=1, threads=256).shared_bytes_per_double == 64


def test_launches_do_not_depend_on_anything_but_sizes() -> None:
    assert launch.flat_launch(123456) == launch.flat_launch(123456)
    assert launch.segmented_launch(9, 99) == launch.segmented_launch(9, 99)
