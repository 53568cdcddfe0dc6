"""One run of the plugin: check the series, start Spark, denoise each series, stop Spark."""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path

from py4j.protocol import Py4JError
from pyspark.errors import PySparkException

from ctsvd_common import contract, interrupts, resources
from ctsvd_common.contract import relative_reason
from ctsvd_common.stage import InputFailed, Stage, StageError, UsageError, run_stage
from ssvd_denoise import __version__
from ssvd_denoise.denoise import denoise_series
from ssvd_denoise.options import Settings
from ssvd_denoise.series import Series, check_series
from ssvd_denoise.spark import kubernetes, session
from ssvd_denoise.spark.conf import parse_conf
from ssvd_denoise.spark.watchdog import Watchdog


def run(settings: Settings, inputdir: Path, outputdir: Path) -> int:
    """Denoise every series of ``inputdir`` into ``outputdir``; the exit code (see :mod:`ctsvd_common.stage`)."""
    # Executors resolve relative paths against their own working folder, not ours.
    inputdir, outputdir = Path(inputdir).absolute(), Path(outputdir).absolute()
    return run_stage("ssvd_denoise", __version__, settings, inputdir, outputdir,
                     partial(denoise_all, settings=settings))


def denoise_all(stage: Stage, settings: Settings) -> None:
    """The run's body (see :func:`ctsvd_common.stage.run_stage`)."""
    try:
        extra_conf = parse_conf(settings.spark_conf)   # checked as argparse read it; this is for settings made in code
    except ValueError as e:
        raise UsageError(f"--spark-conf: {e}") from None
    try:
        k8s = settings.kubernetes.with_environment()
        image, source = (kubernetes.executor_image(settings.kubernetes, extra_conf)
                         if kubernetes.is_kubernetes(settings.master) else ("", ""))
    except ValueError as e:
        raise UsageError(str(e)) from None
    # The report lists the Kubernetes settings in force, whether a flag or the environment gave them.
    stage.parameters.update(dataclasses.asdict(k8s))
    if image:
        stage.log.info("executor image: %s (from %s)", image, source)
        # --spark-conf still has the last word.
        extra_conf = {**kubernetes.spark_conf(k8s, stage.inputdir, stage.outputdir), **extra_conf}
    settings = dataclasses.replace(settings, master=capped_master(stage, settings.master))
    series = contract.find_series(stage.inputdir)
    if not series:
        raise StageError(f"no series found in the input folder: expected folders with "
                         f"{contract.MANIFEST} written by pl-dicom2matrix")
    stage.summary["series"] = len(series)
    stage.log.info("%d series to decompose", len(series))

    # Everything that needs no Spark is checked first, so a bad series costs no JVM.
    ready: list[Series] = []
    budget = resources.Budget(stage.outputdir)
    for series_dir in series:
        with stage.guard(series_dir, "series"):
            ready.append(check_series(stage, series_dir, settings, budget))
    if not ready:
        stage.log.error("none of the %d series can be decomposed; Spark was not started", len(series))
        return

    if (why := session.unreachable_master(settings.master)) is not None:
        raise StageError(why)
    with stage.timed(f"starting Spark ({settings.master})"):
        try:
            sc = session.start(settings.master, extra_conf)
        except Exception as e:  # pyspark raises its own and Py4J's types, and RuntimeError
            raise StageError(f"cannot start Spark with master {settings.master}: {session.failure_reason(e)}") from None
    interrupts.reclaim()   # PySpark took SIGINT over
    try:
        stage.log.info("Spark %s, master %s, %d cores", sc.version, sc.master, sc.defaultParallelism)
        with interrupts.on_signal(partial(session.cancel_jobs_soon, sc)), Watchdog(sc) as watchdog:
            with stage.timed("starting the Python workers"):
                try:
                    session.start_workers(sc)
                except (Py4JError, PySparkException, OSError, EOFError) as e:
                    raise StageError(watchdog.diagnose() or "Spark cannot run this plugin's Python tasks: "
                                     f"{session.failure_reason(e)}") from None
            for i, item in enumerate(ready, 1):
                stage.log.info("series %d/%d: %s", i, len(ready), stage.rel(item.source))
                with stage.guard(item.source, "series"):
                    try:
                        denoise_series(stage, sc, item, settings)
                    except Exception as e:
                        raise series_failure(stage, e, item, watchdog) from None
        # Executors register as they come; after the jobs, all that worked are known.
        stage.summary["spark"] = session.describe(sc)
    finally:
        if (why := session.stop(sc)) is not None:
            stage.log.warning("Spark did not stop cleanly: %s", why)


def series_failure(stage: Stage, e: Exception, item: Series, watchdog: Watchdog) -> Exception:
    """What a series' exception means: the end of the run when Spark cannot go on (the watchdog's
    reason), a failed series with a one-line reason, or the exception itself (a bug)."""
    if isinstance(e, (Py4JError, PySparkException, OSError, EOFError)) and (why := watchdog.diagnose()):
        return StageError(f"{why}; the series in progress was discarded")
    if isinstance(e, contract.ContractError):
        return InputFailed(relative_reason(e, item.source))
    if isinstance(e, (Py4JError, PySparkException)):
        stage.log.debug("Spark failure in full", exc_info=True)
        return InputFailed(f"Spark job failed: {watchdog.explain(session.failure_reason(e))}")
    return e


def capped_master(stage: Stage, master: str) -> str:
    """``local[N]`` with N no more than the CPUs this process may use: Spark would start N task threads."""
    if not (session.is_local(master) and master[6:-1].isdigit()):
        return master
    threads, note = resources.capped_workers(int(master[6:-1]))
    if note:
        stage.log.warning("--master %s capped at local[%d]: the CPUs this process may use", master, threads)
    return f"local[{threads}]"
