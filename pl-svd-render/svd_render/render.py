"""One render run: for each series, rebuild, picture, report and write DICOM."""

from __future__ import annotations

import os
import shutil
from argparse import Namespace
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from ctsvd_common import atomic, contract, dicomfiles
from ctsvd_common.stage import InputFailed, Stage, StageError, UsageError
from svd_render import __version__, derived, images, rank, report
from svd_render.rebuild import load_factors, rebuild

DENOISED = "denoised.npy"
DICOM_DIR = "dicom"
PNG_DIR = "png"


def render_all(stage: Stage, options: Namespace) -> None:
    wanted_rank, windows = check_options(options)
    dicomfiles.quiet_pydicom()
    series = [d for d in contract.find_series(stage.inputdir) if (d / contract.SVD_JSON).exists()]
    if not series:
        raise StageError(f"no decomposed series found in {stage.inputdir}: expected folders with "
                         f"{contract.MANIFEST} and {contract.SVD_JSON} written by pl-ssvd-denoise")
    entries = []
    for i, series_dir in enumerate(series, 1):
        rel = series_dir.relative_to(stage.inputdir)
        with stage.timed(f"series {i}/{len(series)}: {rel}"), stage.guard(series_dir, "series"):
            try:
                facts = render_series(stage, series_dir, stage.outputdir / rel, options, wanted_rank, windows)
            except contract.ContractError as e:
                raise InputFailed(local_reason(e, series_dir)) from None
            entries.append({"name": str(rel), "href": f"{rel}/index.html", "facts": facts})
    if entries:
        atomic.write_text(stage.outputdir / "index.html", report.index_page("SVD-denoised CT series", entries))
    stage.summary["series"] = len(entries)


def check_options(options: Namespace) -> tuple[int | None, list]:
    """Refuse every unusable flag value before any work; return the rank asked for and the windows."""
    if options.montage_slices < 1:
        raise UsageError(f"--montage-slices: expected a whole number of 1 or more, got {options.montage_slices}")
    try:
        return rank.parse_rank(options.rank, options.percent_removed), images.parse_windows(options.windows)
    except ValueError as e:
        raise UsageError(str(e)) from None


def local_reason(e: Exception, series_dir: Path) -> str:
    """A contract error's message with paths relative to the series, which the log line already names."""
    return str(e).replace(f"{series_dir}{os.sep}", "")


def render_series(stage: Stage, series_dir: Path, out_dir: Path, options: Namespace,
                  wanted_rank: int | None, window_items: list) -> str:
    label = stage.rel(series_dir)
    manifest = contract.read_manifest(series_dir)
    volume = contract.open_volume(series_dir, manifest)
    factors = load_factors(series_dir, volume.shape)
    m, rows, cols = volume.shape
    warnings = []
    windows, missing = images.resolve_windows(window_items, manifest.window_presets)
    presets = ", ".join(manifest.window_presets) or "none"
    if not windows:
        raise InputFailed(f"--windows: this series has none of the presets asked for (it has: {presets})")
    if missing:
        warnings.append(f"--windows: {', '.join(missing)} left out, not among this series' presets ({presets})")
    choice = rank.choose(wanted_rank, options.percent_removed, factors.s, m, rows * cols,
                         factors.record.frobenius_norm)
    if choice.warning:
        warnings.append(choice.warning)
    for warning in warnings:
        stage.log.warning("%s: %s", label, warning)
    stage.log.info("%s: %s of k=%d", label, choice.describe(), factors.k)

    denoised = rebuild(factors, choice.rank, volume.shape)
    original = np.asarray(volume)
    change = float(np.linalg.norm(original - denoised) / max(np.linalg.norm(original), 1e-30))
    removed_hu = float(np.std(original - denoised))
    headers = None if options.no_dicom else read_headers(stage, series_dir, manifest, warnings)

    with atomic.staged_dir(out_dir) as staging:
        atomic.save_npy(staging / DENOISED, denoised)
        pictures = write_pictures(staging, original, denoised, windows, options.montage_slices)
        scree = images.scree_svg(factors.s, choice.rank, choice.threshold)
        atomic.write_text(staging / "scree.svg", scree)
        dicom_dir = None
        if headers is not None:
            description = f"SVD denoised r{choice.rank}/{factors.k} {manifest.series.description}".strip()
            derivation = (f"Truncated SVD: rank {choice.rank} of {factors.k} components "
                          f"({choice.method}); pl-svd-render {__version__}")
            (staging / DICOM_DIR).mkdir()
            with stage.guard(out_dir / DICOM_DIR, "derived DICOM series"):
                derived.write_series(staging / DICOM_DIR, headers, denoised, description, derivation)
                dicom_dir = DICOM_DIR
            if dicom_dir is None:  # the guard has failed it; the rest of the series stands
                shutil.rmtree(staging / DICOM_DIR)
                warnings.append("the derived DICOM series was not written: see the run report")
        contract.write_render(staging, contract.RenderRecord(
            plugin=f"pl-svd-render {__version__}", rank=choice.rank, k=factors.k, method=choice.method,
            threshold=choice.threshold, noise_singular_value=choice.noise_singular_value,
            noise_hu_estimate=(choice.noise_singular_value / np.sqrt(rows * cols)
                               if choice.noise_singular_value else None),
            relative_change=change, removed_std_hu=removed_hu, windows=[w.label for w in windows],
            denoised=DENOISED, dicom=dicom_dir, warnings=warnings))
        record = factors.record
        facts = [
            ("series", manifest.series.description or label),
            ("volume", f"{m} slices × {rows} × {cols}"),
            ("SVD", f"k = {factors.k}, oversampling {record.oversample}, "
                    f"{record.power_iters} power iterations, seed {record.seed}"),
            ("SVD error ‖A − U S Vt‖ / ‖A‖", f"{record.relative_error:.4g}"),
            ("rank kept", choice.describe()),
            ("change ‖A − A_r‖ / ‖A‖", f"{change:.4g}"),
            ("std of removed part", f"{removed_hu:.1f} HU"),
            ("slice spacing", f"{manifest.geometry.slice_spacing_mm} mm"),
        ]
        upstream = manifest.skipped + manifest.failed + manifest.skipped_elsewhere
        page = report.series_page(f"SVD denoising: {label}", facts, pictures, m, scree, dicom_dir,
                                  upstream, warnings)
        atomic.write_text(staging / "index.html", page)

    stage.output(out_dir, rank=choice.rank, k=factors.k, relative_change=round(change, 6))
    return f"{m} slices, {choice.describe()}, removed {removed_hu:.1f} HU std"


def read_headers(stage: Stage, series_dir: Path, manifest: contract.Manifest,
                 warnings: list[str]) -> list[Dataset] | None:
    """Every slice's header for the derived series, or None when one is unusable.

    The first unusable header is a failed item and a warning; the rest of the
    series (pictures, report, denoised volume) does not need headers.
    """
    paths = contract.header_files(series_dir, manifest)
    if len(paths) != manifest.shape[0]:
        return _no_dicom(stage, series_dir, series_dir / contract.MANIFEST,
                         f"lists {len(paths)} slice headers for {manifest.shape[0]} slices", warnings)
    headers = []
    for path in paths:
        try:
            headers.append(dicomfiles.read(path, pixels=False))
        except FileNotFoundError:
            return _no_dicom(stage, series_dir, path, "missing", warnings)
        except OSError as e:
            return _no_dicom(stage, series_dir, path, f"unreadable ({type(e).__name__})", warnings)
        except (dicomfiles.NotDicom, dicomfiles.BadDicom) as e:
            return _no_dicom(stage, series_dir, path, str(e), warnings)
    return headers


def _no_dicom(stage: Stage, series_dir: Path, path: Path, problem: str, warnings: list[str]) -> None:
    reason = f"{problem}; the derived DICOM series was not written"
    stage.fail(path, reason)
    warnings.append(f"{path.relative_to(series_dir)}: {reason}")
    return None


def write_pictures(staging: Path, original: np.ndarray, denoised: np.ndarray, windows, montage_slices: int) -> list[dict]:
    """Per window: every slice as PNG, original and denoised, and a montage of a few slices."""
    m = original.shape[0]
    picks = sorted(set(np.linspace(0, m - 1, min(max(montage_slices, 1), m) + 2)[1:-1].round().astype(int)))
    pictures = []
    for w in windows:
        folder = staging / PNG_DIR / w.name
        folder.mkdir(parents=True)
        names = {"original": [], "denoised": []}
        for i in range(m):
            for kind, vol in (("original", original), ("denoised", denoised)):
                name = f"{PNG_DIR}/{w.name}/{kind}-{i:04d}.png"
                images.save_png(staging / name, w.to_uint8(vol[i]))
                names[kind].append(name)
        montage_name = f"montage-{w.name}.png"
        grid = images.montage([(f"slice {i + 1}", original[i], denoised[i]) for i in picks], w)
        with atomic.atomic_path(staging / montage_name) as tmp:
            grid.save(tmp, format="PNG")
        pictures.append({"label": w.label, "montage": montage_name, **names})
    return pictures
