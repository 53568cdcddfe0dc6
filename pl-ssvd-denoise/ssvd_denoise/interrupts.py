"""SIGTERM and SIGINT as exceptions, so that a stopped run cleans up and still reports.

Kubernetes, Docker and ChRIS stop a plugin with SIGTERM, whose default action
ends Python on the spot: the half-written series folder stays behind and no
report is written. Raised as :class:`Interrupted` instead, the signal unwinds
the stack like any error: staged folders are discarded (``atomic.staged_dir``),
Spark is stopped, and the stage writes its report.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterator

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(BaseException):
    """The run received a stop signal. A BaseException, so that no ``except Exception`` swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signal_name = signal.Signals(signum).name


# Run first thing when a stop signal arrives (in the handler: they must be quick).
_hooks: list[Callable[[], None]] = []


@contextlib.contextmanager
def on_signal(hook: Callable[[], None]) -> Iterator[None]:
    """Within the block, a stop signal runs ``hook`` before it raises :class:`Interrupted`."""
    _hooks.append(hook)
    try:
        yield
    finally:
        _hooks.remove(hook)


def _raise(signum, _frame):
    for hook in list(_hooks):
        hook()
    raise Interrupted(signum)


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT raise :class:`Interrupted` (main thread only; elsewhere a no-op).

    PySpark installs its own SIGINT handler when a SparkContext starts (it
    calls into the JVM from inside the handler, which fails noisily when the
    signal cut a call short); :func:`reclaim` puts ours back. Spark's jobs are
    cancelled when the unwinding stops Spark.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def reclaim() -> None:
    """Make SIGINT raise :class:`Interrupted` again, after PySpark took it over (main thread only)."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is _raise:
        signal.signal(signal.SIGINT, _raise)
