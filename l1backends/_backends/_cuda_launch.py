"""Launch configuration shared by the two CUDA backends (numba-cuda and CuPy).

Pure Python, no CUDA import: the same numbers drive both backends' kernels, and
they are unit-tested without a GPU.  The grid depends on the problem size alone,
never on the device, so the per-block partial sums, and therefore the bits of
every result, are the same on every GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "MAX_BLOCKS",
    "THREADS_PER_BLOCK",
    "WARP_SIZE",
    "LaunchConfig",
    "chunked_launch",
    "flat_launch",
    "segmented_launch",
    "vector_width",
]

THREADS_PER_BLOCK = 256
WARP_SIZE = 32
# Enough blocks to fill an H100 (132 SMs x 8 resident blocks of 256 threads is 1056),
# fixed so that the reduction tree does not depend on the device.
MAX_BLOCKS = 1024
# Each thread should stream at least this many elements before the grid grows.
_MIN_ITEMS_PER_THREAD = 4
_VECTOR_BYTES = 16


@dataclass(frozen=True)
class LaunchConfig:
    """A 1-D launch: ``blocks`` blocks of ``threads`` threads, each handling ``vector`` lanes.

    Attributes
    ----------
    blocks : int
        Number of blocks; also the number of partial sums a reduction produces.
    threads : int
        Threads per block (a multiple of the warp size).
    vector : int
        Elements each thread loads at once on the contiguous path (1 when strided).
    """

    blocks: int
    threads: int
    vector: int = 1

    @property
    def shared_bytes_per_double(self) -> int:
        """Shared memory for one float64 per warp, for the block reduction."""
        return 8 * (self.threads // WARP_SIZE)


def vector_width(itemsize: int, contiguous: bool) -> int:
    """Lanes per 128-bit load for contiguous arrays of ``itemsize``-byte elements, else 1."""
    if not contiguous or itemsize <= 0 or _VECTOR_BYTES % itemsize:
        return 1
    return _VECTOR_BYTES // itemsize


def flat_launch(n: int, vector: int = 1) -> LaunchConfig:
    """The grid for a grid-stride loop over ``n`` elements (a full reduction or elementwise pass).

    Parameters
    ----------
    n : int
        Number of elements.
    vector : int
        Elements per vector load.

    Returns
    -------
    LaunchConfig
        At least one block, at most :data:`MAX_BLOCKS`.
    """
    per_block = THREADS_PER_BLOCK * vector * _MIN_ITEMS_PER_THREAD
    blocks = max(1, min(MAX_BLOCKS, -(-n // per_block)))
    return LaunchConfig(blocks=blocks, threads=THREADS_PER_BLOCK, vector=vector)


def segmented_launch(rows: int, count: int) -> LaunchConfig:
    """The grid for an axis reduction of ``rows`` outputs, each over ``count`` elements.

    One block per output row, striding over its elements; rows beyond
    :data:`MAX_BLOCKS` are covered by a grid-stride loop over rows.  Short rows
    use fewer threads so that small reductions do not leave most lanes idle.

    Parameters
    ----------
    rows : int
        Number of outputs.
    count : int
        Elements reduced into each output.

    Returns
    -------
    LaunchConfig
        The launch; ``blocks`` is the number of blocks, not of rows.
    """
    threads = WARP_SIZE
    while threads < THREADS_PER_BLOCK and threads * _MIN_ITEMS_PER_THREAD < count:
        threads *= 2
    return LaunchConfig(blocks=max(1, min(MAX_BLOCKS, rows)), threads=threads)


def chunked_launch(rows: int, count: int, vector: int = 1) -> tuple[LaunchConfig, int]:
    """The grid for ``rows`` reductions of ``count`` elements each, split into chunks.

    Few long rows are each split into ``chunks`` blocks (whose partial sums a second,
    fixed-order pass combines) so that the grid still fills the device; many rows get
    one block each, as in :func:`segmented_launch`.  Like every launch here, the split
    depends on the sizes alone, so results are the same bits on every GPU.

    Parameters
    ----------
    rows : int
        Number of outputs.
    count : int
        Elements reduced into each output.
    vector : int
        Elements per vector load.

    Returns
    -------
    tuple of (LaunchConfig, int)
        The launch, whose ``blocks`` counts blocks along the rows (a grid-stride loop
        covers the rest), and the number of chunks per row (the grid's other extent).
    """
    if rows <= 1:
        config = flat_launch(count, vector)
        return LaunchConfig(blocks=1, threads=config.threads, vector=vector), config.blocks
    segmented = segmented_launch(rows, count)
    chunks = max(1, min(flat_launch(count, vector).blocks, MAX_BLOCKS // rows))
    if chunks == 1:
        return LaunchConfig(segmented.blocks, segmented.threads, vector), 1
    return LaunchConfig(blocks=rows, threads=THREADS_PER_BLOCK, vector=vector), chunks
