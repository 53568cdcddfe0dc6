"""One series through the denoisers: its folder passed forward, then ``local.npy`` (the local denoiser)
and the global SVD's factors, each with its JSON record."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import numpy as np

from ctsvd_common import atomic, contract
from ctsvd_common.stage import Stage
from ssvd_denoise import local, record
from ssvd_denoise.factor import SvdResult
from ssvd_denoise.factor.gram import choose_method, gram_svd
from ssvd_denoise.factor.halko import stochastic_svd
from ssvd_denoise.local import spark as local_spark
from ssvd_denoise.options import Settings
from ssvd_denoise.series import Series
from ssvd_denoise.spark import session
from ssvd_denoise.spark.blocks import (MAX_BLOCK_BYTES, PAGE, STREAM_BLOCK_BYTES, SparkBlocks, auto_partitions,
                                       pages_are_private)


def denoise_series(stage: Stage, sc, item: Series, settings: Settings) -> None:
    """The series' output folder, made in a staging folder and published whole."""
    series_dir = item.source
    out_dir = stage.outputdir / series_dir.relative_to(stage.inputdir)
    m, rows, cols = item.shape
    label = stage.rel(series_dir)

    with atomic.staged_dir(out_dir) as staging:
        how = contract.pass_forward(series_dir, staging)
        stage.log.info("%s: volume, manifest and headers passed forward (%s)", label, how)
        volume_path = series_dir / contract.VOLUME
        shared = {"shared": True, "stream": False}.get(settings.data_access)
        if shared is None:
            shared = session.executors_see(sc, [volume_path, staging])
        stage.log.info("%s: %d slices of %d×%d (%.0f MB), %s data access",
                       label, m, rows, cols, m * rows * cols * 4 / 1e6, "shared" if shared else "streamed")
        model = None
        if settings.mode in ("both", "local"):
            model = denoise_locally(stage, sc, item, volume_path, staging, shared)
        if settings.mode == "local":
            stage.output(out_dir, local=True)
            return
        result = decompose_globally(stage, sc, item, volume_path, staging, shared, settings, model)

    stage.output(out_dir, k=result.k, method=result.method, relative_error=round(result.relative_error, 6),
                 seconds=result.seconds)
    stage.log.info("%s: %s, k=%d, s[0]=%.4g, s[k-1]=%.4g, relative error %.4g",
                   label, result.method, result.k, result.s[0], result.s[-1], result.relative_error)


def denoise_locally(stage: Stage, sc, item: Series, volume_path: Path, staging: Path, shared: bool) -> dict | None:
    """local.npy and local.json: the series denoised patch by patch across neighbouring slices.
    Returns the measured noise model (None when the series was too small to measure it)."""
    label = stage.rel(item.source)
    t0 = time.perf_counter()
    cluster = session.describe(sc)
    with stage.timed(f"{label}: local SVD denoising"):
        with atomic.NpyWriter(staging / contract.LOCAL, item.shape) as out:
            params, found = local.measured(np.load(volume_path, mmap_mode="r"))
            run = local_spark.denoise(sc, volume_path, out, shared, params,
                                      log=partial(stage.log.info, "%s: %s", label))
    seconds = round(time.perf_counter() - t0, 3)
    noise = found["noise"]
    sigma = {k: noise["sigma_hu"][k] for k in ("uniform", "p10", "median", "p90") if k in noise["sigma_hu"]}
    contract.write_local(staging, record.local_record(
        params, found, sigma, tiles=run.slabs, spark={**cluster, "data_access": "shared" if shared else "stream",
                                                      **run.spark},
        timings={"seconds": seconds, **run.timings}))
    stage.log.info("%s: local SVD done in %.1f s over %d slabs; noise %.1f HU in uniform regions (cells 10-90%%: "
                   "%.1f-%.1f), slice correlation %.2f, stage 2 strength %g (SURE)", label, seconds, run.slabs,
                   sigma.get("uniform", sigma["median"]), sigma["p10"], sigma["p90"],
                   noise["slice_correlation"][1],
                   found["choices"]["stage 2 strength"]["strength"])
    return noise if "unmeasured" not in noise else None


class VtFile:
    """``Vt.npy``, made once the SVD knows k (the SVD calls it with k).

    Executors write their own columns of Vt into its file where none can share
    a page with another, or where they all share this host's page cache;
    otherwise Vt comes back through the driver, into its array.
    """

    def __init__(self, path: Path, n: int, executors_write: bool):
        self.path, self.n, self.executors_write = path, n, executors_write
        self.writer: atomic.NpyWriter | None = None

    def __call__(self, k: int) -> np.ndarray | Path:
        self.writer = atomic.NpyWriter(self.path, (k, self.n), align=PAGE)
        return self.writer.temp_path if self.executors_write else self.writer.array


def decompose_globally(stage: Stage, sc, item: Series, volume_path: Path, staging: Path, shared: bool,
                       settings: Settings, model: dict | None) -> SvdResult:
    """U.npy, s.npy, Vt.npy and svd.json: the truncated SVD of the series (slices × pixels).
    ``model`` is the noise the local denoiser measured, if it ran."""
    m, rows, cols = item.shape
    n = rows * cols
    label = stage.rel(item.source)
    partitions = settings.partitions or auto_partitions(
        m, n, sc.defaultParallelism, MAX_BLOCK_BYTES if shared else STREAM_BLOCK_BYTES)
    with stage.timed(f"{label}: {'mapping' if shared else 'sending'} the blocks"):
        blocks = SparkBlocks(sc, volume_path, m, n, partitions, shared)
    stage.log.info("%s: %d pixel blocks for the global SVD", label, blocks.partitions)
    vt = VtFile(staging / contract.SVD_VT, n, shared and (pages_are_private(n) or session.is_local(settings.master)))
    method, reason = choose_method(settings.method, m)
    log = partial(stage.log.info, "%s: %s", label)
    try:
        if method == "gram":
            log(f"exact SVD from the Gram matrix, k={settings.k} ({reason})")
            with stage.timed(f"{label}: Gram SVD"):
                result = gram_svd(blocks, settings.k, vt_out=vt, log=log)
        else:
            log(f"randomized SVD, k={settings.k} p={settings.oversample} q={settings.power_iters} ({reason})")
            with stage.timed(f"{label}: randomized SVD"):
                result = stochastic_svd(blocks, settings.k, vt_out=vt, oversample=settings.oversample,
                                        power_iters=settings.power_iters, seed=settings.seed, log=log)
    finally:
        blocks.release()
    vt.writer.commit()
    atomic.save_npy(staging / contract.SVD_U, result.U.astype(np.float32))
    atomic.save_npy(staging / contract.SVD_S, result.s.astype(np.float32))
    if model is None:
        with stage.timed(f"{label}: measuring the noise"):
            model = record.noise_model(np.load(volume_path, mmap_mode="r"))
    contract.write_svd(staging, record.svd_record(
        result, reason, item, blocks.partitions, shared, session.describe(sc),
        vt_by="executors" if vt.executors_write else "driver", model=model))
    return result

