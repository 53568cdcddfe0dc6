"""One render run: for each series, rebuild, picture, report and write DICOM."""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path

import numpy as np

from ctsvd_common import atomic, contract
from ctsvd_common.stage import Stage, StageError
from svd_render import __version__, derived, images, rank, report
from svd_render.rebuild import load_factors, rebuild

DENOISED = "denoised.npy"
RENDER_JSON = "render.json"
DICOM_DIR = "dicom"
PNG_DIR = "png"


def render_all(stage: Stage, options: Namespace) -> None:
    series = [d for d in contract.find_series(stage.inputdir) if (d / contract.SVD_JSON).exists()]
    if not series:
        raise StageError(f"no decomposed series found in {stage.inputdir}: expected folders with "
                         f"{contract.MANIFEST} and {contract.SVD_JSON} written by pl-ssvd-denoise")
    entries = []
    for i, series_dir in enumerate(series, 1):
        rel = series_dir.relative_to(stage.inputdir)
        with stage.timed(f"series {i}/{len(series)}: {rel}"):
            try:
                facts = render_series(stage, series_dir, stage.outputdir / rel, options)
            except (contract.ContractError, ValueError) as e:
                stage.fail(series_dir, str(e))
                continue
        entries.append({"name": str(rel), "href": f"{rel}/index.html", "facts": facts})
    if entries:
        atomic.write_text(stage.outputdir / "index.html", report.index_page("SVD-denoised CT series", entries))
    stage.summary["series"] = len(entries)


def render_series(stage: Stage, series_dir: Path, out_dir: Path, options: Namespace) -> str:
    label = stage.rel(series_dir)
    manifest = contract.read_manifest(series_dir)
    volume = contract.open_volume(series_dir, manifest)
    factors = load_factors(series_dir, volume.shape)
    m, rows, cols = volume.shape
    windows = images.parse_windows(options.windows, manifest["window_presets"])
    choice = rank.choose(options.rank, options.percent_removed, factors.s, m, rows * cols,
                         float(factors.record["frobenius_norm"]))
    stage.log.info("%s: %s of k=%d", label, choice.describe(), factors.k)

    denoised = rebuild(factors, choice.rank, volume.shape)
    original = np.asarray(volume)
    change = float(np.linalg.norm(original - denoised) / max(np.linalg.norm(original), 1e-30))
    removed_hu = float(np.std(original - denoised))

    with atomic.staged_dir(out_dir) as staging:
        atomic.save_npy(staging / DENOISED, denoised)
        pictures = write_pictures(staging, original, denoised, windows, options.montage_slices)
        scree = images.scree_svg(factors.s, choice.rank, choice.threshold)
        atomic.write_text(staging / "scree.svg", scree)
        dicom_dir = None
        if not options.no_dicom:
            description = f"SVD denoised r{choice.rank}/{factors.k} {manifest['series'].get('description', '')}".strip()
            derivation = (f"Truncated SVD: rank {choice.rank} of {factors.k} components "
                          f"({choice.method}); pl-svd-render {__version__}")
            (staging / DICOM_DIR).mkdir()
            derived.write_series(staging / DICOM_DIR, contract.header_files(series_dir, manifest), denoised,
                                 description, derivation)
            dicom_dir = DICOM_DIR
        record = {
            "format": "ctsvd-render", "version": 1, "plugin": f"pl-svd-render {__version__}",
            "rank": choice.rank, "k": factors.k, "method": choice.method, "threshold": choice.threshold,
            "noise_singular_value": choice.noise_singular_value,
            "noise_hu_estimate": (choice.noise_singular_value / np.sqrt(rows * cols)
                                  if choice.noise_singular_value else None),
            "relative_change": change, "removed_std_hu": removed_hu,
            "windows": [w.label for w in windows], "denoised": DENOISED, "dicom": dicom_dir,
        }
        atomic.write_json(staging / RENDER_JSON, record)
        facts = [
            ("series", manifest["series"].get("description") or label),
            ("volume", f"{m} slices × {rows} × {cols}"),
            ("SVD", f"k = {factors.k}, oversampling {factors.record.get('oversample')}, "
                    f"{factors.record.get('power_iters')} power iterations, seed {factors.record.get('seed')}"),
            ("SVD error ‖A − U S Vt‖ / ‖A‖", f"{factors.record.get('relative_error', float('nan')):.4g}"),
            ("rank kept", choice.describe()),
            ("change ‖A − A_r‖ / ‖A‖", f"{change:.4g}"),
            ("std of removed part", f"{removed_hu:.1f} HU"),
            ("slice spacing", f"{manifest['geometry'].get('slice_spacing_mm')} mm"),
        ]
        page = report.series_page(f"SVD denoising: {label}", facts, pictures, m, scree, dicom_dir,
                                  manifest.get("skipped", []) + manifest.get("skipped_elsewhere", []))
        atomic.write_text(staging / "index.html", page)

    stage.output(out_dir, rank=choice.rank, k=factors.k, relative_change=round(change, 6))
    return f"{m} slices, {choice.describe()}, removed {removed_hu:.1f} HU std"


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
