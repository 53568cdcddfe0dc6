"""DICOM tree → one folder per stack: volume.npy, manifest.json and headers/."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pydicom

from ctsvd_common import atomic, contract, dicomfiles
from ctsvd_common.stage import Stage, StageError
from dicom2matrix import __version__
from dicom2matrix.hounsfield import PixelError, slice_hu
from dicom2matrix.stacks import Slice, Stack, group, sort_along_normal, spacing_report

# Standard CT display windows (center, width) in HU.
WINDOW_PRESETS = {
    "lung": {"center": -600.0, "width": 1500.0},
    "mediastinum": {"center": 40.0, "width": 400.0},
    "bone": {"center": 400.0, "width": 1800.0},
}
PROGRESS_EVERY = 200


def convert_tree(stage: Stage, padding_hu: float) -> None:
    dicomfiles.quiet_pydicom()
    files = dicomfiles.input_files(stage.inputdir)
    artifacts = {f for f in files if contract.is_stage_artifact(f.relative_to(stage.inputdir))}
    if artifacts:
        stage.log.info("passing over %d report file(s) of earlier stages", len(artifacts))
        files = [f for f in files if f not in artifacts]
    if not files:
        raise StageError(f"no files found in {stage.inputdir}")
    with stage.timed(f"reading {len(files)} file headers"):
        slices = read_headers(stage, files)
    if not slices:
        raise StageError(f"no DICOM images found in {stage.inputdir} ({len(files)} file(s), none usable)")

    stacks = group(slices)
    stage.log.info("%d image(s) in %d stack(s)", len(slices), len(stacks))
    # Files no series owns (not DICOM, unreadable) are listed in every manifest too:
    # the report stays here, the manifests travel down the pipeline.
    run_skipped = stage.skipped + stage.errors
    for i, stack in enumerate(stacks, 1):
        name = f"series-{i:03d}"
        with stage.timed(f"{name} ({len(stack.slices)} image(s))"):
            write_stack(stage, stack, stage.outputdir / name, padding_hu, run_skipped)
    stage.summary.update({"files": len(files), "images": len(slices), "series": len(stage.outputs)})


def read_headers(stage: Stage, files: list[Path]) -> list[Slice]:
    """Headers of every usable image; everything else is skipped or failed, with why."""
    slices = []
    for n, path in enumerate(files, 1):
        try:
            ds = dicomfiles.read(path, pixels=False)
        except dicomfiles.NotDicom as e:
            stage.skip(path, str(e))
            continue
        except dicomfiles.BadDicom as e:
            stage.fail(path, str(e))
            continue
        reason = unusable_image(ds)
        if reason:
            stage.skip(path, reason)
        else:
            slices.append(Slice(path, ds))
        if n % PROGRESS_EVERY == 0:
            stage.log.info("read %d/%d headers", n, len(files))
    return slices


def unusable_image(ds) -> str | None:
    """Why a readable DICOM object cannot be a slice of a volume, or None."""
    if "Rows" not in ds or "Columns" not in ds:
        sop = getattr(ds.get("SOPClassUID"), "name", "unknown SOP class")
        return f"no image ({sop})"
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        return f"multi-frame image ({ds.NumberOfFrames} frames) is not supported"
    if "LOCALIZER" in [str(v).upper() for v in ds.get("ImageType", [])]:
        return "localizer (scout) image"
    return None


def write_stack(stage: Stage, stack: Stack, out_dir: Path, padding_hu: float, run_skipped: list) -> None:
    series_skipped = []
    run_skipped = list(run_skipped)
    for s, reason in sort_along_normal(stack):
        stage.skip(s.path, reason)
        series_skipped.append({"file": stage.rel(s.path), "reason": reason})

    good: list[tuple[Slice, np.ndarray, int, float]] = []
    for s, position in zip(stack.slices, stack.positions):
        try:
            ds = dicomfiles.read(s.path, pixels=True)
            hu, padded = slice_hu(ds, padding_hu)
        except (dicomfiles.NotDicom, dicomfiles.BadDicom, PixelError) as e:
            stage.fail(s.path, str(e))
            series_skipped.append({"file": stage.rel(s.path), "reason": str(e)})
            continue
        good.append((s, hu, padded, position))
    if not good:
        stage.fail(out_dir, f"no slice of the stack could be read ({len(stack.slices)} tried)")
        return

    with atomic.staged_dir(out_dir) as staging:
        shape = (len(good), *stack.shape)
        with atomic.NpyWriter(staging / contract.VOLUME, shape) as volume:
            for i, (_, hu, _, _) in enumerate(good):
                volume.array[i] = hu
            lo, hi = float(volume.array.min()), float(volume.array.max())
        headers = write_headers(staging, [s for s, *_ in good])
        manifest = build_manifest(stage, stack, good, headers, shape, (lo, hi), padding_hu,
                                  series_skipped, run_skipped)
        atomic.write_json(staging / contract.MANIFEST, manifest)
    stage.output(out_dir, slices=shape[0], rows=shape[1], cols=shape[2])
    stage.log.info("%s: %d slices of %d×%d, HU range [%.0f, %.0f], %s", out_dir.name, *shape, lo, hi,
                   manifest["geometry"]["sorted_by"])


def write_headers(staging: Path, slices: list[Slice]) -> list[str]:
    """One pixel-less copy of each slice's header, in volume order, for writing DICOM later."""
    folder = staging / contract.HEADERS
    folder.mkdir()
    names = []
    for i, s in enumerate(slices):
        ds = s.header
        for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
            if keyword in ds:
                del ds[keyword]
        name = f"{contract.HEADERS}/{i:04d}.dcm"
        with atomic.atomic_path(staging / name) as tmp:
            ds.save_as(tmp, write_like_original=False)
        names.append(name)
    return names


def _floats(value) -> list[float] | None:
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError):
        return None


def _header_window(ds) -> dict | None:
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        return None
    first = lambda v: float(v[0]) if isinstance(v, pydicom.multival.MultiValue) else float(v)
    try:
        return {"center": first(center), "width": first(width)}
    except (TypeError, ValueError, IndexError):
        return None


def build_manifest(stage: Stage, stack: Stack, good, headers: list[str], shape, hu_range, padding_hu: float,
                   series_skipped: list, run_skipped: list) -> dict:
    ds = stack.first
    positions = [p for *_, p in good]
    windows = dict(WINDOW_PRESETS)
    if (header_window := _header_window(ds)) is not None:
        windows["header"] = header_window
    modality = str(ds.get("Modality", ""))
    padded = sum(n for _, _, n, _ in good)
    return {
        "format": contract.MANIFEST_FORMAT,
        "version": contract.MANIFEST_VERSION,
        "created_by": f"pl-dicom2matrix {__version__}",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "series": {
            "study_instance_uid": str(ds.get("StudyInstanceUID", "")),
            "series_instance_uid": stack.series_uid,
            "frame_of_reference_uid": str(ds.get("FrameOfReferenceUID", "")),
            "modality": modality,
            "series_number": str(ds.get("SeriesNumber", "")),
            "description": str(ds.get("SeriesDescription", "")),
            "sop_class_uid": str(ds.get("SOPClassUID", "")),
            "patient_identity_removed": str(ds.get("PatientIdentityRemoved", "")).upper() == "YES",
        },
        "volume": {
            "file": contract.VOLUME,
            "dtype": "float32",
            "shape": list(shape),
            "axes": ["slice", "row", "column"],
            "units": "HU" if modality == "CT" else "rescaled stored values",
            "min": hu_range[0],
            "max": hu_range[1],
            "padding": {"pixels": padded, "set_to": padding_hu} if padded else None,
        },
        "geometry": {
            "sorted_by": stack.sorted_by,
            "pixel_spacing_mm": _floats(ds.get("PixelSpacing")),
            "slice_thickness_mm": float(ds.SliceThickness) if ds.get("SliceThickness") not in (None, "") else None,
            "orientation": list(stack.orientation) if stack.orientation else None,
            "normal": [float(v) for v in stack.normal] if stack.normal is not None else None,
            "slice_positions_mm": [round(p, 4) for p in positions],
            **spacing_report(positions),
        },
        "window_presets": windows,
        "slices": [
            {
                "index": i,
                "source": stage.rel(s.path),
                "sop_instance_uid": str(s.header.get("SOPInstanceUID", "")),
                "instance_number": s.instance_number,
                "image_position": _floats(s.header.get("ImagePositionPatient")),
                "header": headers[i],
            }
            for i, (s, *_) in enumerate(good)
        ],
        "skipped": series_skipped,
        "skipped_elsewhere": run_skipped,
    }
