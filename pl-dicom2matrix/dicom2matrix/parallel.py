"""Both passes over the files, on every core the plugin may use.

One pool of forked worker processes serves the whole run (forking twice
costs more than a pass over a short series). Work goes out in chunks and
results come back in input order. Small inputs stay in this process: a pool
costs more than it saves below a few dozen files.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")

MIN_ITEMS_FOR_POOL = 32


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class Workers:
    """``map`` over up to ``count`` processes, started on first need and kept for the run."""

    def __init__(self, count: int):
        self.count = max(1, count)
        self._pool: ProcessPoolExecutor | None = None

    def map(self, func: Callable[[T], R], items: list[T]) -> Iterator[R]:
        if self.count == 1 or len(items) < MIN_ITEMS_FOR_POOL:
            return map(func, items)
        if self._pool is None:
            # fork: workers inherit the parent's imports and pydicom settings at no cost.
            self._pool = ProcessPoolExecutor(self.count, mp_context=multiprocessing.get_context("fork"))
        chunk = max(1, min(32, len(items) // (self.count * 8)))
        return self._pool.map(func, items, chunksize=chunk)

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


def with_progress(results: Iterable[R], total: int, every: int, report: Callable[[int, int], None]) -> Iterator[R]:
    for n, result in enumerate(results, 1):
        if n % every == 0 or n == total:
            report(n, total)
        yield result
