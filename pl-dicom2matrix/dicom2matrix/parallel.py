"""Both passes over the files, on every core the plugin may use.

Work goes to forked worker processes in chunks, and results come back in
input order. Small inputs stay in this process: a pool costs more than it
saves below a few dozen files.
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


def ordered_map(func: Callable[[T], R], items: list[T], workers: int) -> Iterator[R]:
    """``map(func, items)``, spread over ``workers`` processes when it pays."""
    workers = min(workers, len(items))
    if workers <= 1 or len(items) < MIN_ITEMS_FOR_POOL:
        yield from map(func, items)
        return
    chunk = max(1, min(32, len(items) // (workers * 8)))
    # fork: workers inherit the parent's imports and pydicom settings at no cost.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        yield from pool.map(func, items, chunksize=chunk)


def with_progress(results: Iterable[R], total: int, every: int, report: Callable[[int, int], None]) -> Iterator[R]:
    for n, result in enumerate(results, 1):
        if n % every == 0 or n == total:
            report(n, total)
        yield result
