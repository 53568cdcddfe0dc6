"""How many processes a run may use, and running one function over the files in them.

The de-identification of one file depends on nothing but the key, so files
are shared out to worker processes (forked: they inherit the de-identifier
as it is) and come back in input order, which keeps the output names and
the report the same as with one process.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Below this many files a pool costs more (start-up) than it saves.
MIN_FILES_PER_WORKER = 8
CHUNK = 4


def available_cpus() -> int:
    """The CPUs this process may use: its affinity, capped by a cgroup v2 quota (a container's limit)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def worker_count(requested: int, files: int) -> int:
    """``requested`` processes (0: as many as there are CPUs), no more than the files justify."""
    wanted = requested if requested > 0 else available_cpus()
    return max(1, min(wanted, files // MIN_FILES_PER_WORKER))


def ordered_map(function: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``map(function, items)`` in ``workers`` processes, results in input order.

    ``function`` must not raise (return the error instead): an exception would
    end the iteration for the files after it.
    """
    if workers <= 1:
        yield from map(function, items)
        return
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"))
    try:
        yield from pool.map(function, items, chunksize=CHUNK)
    finally:
        # Closed early (an interrupt, a fatal error): the files not started are dropped,
        # the ones under way finish, so nothing writes after the caller cleans up.
        pool.shutdown(wait=True, cancel_futures=True)
