"""Starting Spark for the plugin, and learning what its executors can see."""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import threading
from functools import partial
from pathlib import Path

from ssvd_denoise.spark import masterprobe

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

# A live master answers the reachability probe in milliseconds.
PROBE_SECONDS = 10.0


def unreachable_master(master: str, timeout: float = PROBE_SECONDS) -> str | None:
    """Why no master of a ``spark://`` URL answers, in one line, or None; other masters are not probed.

    Each address (standby masters are comma-separated) is asked in Spark's own
    RPC protocol (see :mod:`masterprobe`): a port that merely accepts is no master.
    """
    if not master.startswith("spark://"):
        return None
    reasons = []
    for address in master[len("spark://"):].split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            why = masterprobe.probe(host, int(port), timeout)
        except ValueError:
            why = "not host:port"
        if why is None:
            return None
        reasons.append(f"{address.strip()}: {why}")
    return f"no Spark master answered at {master} within {timeout:g} s ({'; '.join(reasons)})"


def failure_reason(e: BaseException) -> str:
    """One line from a Spark or Py4J error: the innermost Java cause when there is one, and the Spark
    settings the rest of the error names (Spark's advice is often on a line of its own)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    causes = [line for line in lines if line.startswith("Caused by:")]
    if causes:
        line = causes[-1][len("Caused by:"):].strip()
    else:
        java = [line.lstrip(": ") for line in lines if line.startswith(": ")]
        line = java[0] if java else (lines[0] if lines else type(e).__name__)
    settings = sorted({name for name in re.findall(r"(?<![\w.])spark\.[a-z][a-zA-Z.]*[a-zA-Z]", str(e)) if name not in line})
    return f"{line} (see {', '.join(settings)})" if settings else line


def is_local(master: str) -> bool:
    return master == "local" or master.startswith("local[")


def cpu_limit(cgroup: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPUs this process's cgroup may use (a container's cpu_limit), or None when unlimited or unknown.

    cgroup v2 keeps it in ``cpu.max`` ("QUOTA PERIOD" or "max PERIOD"), v1 in
    ``cpu.cfs_quota_us`` (-1: none) and ``cpu.cfs_period_us``.
    """
    try:
        if (cgroup / "cpu.max").is_file():
            quota, period = (cgroup / "cpu.max").read_text().split()[:2]
        else:
            v1 = cgroup / "cpu" if (cgroup / "cpu").is_dir() else cgroup
            quota, period = ((v1 / f).read_text().strip() for f in ("cpu.cfs_quota_us", "cpu.cfs_period_us"))
        if quota in ("max", "-1"):
            return None
        return int(quota) / int(period)
    except (OSError, ValueError):
        return None


def local_master(master: str, cgroup: Path = Path("/sys/fs/cgroup")) -> str:
    """``local[*]`` as as many cores as the container may use: its CPU limit (rounded up), at most the CPUs it
    may run on. ChRIS gives each job a ``cpu_limit``; Spark's ``*`` counts the machine's cores."""
    if master != "local[*]":
        return master
    cores = len(os.sched_getaffinity(0))
    limit = cpu_limit(cgroup)
    return f"local[{min(cores, math.ceil(limit)) if limit else cores}]"


def start(master: str, extra_conf: dict[str, str]):
    """A SparkContext for ``master``, tuned for a few large NumPy tasks.

    * A bare SparkContext, not a SparkSession: the plugin uses RDDs only, and
      the session's SQL machinery added about 2 s to every start (measured
      side by side on 2 cores: 5.5-6.7 s against 7.8-9.4 s to the end of a
      first job).

    * Python workers run this interpreter, so executors on this host import
      the same packages (on a cluster, set ``spark.pyspark.python`` or use
      this plugin's image for the executors).
    * Each task computes with one BLAS thread: Spark already runs one task
      per core, and nested threads would oversubscribe them.
    * The console progress bar is shown when stderr is a terminal.
    * The run ends rather than hangs (see :mod:`ssvd_denoise.spark.watchdog`): an
      OutOfMemoryError ends the driver's JVM (``-XX:+ExitOnOutOfMemoryError``,
      before any Java options given), and an executor that stops sending
      heartbeats is declared lost after 45 s, checked every 5 s (Spark's
      defaults: 120 s, every 60 s).
    """
    from pyspark import SparkConf, SparkContext

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    task_cpus = extra_conf.get("spark.task.cpus", "1")
    conf = {
        "spark.app.name": "ssvd_denoise",
        "spark.ui.showConsoleProgress": "true" if sys.stderr.isatty() else "false",
        "spark.python.worker.reuse": "true",
    }
    conf.update({f"spark.executorEnv.{v}": task_cpus for v in THREAD_VARIABLES})
    if is_local(master):
        # No web UI to serve, and no need to resolve this host's name in a container.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        conf.update({"spark.ui.enabled": "false", "spark.driver.host": "127.0.0.1",
                     "spark.driver.bindAddress": "127.0.0.1"})
    conf.update({"spark.storage.blockManagerHeartbeatTimeoutMs": "45000", "spark.network.timeoutInterval": "5s"})
    conf.update(extra_conf)
    conf["spark.driver.extraJavaOptions"] = " ".join(
        filter(None, ["-XX:+ExitOnOutOfMemoryError", extra_conf.get("spark.driver.extraJavaOptions", "")]))

    sc = SparkContext(conf=SparkConf().setMaster(local_master(master)).setAll(conf.items()))
    sc.setLogLevel("WARN")
    # A JVM that ends mid-call (out of memory, killed) breaks the gateway and the accumulator socket;
    # the run says why in one line (ssvd_denoise.spark.watchdog), so their tracebacks are kept off the terminal,
    # up to the end of the process (Py4J objects freed at exit call the gateway too).
    logging.getLogger().addFilter(_QUIET)
    sc._accumulatorServer.handle_error = lambda request, client_address: None
    return sc


def stop(sc) -> str | None:
    """Stop Spark; why it did not stop cleanly, or None.

    After a signal has cut a Py4J call short, or the JVM has ended, the
    gateway refuses further calls. The JVM then ends with this process anyway: it exits when its
    standard input, a pipe from here, closes.
    """
    from py4j.protocol import Py4JError

    try:
        sc.stop()
    except (Py4JError, OSError) as e:
        return failure_reason(e)
    return None


def cancel_jobs_soon(sc) -> None:
    """Cancel Spark's jobs from a thread of its own, now (safe in a signal handler).

    A signal that cuts a call into Spark short leaves that call's answer due
    on the thread's gateway connection, and the thread's next call (PySpark
    makes one as the exception unwinds) reads it: it waits for the cut call's
    job to end, minutes for a series. Cancelled, the jobs end at once.
    """
    threading.Thread(target=_cancel_jobs, args=(sc,), daemon=True).start()


def _cancel_jobs(sc) -> None:
    try:
        sc.cancelAllJobs()
    except Exception:   # the JVM may be gone already; stop() says so
        pass


class _WithoutPy4JTraceback(logging.Filter):
    """Py4J logs a broken gateway call with its traceback on the root logger; the caller says it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Exception while sending command."


_QUIET = _WithoutPy4JTraceback()


def describe(sc) -> dict:
    """The facts about the cluster that the SVD's JSON records."""
    # The JVM lists the driver among the block managers; in local mode it is the executor.
    managers = sc._jsc.sc().getExecutorMemoryStatus().size()
    return {
        "master": sc.master,
        "spark_version": sc.version,
        "default_parallelism": sc.defaultParallelism,
        "executors": managers if is_local(sc.master) else max(managers - 1, 0),
    }


def executor_cores(sc) -> list[int]:
    """The cores of each live executor (in local mode, the driver's), from Spark's status store.

    Not ``defaultParallelism``: on a cluster that is at least 2 whatever the cores.
    """
    executors = sc._jsc.sc().statusStore().executorList(True)
    cores = [executors.apply(i).totalCores() for i in range(executors.size())
             if is_local(sc.master) or executors.apply(i).id() != "driver"]
    return [c for c in cores if c > 0] or [max(sc.defaultParallelism, 1)]


def _load_kernels(_item) -> int:
    from ssvd_denoise.factor import kernels  # noqa: F401  (imports NumPy)
    return os.getpid()


def start_workers(sc) -> int:
    """Start one Python worker per core and import the kernels there; how many distinct workers ran.

    Spark starts Python workers lazily, on the first task; with
    ``spark.python.worker.reuse`` they then stay. Starting them here keeps
    that one-off cost (seconds) out of the first pass's timing.
    """
    tasks = max(sc.defaultParallelism, 1)
    return len(set(sc.parallelize(range(tasks), tasks).map(_load_kernels).collect()))


def _all_exist(paths: list[str], _item) -> bool:
    return all(os.path.exists(p) for p in paths)


def executors_see(sc, paths: list[Path]) -> bool:
    """Whether every executor sees ``paths``; probed with one small task per core."""
    if is_local(sc.master):
        return True
    names = [str(p) for p in paths]
    tasks = max(sc.defaultParallelism, 1)
    return all(sc.parallelize(range(tasks), tasks).map(partial(_all_exist, names)).collect())
