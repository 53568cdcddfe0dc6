"""Where the column blocks of A live, and how one pass visits them.

:class:`SparkBlocks` spreads the pixel blocks of a series over a Spark
cluster in one of two ways:

* ``shared``: the executors see the volume file (local mode, a standalone
  cluster on one host, Kubernetes pods that mount the plugin's volume). Each
  task memory-maps the ``.npy`` and reads its own columns, row by row, on
  every pass; the operating system's page cache is the cache, and nothing
  large crosses the JVM. Tasks also write their columns of Vt straight into
  the output file.
* ``stream``: the executors cannot see the file. The driver sends each
  block out once, as a broadcast, a wave of one block per core at a time;
  the executor that loads it keeps it in its block manager (on its local
  disk, which the page cache keeps hot), and ``localCheckpoint`` cuts the lineage, so the tasks of later
  passes name a cached block and carry no data. The driver holds one wave,
  not the series, and no task nears Spark's large-task warning (1 MiB).
  The price: a block lives only on its executor, so losing an executor
  fails the series (the report says so) instead of recomputing it. Vt comes
  back to the driver block by block. :func:`stream_waves` is that mechanism
  on its own; the local denoiser sends its slabs with it too.

:class:`NumpyBlocks` does the same in-process; the tests use it to check the
numerics without a JVM.
"""

from __future__ import annotations

import math
import os
from functools import partial
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

# Block edges fall on multiples of 1024 float32 pixels: 4 KiB of a row, one
# page. Vt's file is written with its data starting on a page (NpyWriter's
# ``align``), so when a row is whole pages too (n a multiple of 1024, as for
# 512² or 256² slices) no two tasks ever write into one page, and executors
# on different hosts may write their columns into one shared file even where
# the file system writes back whole pages. Otherwise (odd slice sizes on a
# cluster) Vt comes back through the driver: see :func:`pages_are_private`.
ALIGN = 1024
PAGE = 4096
MAX_BLOCK_BYTES = 256 << 20
# Streamed blocks pass through the JVMs of driver and executor whole (broadcast, cache); smaller ones
# keep their memory use modest on executors of 1-2 GiB.
STREAM_BLOCK_BYTES = 64 << 20


def column_ranges(n: int, parts: int, align: int = ALIGN) -> list[tuple[int, int]]:
    """Split ``range(n)`` into at most ``parts`` runs whose edges are multiples of ``align``."""
    units = math.ceil(n / align)
    parts = max(1, min(parts, units))
    edges = [min(n, round(i * units / parts) * align) for i in range(parts + 1)]
    return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]


def pages_are_private(n: int) -> bool:
    """Do the column blocks of a page-aligned float32 k × n file each fill whole pages of it?"""
    return (n * 4) % PAGE == 0 and (ALIGN * 4) % PAGE == 0


def auto_partitions(m: int, n: int, parallelism: int, max_block_bytes: int = MAX_BLOCK_BYTES) -> int:
    """One block per core at least, more when a block would pass ``max_block_bytes``."""
    needed = math.ceil(m * n * 4 / max_block_bytes)
    return parallelism * max(1, math.ceil(needed / parallelism))


def _add_into(a: tuple | None, b: tuple | None) -> tuple | None:
    """``a + b`` elementwise, reusing ``a``'s arrays; None is the empty sum."""
    if a is None or b is None:
        return b if a is None else a
    return tuple(np.add(x, y, out=x) if isinstance(x, np.ndarray) else x + y for x, y in zip(a, b))


def _mapped_block(path: str, m: int, n: int, columns: tuple[int, int]) -> np.ndarray:
    c0, c1 = columns
    return np.load(path, mmap_mode="r").reshape(m, n)[:, c0:c1]


def _carried_block(item: tuple[int, int, np.ndarray]) -> np.ndarray:
    return item[2]


def _unpack(shipped: list, i: int):
    return shipped[i].value


def stream_waves(sc, loaders: Sequence[Callable[[], object]], per_wave: int) -> Iterator:
    """Each loader's value sent out once and kept on the executor that loads it, ``per_wave`` at a time.

    Yields one RDD per wave, whose elements are the values (see the module
    notes): a wave is broadcast, loaded onto the executors' disks and
    checkpointed there, and the driver's copies are freed before the next
    wave is read. The global SVD sends its column blocks this way, the local
    denoiser its slabs.
    """
    from pyspark import StorageLevel

    for w in range(0, len(loaders), max(1, per_wave)):
        shipped = [sc.broadcast(load()) for load in loaders[w:w + max(1, per_wave)]]
        try:
            rdd = sc.parallelize(range(len(shipped)), len(shipped)).map(partial(_unpack, shipped))
            # On disk, not in memory: unrolling 48 MiB blocks on the heap ran default 1g executors out of
            # memory on a 12 GB series; the page cache keeps the blocks hot all the same.
            rdd.persist(StorageLevel.DISK_ONLY)
            rdd.localCheckpoint()
            rdd.count()  # loads the blocks and checkpoints them
        finally:
            for b in shipped:
                _free(b)
        yield rdd


def drop(wave) -> None:
    """Remove a wave's blocks from the executors. (``RDD.unpersist`` would warn, for every wave, that a
    locally checkpointed RDD cannot be recomputed; a wave never is.)"""
    wave.ctx._jsc.sc().unpersistRDD(wave.id(), False)
    wave.is_cached = False


def _column_block(A: np.ndarray, c0: int, c1: int) -> tuple[int, int, np.ndarray]:
    return c0, c1, np.ascontiguousarray(A[:, c0:c1])


def _free(shipped) -> None:
    """Remove a broadcast's data from the driver and the executors, but leave it valid.

    ``Broadcast.destroy`` would also mark it destroyed, and Spark refuses to
    serialise a destroyed broadcast: every later task, whose lineage still
    names the (checkpointed) loading RDD, would fail. Its value is no longer
    needed: the blocks are in the executors' block managers.
    """
    # What Broadcast.destroy does, without marking it destroyed: remove from executors and driver.
    shipped._jbroadcast.doDestroy(True)
    os.unlink(shipped._path)  # PySpark's pickled copy on the driver


def _columns_of(item) -> tuple[int, int]:
    return item[0], item[1]


def _write_into(path: str, columns: tuple[int, int], values: np.ndarray) -> None:
    out = np.load(path, mmap_mode="r+")
    out[:, columns[0]:columns[1]] = values
    out.flush()


class NumpyBlocks:
    """A in this process, split into column blocks."""

    def __init__(self, A: np.ndarray, parts: int = 4):
        self.A = A
        self.shape = A.shape
        self.ranges = column_ranges(A.shape[1], parts)

    def sum_over_blocks(self, kernel: Callable) -> tuple:
        results = [kernel(self.A[:, c0:c1]) for c0, c1 in self.ranges]
        total = None
        for r in results:
            total = _add_into(total, r)
        return total

    def write_columns(self, kernel: Callable, out: np.ndarray | Path) -> np.ndarray:
        target = np.load(out, mmap_mode="r+") if isinstance(out, Path) else out
        stats = 0
        for c0, c1 in self.ranges:
            values, s = kernel(self.A[:, c0:c1])
            target[:, c0:c1] = values
            stats = stats + s
        return stats


class SparkBlocks:
    """A (m × n) as an RDD of column blocks of a float32 ``.npy`` volume."""

    def __init__(self, sc, volume: Path, m: int, n: int, partitions: int, shared: bool):
        self.shape = (m, n)
        self.shared = shared
        self.ranges = column_ranges(n, partitions)
        if shared:
            self._rdd = sc.parallelize(self.ranges, len(self.ranges))
            self._load = partial(_mapped_block, str(volume), m, n)
        else:
            A = np.load(volume, mmap_mode="r").reshape(m, n)
            self._waves = list(stream_waves(sc, [partial(_column_block, A, c0, c1) for c0, c1 in self.ranges],
                                            sc.defaultParallelism))
            self._rdd = self._waves[0] if len(self._waves) == 1 else sc.union(self._waves)
            self._load = _carried_block

    @property
    def partitions(self) -> int:
        return len(self.ranges)

    def sum_over_blocks(self, kernel: Callable) -> tuple:
        load = self._load

        def fold(total, item):
            result = kernel(load(item))
            return result if total is None else _add_into(total, result)

        # Partial sums meet up a tree of executors, so the driver receives a few, not one per block.
        return self._rdd.treeAggregate(None, fold, _add_into, depth=2)

    def write_columns(self, kernel: Callable, out: np.ndarray | Path) -> np.ndarray:
        load = self._load
        if self.shared and isinstance(out, Path):
            path = str(out)

            def write_block(item):
                values, stats = kernel(load(item))
                _write_into(path, _columns_of(item), values)
                return (stats,)

            return self._rdd.map(write_block).treeReduce(_add_into, depth=2)[0]

        target = np.load(out, mmap_mode="r+") if isinstance(out, Path) else out
        stats = 0
        for (c0, c1), (values, s) in self._rdd.map(lambda item: (_columns_of(item), kernel(load(item)))).toLocalIterator():
            target[:, c0:c1] = values
            stats = stats + s
        return stats

    def release(self) -> None:
        if not self.shared:
            for wave in self._waves:
                drop(wave)
