"""SIGTERM and SIGINT as exceptions, so that a stopped run cleans up and still reports.

Kubernetes, Docker and ChRIS stop a plugin with SIGTERM, whose default action
ends Python on the spot: the half-written series folder stays behind and no
report is written. Raised as :class:`Interrupted` instead, the signal unwinds
the stack like any error: worker processes and children are stopped, Spark
is stopped, the staging folder is discarded, and the stage writes a report
that says it was interrupted (``stage.run_stage`` does this for every plugin).
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
        self.signum = int(signum)
        self.signal_name = signal.Signals(signum).name


_received: Interrupted | None = None
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
    global _received
    _received = Interrupted(signum)
    for hook in list(_hooks):
        hook()
    raise _received


def received() -> Interrupted | None:
    """The stop signal this run received, if any. Code cleaning up after it (PySpark's, py4j's) may
    raise an error of its own that hides the interrupt; callers check here before blaming the error."""
    return _received


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT raise :class:`Interrupted` (main thread only; elsewhere a no-op).

    PySpark installs its own SIGINT handler when a SparkContext starts (it
    calls into the JVM from inside the handler, which fails noisily when the
    signal cut a call short); :func:`reclaim` puts ours back. Spark's jobs are
    cancelled when the unwinding stops Spark.
    """
    global _received
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received = None
    previous = {s: signal.signal(s, _raise) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT are ignored: the run is writing its report and ends right after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def reclaim() -> None:
    """Make SIGINT raise :class:`Interrupted` again, after PySpark took it over (main thread only)."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is _raise:
        signal.signal(signal.SIGINT, _raise)
