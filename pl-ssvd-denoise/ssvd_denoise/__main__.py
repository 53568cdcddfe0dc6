"""pl-ssvd-denoise: the distributed stochastic SVD of each CT series, on Apache Spark."""

import os
import sys
import time
from argparse import ArgumentDefaultsHelpFormatter, ArgumentParser, Namespace
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from chris_plugin import chris_plugin
from py4j.protocol import Py4JError
from pyspark.errors import PySparkException

from ctsvd_common import atomic, contract
from ctsvd_common.stage import (InputFailed, Stage, StageError, UsageError, add_policy_flags, reports_missing_input,
                                run_stage)
from ssvd_denoise import __version__, interrupts, kubernetes, local, localspark, session
from ssvd_denoise.blocks import (MAX_BLOCK_BYTES, PAGE, STREAM_BLOCK_BYTES, SparkBlocks, auto_partitions,
                                 pages_are_private)
from ssvd_denoise.factors import SvdResult
from ssvd_denoise.gram import GRAM_MAX_SLICES, METHODS, choose_method, gram_svd
from ssvd_denoise.halko import stochastic_svd
from ssvd_denoise.watchdog import Watchdog

DATA_ACCESS = ("auto", "shared", "stream")

MODES = ("both", "global", "local")

parser = ArgumentParser(
    description="Denoise each CT series with SVDs on Apache Spark. Global: factor the series (slices × "
    "pixels) as U·diag(s)·Vt with a randomized (Halko) SVD distributed over pixels, the knobs of Mahout's "
    "dssvd(k, p, q); render rebuilds it at a rank (the paper's method). Local: denoise small patches "
    "across neighbouring slices by SVD, each with its own noise estimate, then Wiener-filter groups of "
    "similar patches in their higher-order SVD basis, spread over Spark by slabs (the recommended output). Input: the series folders of pl-dicom2matrix. Output: the same folders "
    "with U.npy, s.npy, Vt.npy and svd.json (global) and local.npy and local.json (local) added.",
    formatter_class=ArgumentDefaultsHelpFormatter,
)
parser.add_argument("--mode", type=str, default="both",
                    help="both, global (the truncated SVD of the whole series) or local (SVDs of patches "
                    "across neighbouring slices)")
parser.add_argument("--method", type=str, default="auto", choices=METHODS,
                    help="global SVD: gram (exact, from the slices × slices Gram matrix: two passes), randomized "
                    f"(Halko's sampling with --k, --oversample, --power-iters, --seed), or auto (gram up to "
                    f"{GRAM_MAX_SLICES} slices, randomized above)")
parser.add_argument("--k", type=int, default=50, help="number of singular components (eigen-images) to compute; clipped to the number of slices")
parser.add_argument("--oversample", type=int, default=15, help="extra random sample vectors p (the sample has k + p columns)")
parser.add_argument("--power-iters", dest="power_iters", type=int, default=2, help="power (subspace) iterations q; each is one pass over the data")
parser.add_argument("--seed", type=int, default=0, help="seed of the random test matrix (0 or more); equal seeds give equal results")
parser.add_argument("--master", type=str, default="local[*]", help="Spark master: local[*], spark://HOST:7077 or k8s://https://HOST:PORT")
parser.add_argument("--partitions", type=int, default=0, help="pixel blocks per series; 0 picks one per core (more for very large series)")
parser.add_argument("--data-access", dest="data_access", type=str, default="auto", choices=DATA_ACCESS,
                    help="how executors reach the volume: shared (they read the file), stream (the driver sends "
                    "blocks, Spark caches them), auto (shared when every executor sees the file)")
parser.add_argument("--spark-conf", dest="spark_conf", type=str, default="",
                    help="extra Spark settings, comma-separated key=value pairs, e.g. spark.executor.memory=4g")
kubernetes.add_flags(parser)
add_policy_flags(parser)


@reports_missing_input(parser)
@chris_plugin(
    parser=parser,
    title="Distributed stochastic SVD of CT series (Spark)",
    category="Imaging",
    min_memory_limit="2Gi",
    min_cpu_limit="2000m",
)
def main(options: Namespace, inputdir: Path, outputdir: Path) -> int:
    # Executors resolve relative paths against their own working folder, not ours.
    inputdir, outputdir = Path(inputdir).absolute(), Path(outputdir).absolute()
    return run_stage("ssvd_denoise", __version__, options, inputdir, outputdir,
                     lambda stage: decompose_all_until_stopped(stage, options))


def decompose_all_until_stopped(stage: Stage, options: Namespace) -> None:
    """:func:`decompose_all`, turning SIGTERM and SIGINT into a run-ending error that the report keeps."""
    try:
        with interrupts.signals_raise():
            decompose_all(stage, options)
    except (interrupts.Interrupted, KeyboardInterrupt) as e:
        name = e.signal_name if isinstance(e, interrupts.Interrupted) else "SIGINT"
        stage.summary["interrupted"] = name
        raise StageError(f"the run was interrupted by {name}: the series in progress was discarded, "
                         f"{len(stage.outputs)} finished series were kept") from None


def decompose_all(stage: Stage, options: Namespace) -> None:
    extra_conf = check_options(options)
    if kubernetes.is_kubernetes(options.master):
        # --spark-conf still has the last word.
        extra_conf = {**kubernetes.spark_conf(options, stage.inputdir, stage.outputdir), **extra_conf}
    series = contract.find_series(stage.inputdir)
    if not series:
        raise StageError(f"no series found in {stage.inputdir}: expected folders with "
                         f"{contract.MANIFEST} written by pl-dicom2matrix")
    stage.summary["series"] = len(series)
    stage.log.info("%d series to decompose", len(series))

    # Everything that needs no Spark is checked first, so a bad series costs no JVM.
    ready: list[Series] = []
    for series_dir in series:
        with stage.guard(series_dir, "series"):
            ready.append(check_series(stage, series_dir, options.k))
    if not ready:
        stage.log.error("none of the %d series can be decomposed; Spark was not started", len(series))
        return

    if (why := session.unreachable_master(options.master)) is not None:
        raise StageError(why)
    with stage.timed(f"starting Spark ({options.master})"):
        try:
            sc = session.start(options.master, extra_conf)
        except Exception as e:  # pyspark raises its own and Py4J's types, and RuntimeError
            raise StageError(f"cannot start Spark with master {options.master}: {session.failure_reason(e)}") from None
    interrupts.reclaim()
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
                        decompose_series(stage, sc, item, options)
                    except Exception as e:
                        raise series_failure(stage, e, item, watchdog) from None
        # Executors register as they come; after the jobs, all that worked are known.
        stage.summary["spark"] = session.describe(sc)
    finally:
        if (why := session.stop(sc)) is not None:
            stage.log.warning("Spark did not stop cleanly: %s", why)


def series_failure(stage: Stage, e: Exception, item: "Series", watchdog: Watchdog) -> Exception:
    """What a series' exception means: the end of the run when Spark cannot go on (the watchdog's
    reason), a failed series with a one-line reason, or the exception itself (a bug)."""
    if isinstance(e, (Py4JError, PySparkException, OSError, EOFError)) and (why := watchdog.diagnose()):
        return StageError(f"{why}; the series in progress was discarded")
    if isinstance(e, contract.ContractError):
        return InputFailed(local_reason(e, item.source))
    if isinstance(e, (Py4JError, PySparkException)):
        stage.log.debug("Spark failure in full", exc_info=True)
        return InputFailed(f"Spark job failed: {watchdog.explain(session.failure_reason(e))}")
    return e


def check_options(options: Namespace) -> dict[str, str]:
    """Refuse every unusable flag value before any work; return the extra Spark settings."""
    if options.mode not in MODES:
        raise UsageError(f"--mode: expected one of {', '.join(MODES)}, got {options.mode!r}")
    if options.k < 1:
        raise UsageError(f"--k: expected a whole number of 1 or more, got {options.k}")
    for flag, value in (("--oversample", options.oversample), ("--power-iters", options.power_iters),
                        ("--partitions", options.partitions), ("--seed", options.seed)):
        if value < 0:
            raise UsageError(f"{flag}: expected a whole number of 0 or more, got {value}")
    if kubernetes.is_kubernetes(options.master) and (why := kubernetes.check(options)) is not None:
        raise UsageError(why)
    try:
        return session.parse_conf(options.spark_conf)
    except ValueError as e:
        raise UsageError(str(e)) from None


@dataclass
class Series:
    """A series that passed every check that needs no Spark."""

    source: Path
    shape: tuple[int, int, int]
    warnings: list[str]


def check_series(stage: Stage, series_dir: Path, k: int) -> Series:
    """Check one series without Spark; :class:`InputFailed` names the first problem."""
    missing = [name for name in contract.PASSED_FORWARD if not (series_dir / name).exists()]
    if missing:
        raise InputFailed(f"{', '.join(missing)} missing from the series folder")
    try:
        volume = contract.open_volume(series_dir, contract.read_manifest(series_dir))
    except contract.ContractError as e:
        raise InputFailed(local_reason(e, series_dir)) from None
    m, rows, cols = volume.shape
    if m < 2:
        raise InputFailed(f"the volume has {m} slice(s); an SVD needs at least 2")
    if min(rows, cols) < 2:
        raise InputFailed(f"the slices are {rows} x {cols} pixels; the local SVD needs 2 or more each way")
    if m > rows * cols:
        raise InputFailed(f"the volume has more slices ({m}) than pixels per slice ({rows * cols})")
    nonfinite, nonzero = scan_values(volume)
    if nonfinite:
        raise InputFailed(f"the volume holds {nonfinite} non-finite values (NaN or infinity)")
    if not nonzero:
        raise InputFailed("the volume is all zeros: there is nothing to decompose")
    warnings = []
    if k > m:
        warnings.append(f"--k {k} is more than the {m} slices: at most {m} components are computed")
        stage.log.warning("%s: %s", stage.rel(series_dir), warnings[-1])
    return Series(series_dir, (m, rows, cols), warnings)


def scan_values(volume: np.ndarray, chunk_bytes: int = 64 << 20) -> tuple[int, bool]:
    """The number of non-finite values, and whether any value is non-zero, in one pass of bounded memory."""
    step = max(1, chunk_bytes // max(volume[0].nbytes, 1))
    nonfinite, nonzero = 0, False
    for i in range(0, len(volume), step):
        chunk = np.asarray(volume[i:i + step])
        nonfinite += chunk.size - int(np.count_nonzero(np.isfinite(chunk)))
        nonzero = nonzero or bool(chunk.any())
    return nonfinite, nonzero


def local_reason(e: Exception, series_dir: Path) -> str:
    """A contract error's message with paths relative to the series, which the log line already names."""
    return str(e).replace(f"{series_dir}{os.sep}", "")


def denoise_locally(stage: Stage, sc, item: Series, volume_path: Path, staging: Path, shared: bool) -> None:
    """local.npy and local.json: the series denoised patch by patch across neighbouring slices."""
    label = stage.rel(item.source)
    t0 = time.perf_counter()
    cluster = session.describe(sc)
    with stage.timed(f"{label}: local SVD denoising"):
        with atomic.NpyWriter(staging / contract.LOCAL, item.shape) as out:
            run = localspark.denoise(sc, volume_path, out, shared,
                                     log=lambda msg: stage.log.info("%s: %s", label, msg))
    seconds = round(time.perf_counter() - t0, 3)
    noise = run.noise
    contract.write_local(staging, contract.LocalRecord(
        plugin=f"pl-ssvd-denoise {__version__}",
        method="local SVD in two stages: patches followed across neighbouring slices and across rows, "
               "Marchenko-Pastur noise per patch, Gavish-Donoho shrinkage (the pilot); then groups of similar "
               "patches Wiener-filtered in the pilot's higher-order SVD basis",
        parameters=local.parameters(), automatic=True, noise_hu=noise, tiles=run.slabs,
        spark={**cluster, "data_access": "shared" if shared else "stream", **run.spark},
        timings={"seconds": seconds, **run.timings}))
    stage.log.info("%s: local SVD done in %.1f s over %d slabs; noise estimate %.1f HU (median; 10-90%%: %.1f-%.1f)",
                   label, seconds, run.slabs, noise["median"], noise["p10"], noise["p90"])


def decompose_series(stage: Stage, sc, item: Series, options: Namespace) -> None:
    series_dir = item.source
    out_dir = stage.outputdir / series_dir.relative_to(stage.inputdir)
    m, rows, cols = item.shape
    n = rows * cols
    label = stage.rel(series_dir)

    with atomic.staged_dir(out_dir) as staging:
        how = contract.pass_forward(series_dir, staging)
        stage.log.info("%s: volume, manifest and headers passed forward (%s)", label, how)
        volume_path = series_dir / contract.VOLUME
        shared = {"shared": True, "stream": False}.get(options.data_access)
        if shared is None:
            shared = session.executors_see(sc, [volume_path, staging])
        stage.log.info("%s: %d slices of %d×%d (%.0f MB), %s data access",
                       label, m, rows, cols, m * n * 4 / 1e6, "shared" if shared else "streamed")
        if options.mode in ("both", "local"):
            denoise_locally(stage, sc, item, volume_path, staging, shared)
        if options.mode == "local":
            stage.output(out_dir, local=True)
            return
        partitions = options.partitions or auto_partitions(
            m, n, sc.defaultParallelism, MAX_BLOCK_BYTES if shared else STREAM_BLOCK_BYTES)
        with stage.timed(f"{label}: {'mapping' if shared else 'sending'} the blocks"):
            blocks = SparkBlocks(sc, volume_path, m, n, partitions, shared)
        stage.log.info("%s: %d pixel blocks for the global SVD", label, blocks.partitions)
        writer: list = []  # the Vt file, created once the SVD knows k
        # Executors write their own columns of Vt where none can share a page with another, or
        # where they all share this host's page cache; otherwise Vt comes back through the driver.
        executors_write = shared and (pages_are_private(n) or session.is_local(options.master))

        def vt_out(k: int):
            writer.append(atomic.NpyWriter(staging / contract.SVD_VT, (k, n), align=PAGE))
            return writer[0].temp_path if executors_write else writer[0].array

        method, reason = choose_method(options.method, m)

        def log(msg: str) -> None:
            stage.log.info("%s: %s", label, msg)

        try:
            if method == "gram":
                log(f"exact SVD from the Gram matrix, k={options.k} ({reason})")
                with stage.timed(f"{label}: Gram SVD"):
                    result = gram_svd(blocks, options.k, vt_out=vt_out, log=log)
            else:
                log(f"randomized SVD, k={options.k} p={options.oversample} q={options.power_iters} ({reason})")
                with stage.timed(f"{label}: randomized SVD"):
                    result = stochastic_svd(blocks, options.k, vt_out=vt_out, oversample=options.oversample,
                                            power_iters=options.power_iters, seed=options.seed, log=log)
        finally:
            blocks.release()
        writer[0].commit()
        atomic.save_npy(staging / contract.SVD_U, result.U.astype(np.float32))
        atomic.save_npy(staging / contract.SVD_S, result.s.astype(np.float32))
        contract.write_svd(staging, svd_record(result, reason, item, blocks, shared, session.describe(sc),
                                               vt_by="executors" if executors_write else "driver"))

    stage.output(out_dir, k=result.k, method=result.method, relative_error=round(result.relative_error, 6),
                 seconds=result.seconds)
    stage.log.info("%s: %s, k=%d, s[0]=%.4g, s[k-1]=%.4g, relative error %.4g",
                   label, result.method, result.k, result.s[0], result.s[-1], result.relative_error)


ALGORITHMS = {
    "gram": "exact: eigen-decomposition of the slices × slices Gram matrix A·Aᵀ accumulated in float64 over "
            "pixel blocks (treeAggregate), then Vt = Σ⁻¹Uᵀ·A in one more pass",
    "randomized": "randomized subspace iteration with Rayleigh-Ritz (Halko, Martinsson & Tropp 2011), "
                  "float64 passes over float32 data, distributed over pixel blocks",
}


def svd_record(result: SvdResult, reason: str, item: Series, blocks: SparkBlocks, shared: bool,
               cluster: dict, vt_by: str) -> contract.SvdRecord:
    """The machine-readable account of one decomposition (svd.json)."""
    energy = result.s.astype(float) ** 2 / result.frobenius_norm ** 2 if result.frobenius_norm else result.s * 0
    return contract.SvdRecord(
        plugin=f"pl-ssvd-denoise {__version__}",
        method=result.method,
        method_reason=reason,
        algorithm=ALGORITHMS[result.method],
        matrix={"rows": item.shape[0], "cols": item.shape[1] * item.shape[2], "rows_are": "slices",
                "cols_are": "pixels (row-major within a slice)", "volume_shape": list(item.shape)},
        k=result.k,
        requested_k=result.requested_k,
        oversample=result.oversample,
        power_iters=result.power_iters,
        seed=result.seed,
        sample_rank=result.sample_rank,
        singular_values=[float(x) for x in result.s],
        energy_fraction=[float(x) for x in energy],
        frobenius_norm=result.frobenius_norm,
        residual_norm=result.residual_norm,
        relative_error=result.relative_error,
        spark={**cluster, "partitions": blocks.partitions, "data_access": "shared" if shared else "stream",
               "vt_written_by": vt_by},
        timings={"passes": result.passes, "total_seconds": result.seconds},
        warnings=item.warnings,
    )


if __name__ == "__main__":
    sys.exit(main())
