"""One render run: for each series, publish one denoised result, picture it against the other, report, write DICOM.

A series folder may hold the global SVD factors (pl-ssvd-denoise's global
mode), the locally denoised ``local.npy`` (its local mode), or both. ``--use``
says which one this node publishes as ``denoised.npy``, the derived DICOM
series and ``render.json``; the pictures and the report show both, so the
difference is there to see.
"""

from __future__ import annotations

import json
import shutil
from argparse import Namespace
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from ctsvd_common import atomic, contract, dicomfiles, resources, walk
from ctsvd_common.contract import relative_reason
from ctsvd_common.stage import InputFailed, Stage, StageError, UsageError
from svd_render import __version__, derived, images, rank, report
from svd_render.rebuild import load_factors, rebuild

DENOISED = "denoised.npy"
NOISE_MAP = "noise-map.png"
DICOM_DIR = "dicom"
PNG_DIR = "png"
VIEWER = "viewer-{window}.jpg"
USES = ("auto", "global", "local")
# What marks a series as holding each denoiser's output, and what to say when it does not.
PRESENT = {"global": contract.SVD_JSON, "local": contract.LOCAL}
ABSENT = {"global": f"--use global: this series has no SVD factors ({contract.SVD_JSON}); "
                    "pl-ssvd-denoise writes them in its global mode",
          "local": f"--use local: this series has no {contract.LOCAL}; pl-ssvd-denoise writes it in its local mode"}


@dataclass
class Result:
    """One denoiser's output for a series, and what to say about it."""

    denoiser: str                    # "global" or "local"
    volume: np.ndarray               # float32 (slices, rows, cols), HU
    heading: str                     # names it in the montage and the slice viewer
    summary: str                     # one line for the log
    method: str
    automatic: bool
    parameters: dict
    description: str                 # the derived series' SeriesDescription, before the source's
    derivation: str                  # its DerivationDescription
    facts: list[tuple[str, str]]
    record: dict = field(default_factory=dict)    # RenderRecord fields only this denoiser has
    warnings: list[str] = field(default_factory=list)
    scree: str | None = None

    @property
    def title(self) -> str:
        return f"{self.heading}{' (automatic)' if self.automatic else ''}"


def render_all(stage: Stage, options: Namespace) -> None:
    use, wanted_rank, windows = check_options(options)
    dicomfiles.quiet_pydicom()
    series = [d for d in contract.find_series(stage.inputdir) if any((d / f).exists() for f in PRESENT.values())]
    if not series:
        raise StageError(f"no denoised or decomposed series found in the input folder: expected folders with "
                         f"{contract.MANIFEST} and {contract.SVD_JSON} or {contract.LOCAL} written by pl-ssvd-denoise")
    entries = []
    for i, series_dir in enumerate(series, 1):
        rel = series_dir.relative_to(stage.inputdir)
        with stage.timed(f"series {i}/{len(series)}: {rel}"), stage.guard(series_dir, "series"):
            try:
                facts = render_series(stage, series_dir, stage.outputdir / rel, options, use, wanted_rank, windows)
            except contract.ContractError as e:
                raise InputFailed(relative_reason(e, series_dir)) from None
            entries.append({"name": str(rel), "href": f"{rel}/index.html", "facts": facts})
    if entries:
        atomic.write_text(stage.outputdir / "index.html", report.index_page("SVD-denoised CT series", entries))
    stage.summary["series"] = len(entries)


def check_options(options: Namespace) -> tuple[str, int | None, list]:
    """Refuse every unusable flag value before any work; return the denoiser, the rank asked for and the windows."""
    use = options.use.strip().lower()
    if use not in USES:
        raise UsageError(f"--use: expected one of {', '.join(USES)}, got {options.use!r}")
    if options.montage_slices < 1:
        raise UsageError(f"--montage-slices: expected a whole number of 1 or more, got {options.montage_slices}")
    try:
        return use, rank.parse_rank(options.rank, options.percent_removed), images.parse_windows(options.windows)
    except ValueError as e:
        raise UsageError(str(e)) from None


def global_result(series_dir: Path, shape: tuple[int, int, int], wanted_rank: int | None,
                  percent_removed: float) -> Result:
    """The truncated SVD of the whole series, at the rank the flags choose."""
    factors = load_factors(series_dir, shape)
    svd = factors.record
    choice = rank.choose(wanted_rank, percent_removed, factors.s, shape[0], shape[1] * shape[2], svd.frobenius_norm,
                         svd.noise, None if svd.spectrum is None else np.asarray(svd.spectrum))
    noise = choice.noise
    setup = (f"k = {factors.k}, exact (slices x slices Gram matrix)" if svd.method == "gram" else
             f"k = {factors.k}, randomized: oversampling {svd.oversample}, {svd.power_iters} power iterations, "
             f"seed {svd.seed}")
    return Result(
        "global", rebuild(factors, choice.rank, shape), f"global r{choice.rank}/{factors.k}",
        summary=f"global SVD, {choice.describe()} of k = {factors.k}, noise {noise.describe()}",
        method=choice.method, automatic=choice.automatic,
        parameters={"k": factors.k, "svd_method": svd.method, "oversample": svd.oversample, "power_iters": svd.power_iters, "seed": svd.seed,
                    "rank_rule": choice.rule, "noise_hu": noise.sigma, "noise_estimable": noise.estimable},
        description=f"SVD denoised global r{choice.rank}/{factors.k}",
        derivation=(f"Truncated SVD of the series: rank {choice.rank} of {factors.k} components ({choice.method}); "
                    f"{setup}; pl-svd-render {__version__}"),
        facts=[("global SVD", setup), ("SVD error ‖A − U S Vt‖ / ‖A‖", f"{svd.relative_error:.4g}"),
               ("global rank kept", choice.describe()),
               ("noise measured in the series (RMS over the field)" if svd.noise else "noise from the SVD spectrum",
                noise.describe())],
        record={"rank": choice.rank, "k": factors.k, "threshold": choice.threshold,
                "noise_hu_estimate": noise.sigma if noise.estimable else None},
        warnings=list(choice.warnings),
        scree=images.scree_svg(factors.s, choice.rank, choice.threshold))


# How local.json's noise levels read in the report.
NOISE_LABELS = {"uniform": "in uniform regions"}


def local_result(series_dir: Path, manifest: contract.Manifest) -> Result:
    """``local.npy`` as pl-ssvd-denoise wrote it, described by ``local.json``."""
    local = contract.read_local(series_dir)
    volume = contract.open_volume(series_dir, manifest, name=contract.LOCAL)
    strength = "automatic" if local.automatic else "strength given"
    noise = ", ".join(f"{NOISE_LABELS.get(k, k)} {v:.3g}" for k, v in local.noise_hu.items()) + " HU"
    return Result(
        "local", volume, "local", summary=f"local SVD ({strength}), noise {noise}",
        method=local.method, automatic=local.automatic,
        parameters={**local.parameters, "noise_hu": local.noise_hu},
        description="SVD denoised local",
        derivation=(f"Local SVD denoising ({strength}; noise {noise}); pl-svd-render {__version__}; "
                    f"{local.method}; parameters {json.dumps(local.parameters, separators=(',', ':'))}"),
        facts=[("local SVD", f"{local.method} ({strength})"), ("measured noise σ", noise),
               *model_facts(local)],
        record={"noise_model": local.noise},
        warnings=list(local.warnings))


def model_facts(local: contract.LocalRecord) -> list[tuple[str, str]]:
    """What the report says of the measured noise model and the choices made from it."""
    facts = []
    rho = local.noise.get("slice_correlation", [])
    if len(rho) > 1:
        facts.append(("noise shared with the next slices", ", ".join(f"{r:.2f}" for r in rho[1:3])))
    if "nps" in local.noise:
        nps = local.noise["nps"]
        facts.append(("noise power spectrum", f"peak at {nps['peak_cycles_per_pixel']:g} cycles/pixel"
                      if nps.get("measured", True) else
                      "not measured: too little of the series is free of anatomy, so the noise is taken as white"))
    for name, choice in local.choices.items():
        facts.append((name, f"{choice.get('strength', '')}: {choice.get('why', '')}"))
    return facts


def load_results(stage: Stage, series_dir: Path, manifest: contract.Manifest, use: str, wanted_rank: int | None,
                 percent_removed: float, warnings: list[str]) -> tuple[Result, Result | None]:
    """The result to publish, and the other denoiser's when the series has it.

    The published one fails the series when it is absent or unusable; an
    unusable other one is a failed item that costs only its columns.
    """
    load = {"global": lambda: global_result(series_dir, manifest.shape, wanted_rank, percent_removed),
            "local": lambda: local_result(series_dir, manifest)}
    present = {name: (series_dir / f).exists() for name, f in PRESENT.items()}
    chosen = use if use != "auto" else ("local" if present["local"] else "global")
    if not present[chosen]:
        raise InputFailed(ABSENT[chosen])
    published = load[chosen]()
    (other_name,) = set(load) - {chosen}
    other = None
    if present[other_name]:
        try:
            other = load[other_name]()
        except contract.ContractError as e:
            reason = f"{relative_reason(e, series_dir)}; the {other_name} result is left out of the comparison"
            stage.fail(series_dir, reason)
            warnings.append(reason)
    if other is not None:
        warnings += [f"{other_name} comparison: {w}" for w in other.warnings]
    if chosen == "local" and (wanted_rank or percent_removed):
        warnings.append("--rank and --percent-removed apply to the global comparison only: "
                        "this node publishes local.npy")
    return published, other


def render_series(stage: Stage, series_dir: Path, out_dir: Path, options: Namespace, use: str,
                  wanted_rank: int | None, window_items: list) -> str:
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
    published, other = load_results(stage, series_dir, manifest, use, wanted_rank, options.percent_removed, warnings)
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
    headers = None if options.no_dicom else read_headers(stage, series_dir, manifest, warnings)

    with atomic.staged_dir(out_dir) as staging:
        if options.npy:
            atomic.save_npy(staging / DENOISED, denoised)
        noise_model = next((r.record.get("noise_model") for r in results if r.record.get("noise_model")), None)
        sigma = (noise_model or {}).get("sigma_hu", {}).get("median")
        pictures = write_pictures(staging, original, published, results, windows, options.montage_slices,
                                  options.pngs, images.difference_width(sigma))
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
            removed_std_hu=removed_hu, windows=[w.label for w in windows], denoised=DENOISED if options.npy else None,
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
