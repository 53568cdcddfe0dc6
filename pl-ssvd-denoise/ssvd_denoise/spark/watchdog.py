"""Ending a run at once, with the reason, when Spark cannot go on.

Left alone, a run can hang: an OutOfMemoryError in the driver's JVM kills
the thread it hits (say the scheduler's RPC dispatcher) and leaves the JVM
up, so the job it was running never ends; a cluster that has lost every
executor waits for one forever. Spark's own means close most of these doors,
and :class:`Watchdog` the rest:

* the driver's JVM runs with ``-XX:+ExitOnOutOfMemoryError`` (set by
  :func:`ssvd_denoise.spark.session.start`): an OutOfMemoryError ends it, with
  exit code 3, whatever thread it hits;
* :class:`Watchdog`, a thread polling every second while the series run,
  notices that the JVM has ended, that the DAG scheduler's event loop is dead,
  that the SparkContext was stopped (a standalone master removes an
  application whose executors keep failing), or that no executor has been
  registered for :data:`EXECUTORLESS_SECONDS` while a job waits. It then
  keeps the reason, cancels Spark's jobs and, if the driver is still blocked
  :data:`GRACE_SECONDS` later, kills the JVM, so every call into Spark fails
  at once;
* a task that keeps failing (an executor lost with the blocks it held, a
  Python worker killed) fails its job after ``spark.task.maxFailures``
  attempts, Spark's default; a hung executor is declared lost after
  ``spark.storage.blockManagerHeartbeatTimeoutMs`` (set to 45 s).

Each reason is one line naming the setting to change.
"""

from __future__ import annotations

import threading
import time

# The JVM's exit code after -XX:+ExitOnOutOfMemoryError.
OOM_EXIT_CODE = 3
EXECUTORLESS_SECONDS = 30.0
GRACE_SECONDS = 10.0


class Watchdog:
    """Watches the driver's JVM and the cluster while the block runs (a context manager)."""

    def __init__(self, sc, period: float = 1.0):
        self._sc = sc
        self._proc = getattr(sc._gateway, "proc", None)   # None when PySpark did not start the JVM
        conf = sc.getConf()
        self._driver_memory = conf.get("spark.driver.memory", "1g")
        self._executor_memory = conf.get("spark.executor.memory", "1g")
        self._cluster = not sc.master.startswith("local")
        self._period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="ssvd-watchdog", daemon=True)
        self._executorless_since: float | None = None
        self.reason: str | None = None

    def __enter__(self) -> "Watchdog":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    # ----------------------------------------------------------------- checks

    def jvm_ended(self, wait: float = 0.0) -> str | None:
        """Why the driver's JVM has ended, or None while it runs (waiting up to ``wait`` s for it to end)."""
        if self._proc is None:
            return None
        deadline = time.monotonic() + wait
        while (code := self._proc.poll()) is None:
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)
        if code == OOM_EXIT_CODE:
            return (f"the Spark driver ran out of memory (java.lang.OutOfMemoryError; spark.driver.memory is "
                    f"{self._driver_memory}): raise spark.driver.memory, e.g. --spark-conf spark.driver.memory=2g")
        return f"the Spark driver's JVM ended with exit code {code} (see the log above)"

    def _spark_state(self) -> str | None:
        """A reason Spark cannot go on, from the JVM's own state; None while all is well."""
        jsc = self._sc._jsc.sc()
        if jsc.isStopped():
            return f"Spark stopped the application{self._lost_executors()}"
        if not jsc.dagScheduler().eventProcessLoop().isActive():
            return (f"the Spark driver's scheduler thread died (see the log above; spark.driver.memory is "
                    f"{self._driver_memory}): raise spark.driver.memory")
        if self._cluster:
            executors = jsc.getExecutorMemoryStatus().size() - 1   # the driver's block manager is listed too
            waiting = len(self._sc.statusTracker().getActiveJobsIds()) > 0
            if executors > 0 or not waiting:
                self._executorless_since = None
            elif self._executorless_since is None:
                self._executorless_since = time.monotonic()
            elif time.monotonic() - self._executorless_since > EXECUTORLESS_SECONDS:
                return (f"no Spark executor for {EXECUTORLESS_SECONDS:.0f} s while tasks wait"
                        f"{self._lost_executors()}: the cluster cannot run executors of spark.executor.memory="
                        f"{self._executor_memory} (and spark.executor.cores), or has none left")
        return None

    def explain(self, reason: str) -> str:
        """A failed job's reason, with the executors lost and what to change when losing them failed it."""
        if not any(sign in reason for sign in ("Checkpoint block", "ExecutorLostFailure", "executor lost")):
            return reason
        return (f"{reason}{self._lost_executors()}; blocks streamed to an executor are lost with it: "
                f"use --data-access shared where the executors see the files, or give them more memory "
                f"(spark.executor.memory is {self._executor_memory})")

    def _lost_executors(self) -> str:
        """``: N executors lost (last: why)``, from Spark's status store, or nothing."""
        try:
            executors = self._sc._jsc.sc().statusStore().executorList(False)
            reasons = []
            for i in range(executors.size()):
                e = executors.apply(i)
                if not e.isActive() and e.removeReason().isDefined():
                    reasons.append(str(e.removeReason().get()).splitlines()[0])
        except Exception:   # the store is a courtesy; the reason stands without it
            return ""
        if not reasons:
            return ""
        memory = " (exit code 52 is an executor's OutOfMemoryError: raise spark.executor.memory)" \
            if any("code 52" in r or "OutOfMemory" in r for r in reasons) else ""
        return f": {len(reasons)} executor(s) lost (last: {reasons[-1]}){memory}"

    def check(self) -> str | None:
        """Why Spark cannot go on, or None; keeps the first reason found."""
        if self.reason is None:
            why = self.jvm_ended()
            if why is None:
                try:
                    why = self._spark_state()
                except Exception:   # the gateway is gone: the JVM is ending, its exit code will say why
                    why = self.jvm_ended(wait=2.0)
            self.reason = self.reason or why
        return self.reason

    def diagnose(self) -> str | None:
        """After a call into Spark failed: the run-ending reason behind it, if there is one."""
        return self.reason or self.jvm_ended(wait=2.0) or self.check()

    # ----------------------------------------------------------------- the thread

    def _watch(self) -> None:
        while not self._stop.wait(self._period):
            if self.check() is not None:
                self._end()
                return

    def _end(self) -> None:
        """Unblock the driver: cancel the jobs, then, if it is still blocked, end the JVM."""
        try:
            self._sc.cancelAllJobs()
        except Exception:
            pass
        if not self._stop.wait(GRACE_SECONDS) and self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
