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

from ctsvd_common import atomic, contract, interrupts, noise, resources, walk
from ctsvd_common.stage import (InputFailed, Stage, StageError, UsageError, add_policy_flags, reports_missing_input,
                                run_stage)
from ssvd_denoise import __version__, local
from ssvd_denoise.factor import SvdResult
from ssvd_denoise.factor.gram import GRAM_MAX_SLICES, METHODS, choose_method, gram_svd
from ssvd_denoise.factor.halko import stochastic_svd
from ssvd_denoise.local import patches
from ssvd_denoise.local import spark as localspark
from ssvd_denoise.spark import kubernetes, session
from ssvd_denoise.spark.blocks import (MAX_BLOCK_BYTES, PAGE, STREAM_BLOCK_BYTES, SparkBlocks, auto_partitions,
                                       pages_are_private)
from ssvd_denoise.spark.watchdog import Watchdog

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
                     lambda stage: decompose_all(stage, options))


def decompose_all(stage: Stage, options: Namespace) -> None:
    extra_conf = check_options(options)
    options.master = capped_master(stage, options.master)
    if kubernetes.is_kubernetes(options.master):
        image, source = kubernetes.executor_image(options, extra_conf)
        stage.log.info("executor image: %s (from %s)", image, source)
        # --spark-conf still has the last word.
        extra_conf = {**kubernetes.spark_conf(options, stage.inputdir, stage.outputdir), **extra_conf}
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
            ready.append(check_series(stage, series_dir, options, budget))
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
    try:
        conf = session.parse_conf(options.spark_conf)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if kubernetes.is_kubernetes(options.master) and (why := kubernetes.check(options, conf)) is not None:
        raise UsageError(why)
    return conf


def capped_master(stage: Stage, master: str) -> str:
    """``local[N]`` with N no more than the CPUs this process may use: Spark would start N task threads."""
    if not (session.is_local(master) and master[6:-1].isdigit()):
        return master
    threads, note = resources.capped_workers(int(master[6:-1]))
    if note:
        stage.log.warning("--master %s capped at local[%d]: the CPUs this process may use", master, threads)
    return f"local[{threads}]"


@dataclass
class Series:
    """A series that passed every check that needs no Spark."""

    source: Path
    shape: tuple[int, int, int]
    warnings: list[str]


def check_series(stage: Stage, series_dir: Path, options: Namespace, budget: resources.Budget) -> Series:
    """Check one series without Spark; :class:`InputFailed` names the first problem."""
    k = options.k
    missing = [name for name in contract.PASSED_FORWARD if not (series_dir / name).exists()]
    if missing:
        raise InputFailed(f"{', '.join(missing)} missing from the series folder")
    unsafe = walk.unsafe_entry([series_dir / name for name in contract.PASSED_FORWARD], stage.inputdir)
    if unsafe is not None:   # never read, never passed forward
        raise InputFailed(f"{unsafe[0].relative_to(series_dir)}: {unsafe[1]}")
    try:
        volume = contract.open_volume(series_dir, contract.read_manifest(series_dir))
    except contract.ContractError as e:
        raise InputFailed(local_reason(e, series_dir)) from None
    m, rows, cols = volume.shape
    # Before the volume is read: a declared size that cannot fit is refused in a moment, not after a scan.
    disk, memory = needs(series_dir, stage.outputdir, volume.shape, options)
    if (why := budget.refusal(disk, memory, "for the local SVD's tiles")) is not None:
        raise InputFailed(f"{m} slices of {rows}×{cols} ({resources.size(volume.nbytes)}): {why}")
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
    budget.take(disk)
    warnings = []
    if k > m:
        warnings.append(f"--k {k} is more than the {m} slices: at most {m} components are computed")
        stage.log.warning("%s: %s", stage.rel(series_dir), warnings[-1])
    return Series(series_dir, (m, rows, cols), warnings)


def needs(series_dir: Path, outputdir: Path, shape: tuple[int, int, int], options: Namespace) -> tuple[int, int]:
    """Bytes of disk and of memory (in this process's Spark, 0 for a remote one) the series will take."""
    m, rows, cols = shape
    volume = m * rows * cols * 4
    disk = memory = 0
    if options.mode in ("both", "local"):
        disk += volume * (1 + len(patches.ENSEMBLE))   # local.npy, and its passes while it is made
        # Two tiles per core, one per core at work, each held in float64 with its float64 result.
        memory = 2 * volume if session.is_local(options.master) else 0
    if options.mode in ("both", "global"):
        k = min(options.k, m)
        disk += k * rows * cols * 4 + m * k * 4          # Vt and U
    if os.stat(series_dir / contract.VOLUME).st_dev != os.stat(outputdir).st_dev:
        disk += volume                                     # passed forward as a copy, not a link
    return disk, memory


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


def denoise_locally(stage: Stage, sc, item: Series, volume_path: Path, staging: Path, shared: bool) -> dict | None:
    """local.npy and local.json: the series denoised patch by patch across neighbouring slices.
    Returns the measured noise model (None when the series was too small to measure it)."""
    label = stage.rel(item.source)
    t0 = time.perf_counter()
    cluster = session.describe(sc)
    with stage.timed(f"{label}: local SVD denoising"):
        with atomic.NpyWriter(staging / contract.LOCAL, item.shape) as out:
            params, found = local.measured(np.load(volume_path, mmap_mode="r"))
            run = localspark.denoise(sc, volume_path, out, shared, params,
                                     log=lambda msg: stage.log.info("%s: %s", label, msg))
    seconds = round(time.perf_counter() - t0, 3)
    noise = found["noise"]
    sigma = {k: noise["sigma_hu"][k] for k in ("uniform", "p10", "median", "p90") if k in noise["sigma_hu"]}
    contract.write_local(staging, contract.LocalRecord(
        plugin=f"pl-ssvd-denoise {__version__}",
        method="local SVD in two stages against the series' measured noise (sigma map, in-plane NPS, slice "
               "correlation): patches followed across neighbouring slices and across rows, whitened and shrunk "
               "by Gavish-Donoho at the measured sigma (the pilot); then groups of similar patches "
               "Wiener-filtered in the pilot's higher-order SVD basis, each coefficient against its own noise "
               "variance, at a strength chosen by SURE",
        parameters=local.parameters(params), automatic=True, noise_hu=sigma, noise=noise,
        choices=found["choices"], tiles=run.slabs,
        spark={**cluster, "data_access": "shared" if shared else "stream", **run.spark},
        timings={"seconds": seconds, **run.timings}))
    stage.log.info("%s: local SVD done in %.1f s over %d slabs; noise %.1f HU in uniform regions (cells 10-90%%: "
                   "%.1f-%.1f), slice correlation %.2f, stage 2 strength %g (SURE)", label, seconds, run.slabs,
                   sigma.get("uniform", sigma["median"]), sigma["p10"], sigma["p90"],
                   noise["slice_correlation"][1],
                   found["choices"]["stage 2 strength"]["strength"])
    return noise if "unmeasured" not in noise else None


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
        model = None
        if options.mode in ("both", "local"):
            model = denoise_locally(stage, sc, item, volume_path, staging, shared)
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
        if model is None:
            with stage.timed(f"{label}: measuring the noise"):
                model = noise_model(np.load(volume_path, mmap_mode="r"))
        record = svd_record(result, reason, item, blocks, shared, session.describe(sc),
                            vt_by="executors" if executors_write else "driver")
        record.noise = model
        contract.write_svd(staging, record)

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
        spectrum=None if result.spectrum is None else [float(x) for x in result.spectrum],
    )


def noise_model(volume: np.ndarray) -> dict | None:
    """The series' measured noise (ctsvd_common.noise) as svd.json records it; None when the series
    is too small or all padding."""
    try:
        return noise.estimate(volume).summary()
    except ValueError:
        return None


if __name__ == "__main__":
    sys.exit(main())
