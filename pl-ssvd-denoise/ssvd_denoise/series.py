"""The checks a series passes before Spark starts, so that a bad series costs no JVM."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctsvd_common import contract, resources, walk
from ctsvd_common.contract import relative_reason
from ctsvd_common.stage import InputFailed, Stage
from ssvd_denoise.local import patches
from ssvd_denoise.options import Settings
from ssvd_denoise.spark import session


@dataclass
class Series:
    """A series that passed every check that needs no Spark."""

    source: Path
    shape: tuple[int, int, int]
    warnings: list[str]


def check_series(stage: Stage, series_dir: Path, settings: Settings, budget: resources.Budget) -> Series:
    """Check one series without Spark; :class:`InputFailed` names the first problem."""
    k = settings.k
    missing = [name for name in contract.PASSED_FORWARD if not (series_dir / name).exists()]
    if missing:
        raise InputFailed(f"{', '.join(missing)} missing from the series folder")
    unsafe = walk.unsafe_entry([series_dir / name for name in contract.PASSED_FORWARD], stage.inputdir)
    if unsafe is not None:   # never read, never passed forward
        raise InputFailed(f"{unsafe[0].relative_to(series_dir)}: {unsafe[1]}")
    try:
        volume = contract.open_volume(series_dir, contract.read_manifest(series_dir))
    except contract.ContractError as e:
        raise InputFailed(relative_reason(e, series_dir)) from None
    m, rows, cols = volume.shape
    # Before the volume is read: a declared size that cannot fit is refused in a moment, not after a scan.
    disk, memory = needs(series_dir, stage.outputdir, volume.shape, settings)
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


def needs(series_dir: Path, outputdir: Path, shape: tuple[int, int, int], settings: Settings) -> tuple[int, int]:
    """Bytes of disk and of memory (in this process's Spark, 0 for a remote one) the series will take."""
    m, rows, cols = shape
    volume = m * rows * cols * 4
    disk = memory = 0
    if settings.mode in ("both", "local"):
        disk += volume * (1 + len(patches.ENSEMBLE))   # local.npy, and its passes while it is made
        # Two tiles per core, one per core at work, each held in float64 with its float64 result.
        memory = 2 * volume if session.is_local(settings.master) else 0
    if settings.mode in ("both", "global"):
        k = min(settings.k, m)
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
