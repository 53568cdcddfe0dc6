"""Worker processes for the per-file work of a stage: an ordered map that stops when the run stops.

Workers are forked (they inherit the parent's imports and settings at no
cost) and results come back in input order, so outputs and reports do not
depend on how many workers there were. What they must never do is outlive
the run: each worker asks the kernel to kill it when its parent dies
(``PR_SET_PDEATHSIG``: a SIGKILLed or crashed stage takes its workers with
it), leaves SIGINT to its parent (a terminal's Ctrl-C reaches the whole
process group), and a pool left by an exception (an interrupt, a fatal
error) kills its workers at once instead of letting them finish.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import threading
from concurrent.futures import InvalidStateError, ProcessPoolExecutor
from typing import Callable, Iterator, TypeVar

from ctsvd_common.resources import available_cpus, capped_workers

T = TypeVar("T")
R = TypeVar("R")

_PR_SET_PDEATHSIG = 1

__all__ = ["WorkerPool", "available_cpus", "capped_workers"]


def _die_with_parent(parent: int) -> None:
    """Worker initializer: die with the parent, and take signals only from it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):   # not Linux: the pool's own shutdown is all there is
        pass
    if os.getppid() != parent:   # the parent died before the request took effect
        os._exit(1)


class WorkerPool:
    """``map`` over up to ``count`` forked processes, started on first need and kept for the run.

    Use it as a context manager: leaving the block normally waits for the
    workers; leaving it by an exception kills them.
    """

    def __init__(self, count: int, min_items: int = 1):
        self.count = max(1, count)
        self.min_items = min_items     # fewer items than this run in this process: a pool costs more
        self._pool: ProcessPoolExecutor | None = None

    def map(self, func: Callable[[T], R], items: list[T], chunksize: int = 1) -> Iterator[R]:
        """``map(func, items)``, in order. ``func`` should return errors rather than raise them:
        an exception ends the iteration for the items after it."""
        if self.count == 1 or len(items) < max(self.min_items, 2):
            return map(func, items)
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.count, mp_context=multiprocessing.get_context("fork"),
                                             initializer=_die_with_parent, initargs=(os.getpid(),))
        return self._pool.map(func, items, chunksize=max(1, chunksize))

    def kill(self) -> None:
        """Stop every worker now; work under way is lost."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        # ProcessPoolExecutor can only wait for its workers (Python < 3.14), so they are killed first.
        # Its manager thread then fails the pending futures, and on Python 3.11 it raises
        # InvalidStateError from its own thread for one that Executor.map's clean-up already
        # cancelled (fixed upstream in 3.12): nothing is lost, so that one error is kept quiet.
        previous = threading.excepthook
        threading.excepthook = _quiet_cancelled_future(previous)
        try:
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                if process.is_alive():
                    process.kill()
            pool.shutdown(wait=True, cancel_futures=True)
        finally:
            threading.excepthook = previous

    def close(self) -> None:
        """Wait for the workers to finish what they do, and end them."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.kill()


def _quiet_cancelled_future(hook):
    """``hook``, except for an executor thread's InvalidStateError on a cancelled future."""
    def quiet(args):
        if args.exc_type is InvalidStateError:
            return
        hook(args)
    return quiet
