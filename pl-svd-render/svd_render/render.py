"""One series rendered: the published result and the one beside it, pictured, reported and written as DICOM."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from ctsvd_common import atomic, contract, dicom, resources, walk
from ctsvd_common.stage import InputFailed, Stage
from svd_render import __version__, derived, images, report
from svd_render.options import Settings
from svd_render.results import Result, load_results

DENOISED = "denoised.npy"
NOISE_MAP = "noise-map.png"
DICOM_DIR = "dicom"
PNG_DIR = "png"
VIEWER = "viewer-{window}.jpg"


def render_series(stage: Stage, series_dir: Path, out_dir: Path, settings: Settings, wanted_rank: int | None,
                  window_items: list) -> str:
    """Render one series folder into ``out_dir``; return the line the index page says of it."""
    label = stage.rel(series_dir)
    unsafe = walk.unsafe_entry(sorted(series_dir.iterdir()), stage.inputdir)
    if unsafe is not None:   # never read, never copied into a page or a DICOM file
        raise InputFailed(f"{unsafe[0].relative_to(series_dir)}: {unsafe[1]}")
    manifest = contract.read_manifest(series_dir)
    volume = contract.open_volume(series_dir, manifest)
    m, rows, cols = volume.shape
    # The original, the published and the compared result, and their difference, in memory at once;
    # on disk the denoised volume, the DICOM series (half as large) and the pictures.
    why = resources.Budget(stage.outputdir).refusal(disk=2 * volume.nbytes, memory=4 * volume.nbytes,
                                                    memory_for="to rebuild and picture it")
    if why is not None:
        raise InputFailed(f"{m} slices of {rows}×{cols} ({resources.size(volume.nbytes)}): {why}")
    warnings: list[str] = []
    windows, missing = images.resolve_windows(window_items, manifest.window_presets)
    presets = ", ".join(manifest.window_presets) or "none"
    if not windows:
        raise InputFailed(f"--windows: this series has none of the presets asked for (it has: {presets})")
    if missing:
        warnings.append(f"--windows: {', '.join(missing)} left out, not among this series' presets ({presets})")
    published, other = load_results(stage, series_dir, manifest, settings.use, wanted_rank,
                                    settings.percent_removed, warnings)
    warnings += published.warnings
    for warning in warnings:
        stage.log.warning("%s: %s", label, warning)
    stage.log.info("%s: publishing %s", label, published.summary)
    if other is not None:
        stage.log.info("%s: beside it %s", label, other.summary)

    results = [r for r in (published, other) if r is not None]
    results.sort(key=lambda r: r.denoiser)  # the montage's columns: global before local
    scree = next((r.scree for r in results if r.scree), None)
    original = np.asarray(volume)
    denoised = published.volume
    removed = original - denoised
    change = float(np.linalg.norm(removed) / max(np.linalg.norm(original), 1e-30))
    removed_hu = float(np.std(removed))
    del removed  # a volume's worth of memory, with up to three more held
    headers = None if settings.no_dicom else read_headers(stage, series_dir, manifest, warnings)

    with atomic.staged_dir(out_dir) as staging:
        if settings.npy:
            atomic.save_npy(staging / DENOISED, denoised)
        noise_model = next((r.record.get("noise_model") for r in results if r.record.get("noise_model")), None)
        sigma = (noise_model or {}).get("sigma_hu", {}).get("median")
        pictures = write_pictures(staging, original, published, results, windows, settings.montage_slices,
                                  settings.pngs, images.difference_width(sigma))
        noise_html = noise_pictures(staging, noise_model) if noise_model and "sigma_map" in noise_model else None
        if scree:
            atomic.write_text(staging / "scree.svg", scree)
        dicom_dir = None
        if headers is not None:
            description = f"{published.description} {manifest.series.description}".strip()
            (staging / DICOM_DIR).mkdir()
            with stage.guard(out_dir / DICOM_DIR, "derived DICOM series"):
                derived.write_series(staging / DICOM_DIR, headers, denoised, description, published.derivation)
                dicom_dir = DICOM_DIR
            if dicom_dir is None:  # the guard has failed it; the rest of the series stands
                shutil.rmtree(staging / DICOM_DIR)
                warnings.append("the derived DICOM series was not written: see the run report")
        contract.write_render(staging, contract.RenderRecord(
            plugin=f"pl-svd-render {__version__}", denoiser=published.denoiser, automatic=published.automatic,
            method=published.method, parameters=published.parameters, relative_change=change,
            removed_std_hu=removed_hu, windows=[w.label for w in windows], denoised=DENOISED if settings.npy else None,
            dicom=dicom_dir,
            warnings=warnings, **{k: v for k, v in published.record.items() if k != "noise_model"}))
        facts = [
            ("series", manifest.series.description or label),
            ("volume", f"{m} slices × {rows} × {cols}"),
            ("published", published.title),
            *(fact for r in results for fact in r.facts),
            ("change ‖A − denoised‖ / ‖A‖", f"{change:.4g}"),
            ("std of removed part", f"{removed_hu:.1f} HU"),
            ("slice spacing", f"{manifest.geometry.slice_spacing_mm} mm"),
        ]
        upstream = manifest.skipped + manifest.failed + manifest.skipped_elsewhere
        page = report.series_page(f"SVD denoising: {label}", facts, pictures, m, scree, dicom_dir,
                                  upstream, warnings, images.difference_width(sigma), noise_html)
        atomic.write_text(staging / "index.html", page)

    stage.output(out_dir, denoiser=published.denoiser, rank=published.record.get("rank"),
                 relative_change=round(change, 6))
    return f"{m} slices, published {published.title}, removed {removed_hu:.1f} HU std"


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
            headers.append(dicom.read(path, pixels=False))
        except FileNotFoundError:
            return _no_dicom(stage, series_dir, path, "missing", warnings)
        except OSError as e:
            return _no_dicom(stage, series_dir, path, f"unreadable ({type(e).__name__})", warnings)
        except (dicom.NotDicom, dicom.BadDicom) as e:
            return _no_dicom(stage, series_dir, path, str(e), warnings)
    return headers


def _no_dicom(stage: Stage, series_dir: Path, path: Path, problem: str, warnings: list[str]) -> None:
    reason = f"{problem}; the derived DICOM series was not written"
    stage.fail(path, reason)
    warnings.append(f"{path.relative_to(series_dir)}: {reason}")
    return None


def noise_pictures(staging: Path, model: dict) -> dict:
    """The measured noise as the report shows it: the σ map as a PNG and the NPS as an SVG."""
    top = images.noise_map_png(staging / NOISE_MAP, np.asarray(model["sigma_map"]["values_hu"], float))
    return {"map": NOISE_MAP, "map_max_hu": top,
            "nps": images.nps_svg(model["nps"]["frequency_cycles_per_pixel"], model["nps"]["radial_normalised"]),
            "cell": model["sigma_map"]["cell"], "sigma_hu": model["sigma_hu"]}


def write_pictures(staging: Path, original: np.ndarray, published: Result, results: list[Result], windows,
                   montage_slices: int, pngs: bool, diff_width: float) -> list[dict]:
    """Per window: the slice viewer's strip (every slice of the original, the published result as
    "denoised" and the other denoiser, in one JPEG), a montage of a few slices comparing them all
    (differences in a window ``diff_width`` wide), and, with ``pngs``, every slice of each as a PNG."""
    m = original.shape[0]
    picks = sorted(set(np.linspace(0, m - 1, min(max(montage_slices, 1), m) + 2)[1:-1].round().astype(int)))
    kinds = [("original", "original", original), ("denoised", f"denoised: {published.heading}", published.volume)]
    kinds += [(r.denoiser, r.heading, r.volume) for r in results if r is not published]
    pictures = []
    for w in windows:
        strip = VIEWER.format(window=w.name)
        layout = images.save_strip(staging / strip, [vol for _, _, vol in kinds], w)
        entry = {"label": w.label, "montage": f"montage-{w.name}.png", "strip": strip, **layout,
                 "captions": [caption for _, caption, _ in kinds]}
        if pngs:
            (staging / PNG_DIR / w.name).mkdir(parents=True)
            for kind, _, vol in kinds:
                for i in range(m):
                    images.save_png(staging / PNG_DIR / w.name / f"{kind}-{i:04d}.png", w.to_uint8(vol[i]))
        grid = images.montage(original, [(r.denoiser, r.heading, r.volume) for r in results], picks, w, diff_width)
        with atomic.atomic_path(staging / entry["montage"]) as tmp:
            grid.save(tmp, format="PNG")
        pictures.append(entry)
    return pictures
