"""DICOM tree → one folder per stack: volume.npy, manifest.json and headers/.

The run has two passes over the files, both spread over the cores:

1. **scan**: each file's header is read once (:mod:`dicom2matrix.scan`);
   every input ends processed, skipped or failed, with a reason;
2. **plan**: images are grouped into stacks and ordered in space
   (:mod:`dicom2matrix.stacks`); stacks shorter than ``--min-slices`` are
   skipped; each kept stack gets a staged folder and an empty volume file;
3. **pixels**: each file's pixels are read once and written as HU straight
   into their slots (:mod:`dicom2matrix.hounsfield`);
4. **publish**: per stack, slices that failed are taken out (the manifest
   records the gap), headers and the manifest are written, and the folder is
   renamed to ``series-NNN``, numbered without gaps in the order of the plan.
"""

from __future__ import annotations

import os
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import numpy as np

from ctsvd_common import atomic, contract, resources
from ctsvd_common.dicom import quiet_pydicom
from ctsvd_common.stage import Stage, StageError, run_stage
from ctsvd_common.workers import WorkerPool, capped_workers
from dicom2matrix import __version__
from dicom2matrix.hounsfield import Outcome, Target, convert_file, stored_range
from dicom2matrix.options import Settings
from dicom2matrix.scan import CT_SOP_CLASSES, Image, scan_file
from dicom2matrix.stacks import BY_INSTANCE_NUMBER, Stack, geometry_warnings, group, spacing_report, tilt_deg

# Standard CT display windows (center, width) in HU.
WINDOW_PRESETS = {
    "lung": {"center": -600.0, "width": 1500.0},
    "mediastinum": {"center": 40.0, "width": 400.0},
    "bone": {"center": 400.0, "width": 1800.0},
}
PROGRESS_EVERY = 200
# Memory per pixel while one slice is converted: its stored values, a float64 product, the float32 result, a mask.
BYTES_PER_PIXEL_AT_WORK = 2 + 8 + 4 + 1
# Fewer files than this are read in this process: a pool costs more than it saves.
MIN_ITEMS_FOR_POOL = 32


@dataclass
class Plan:
    """One stack on its way to becoming a series folder."""

    stack: Stack
    staged: atomic.StagedDir
    writer: atomic.NpyWriter
    data_offset: int
    units: str
    invert: tuple[float, float] | None
    outcomes: list[Outcome | None] = field(default_factory=list)

    def discard(self) -> None:
        self.writer.discard()
        self.staged.discard()


def run(settings: Settings, inputdir: Path, outputdir: Path) -> int:
    """Convert the DICOM tree in ``inputdir`` into series folders in ``outputdir``; the exit code."""
    return run_stage("dicom2matrix", __version__, settings, inputdir, outputdir,
                     lambda stage: convert_tree(stage, settings))


def convert_tree(stage: Stage, settings: Settings) -> None:
    quiet_pydicom()
    workers, note = capped_workers(settings.workers)
    if note:
        stage.log.warning("%s", note)
    files = stage.input_files()
    stage.names.number(f.relative_to(stage.inputdir) for f in files)   # logs name inputs by position
    artifacts = [f for f in files if contract.is_stage_artifact(f.relative_to(stage.inputdir))]
    if artifacts:
        stage.log.info("passing over %d report file(s) of earlier stages", len(artifacts))
        files = [f for f in files if f not in set(artifacts)]
    if not files:
        raise StageError("no files found in the input folder")

    with WorkerPool(workers, MIN_ITEMS_FOR_POOL) as pool:
        convert_files(stage, files, settings, pool)
    stage.summary["workers"] = workers


def convert_files(stage: Stage, files: list[Path], settings: Settings, pool: WorkerPool) -> None:
    images, headers = scan_all(stage, files, settings.any_modality, pool)
    if not images:
        raise StageError(f"no DICOM images found in the input folder ({len(files)} file(s), none usable: "
                         f"{len(stage.skipped)} skipped, {len(stage.errors)} failed)")
    stacks = group(images)
    kept = []
    for stack in stacks:
        if len(stack.images) < settings.min_slices:
            for image in stack.images + [d for d, _ in stack.duplicates]:
                if image.pixel_failure:     # broken whatever its stack: say so
                    stage.fail(image.file, image.pixel_failure)
                    continue
                stage.skip(image.file, f"too few slices: {stack.label} has {len(stack.images)} image(s) of this "
                                       f"geometry, fewer than --min-slices {settings.min_slices}")
        else:
            kept.append(stack)
    stage.log.info("%d image(s) in %d stack(s); %d with at least %d slices", len(images), len(stacks), len(kept),
                   settings.min_slices)
    stage.summary.update({"files": len(files), "images": len(images), "stacks": len(stacks)})
    if not kept:
        raise StageError(f"no stack of at least {settings.min_slices} slices in the input folder")
    kept = fitting(stage, kept, pool.count)
    if not kept:
        raise StageError("no stack fits this machine's memory and disk (see the reasons in the report)")

    # Inputs no series owns (not DICOM, unreadable, too few slices): listed in every
    # manifest, because the report stays here and the manifests travel down the pipeline.
    run_skipped = [dict(e) for e in stage.skipped + stage.errors]
    for e in run_skipped:
        e.pop("traceback", None)
        e.pop("exception", None)
    plans = [plan_volume(stage, stack, headers) for stack in kept]
    try:
        read_pixels(stage, plans, pool, settings.padding_hu)
        number = 0
        for plan in plans:
            with stage.guard(plan.stack.first.file, "series"):
                number += publish(stage, plan, stage.outputdir / f"series-{number + 1:03d}", settings, run_skipped)
    finally:
        for plan in plans:
            plan.discard()   # no-op for the published ones: their files have moved
    stage.summary["series"] = number


def fitting(stage: Stage, stacks: list[Stack], workers: int) -> list[Stack]:
    """The stacks whose declared size fits the memory and disk left, in plan order; the others fail, with
    the numbers, before any volume is created."""
    budget = resources.Budget(stage.outputdir)
    fit = []
    for stack in stacks:
        rows, cols = stack.shape
        disk = len(stack.images) * rows * cols * 4
        memory = rows * cols * BYTES_PER_PIXEL_AT_WORK * workers
        why = budget.refusal(disk, memory, f"to convert {workers} slice(s) of {rows}×{cols} at once")
        if why is None:
            budget.take(disk)
            fit.append(stack)
            continue
        why = f"{stack.label}, {len(stack.images)} slices of {rows}×{cols} ({resources.size(disk)}): {why}"
        for image in stack.images + [d for d, _ in stack.duplicates]:
            stage.fail(image.file, why)
    return fit


def scan_all(stage: Stage, files: list[Path], any_modality: bool, pool: WorkerPool):
    images: list[Image] = []
    headers: dict[tuple[str, int | None], bytes] = {}
    scan = partial(scan_file, any_modality=any_modality)
    with stage.timed(f"reading {len(files)} file header(s)"):
        results = with_progress(pool.map(scan, [str(f) for f in files], chunk(files, pool)), len(files),
                                PROGRESS_EVERY,
                                lambda n, total: stage.log.info("read %d/%d headers", n, total))
        for path, result in zip(files, results):
            if result.skip:
                stage.skip(path, result.skip)
            elif result.fail:
                stage.fail(path, result.fail)
            else:
                for image, header in zip(result.images, result.headers):
                    images.append(image)
                    headers[(image.file, image.frame)] = header
    return images, headers


def is_hu(image: Image) -> bool:
    return image.modality == "CT" or image.sop_class_uid in CT_SOP_CLASSES


def plan_volume(stage: Stage, stack: Stack, headers: dict) -> Plan:
    first = stack.first
    staged = atomic.StagedDir(stage.outputdir, "series")
    try:
        writer = atomic.NpyWriter(staged.path / contract.VOLUME, (len(stack.images), first.rows, first.cols))
        data_offset = np.load(writer.temp_path, mmap_mode="r").offset
        write_headers(staged.path, stack.images, headers)
    except BaseException:
        staged.discard()
        raise
    hu = is_hu(first)
    units = "HU" if hu else (first.rescale_type or "rescaled stored values")
    # HU are physical: MONOCHROME1 only tells a viewer how to show them. Other
    # units have only the display convention, so larger is made brighter.
    invert = stored_range(first) if not hu and first.photometric == "MONOCHROME1" else None
    return Plan(stack, staged, writer, data_offset, units, invert, [None] * len(stack.images))


def header_name(index: int) -> str:
    return f"{contract.HEADERS}/{index:04d}.dcm"


def write_headers(folder: Path, images: list[Image], headers: dict) -> None:
    """One pixel-less header per slot, written now: creating hundreds of small files right
    after the volume's hundreds of megabytes would wait on the file system's journal."""
    (folder / contract.HEADERS).mkdir()
    for i, image in enumerate(images):
        if not image.pixel_failure:
            (folder / header_name(i)).write_bytes(headers[(image.file, image.frame)])


def chunk(items: list, pool: WorkerPool) -> int:
    """Work goes out in chunks: few enough round trips, yet every worker busy until the end."""
    return max(1, min(32, len(items) // (pool.count * 8)))


def with_progress(results, total: int, every: int, report):
    for n, result in enumerate(results, 1):
        if n % every == 0 or n == total:
            report(n, total)
        yield result


def read_pixels(stage: Stage, plans: list[Plan], pool: WorkerPool, padding_hu: float) -> None:
    by_file: dict[str, list[tuple[Image, Target]]] = defaultdict(list)
    for p in plans:
        for slot, image in enumerate(p.stack.images):
            if image.pixel_failure:
                p.outcomes[slot] = Outcome(str(p.writer.temp_path), slot, failure=image.pixel_failure)
                continue
            by_file[image.file].append((image, Target(str(p.writer.temp_path), p.data_offset, slot,
                                                      padding_hu, p.invert)))
    by_volume = {str(p.writer.temp_path): p for p in plans}
    tasks = list(by_file.items())
    slices = sum(len(p.stack.images) for p in plans)
    with stage.timed(f"reading the pixels of {slices} slice(s) in {len(tasks)} file(s)"):
        results = with_progress(pool.map(convert_file, tasks, chunk(tasks, pool)), len(tasks), PROGRESS_EVERY,
                                lambda n, total: stage.log.info("converted %d/%d files", n, total))
        for outcomes in results:
            for o in outcomes:
                by_volume[o.volume].outcomes[o.slot] = o


def publish(stage: Stage, plan: Plan, dest: Path, settings: Settings, run_skipped: list) -> int:
    """Finish one stack's folder and rename it to ``dest``; 1 if published, else 0."""
    stack = plan.stack
    failed, named = [], set()
    for image, outcome in zip(stack.images, plan.outcomes):
        if outcome is None or outcome.failure:
            reason = outcome.failure if outcome else "not converted"
            if image.file not in named:    # once per file, however many of its frames failed
                named.add(image.file)
                stage.fail(image.file, reason)
            failed.append({"file": stage.rel(image.file), "frame": _frame_no(image), "reason": reason,
                           "left_a_gap": True})
    good = [i for i, o in enumerate(plan.outcomes) if o is not None and not o.failure]
    if len(good) < settings.min_slices:
        # The failed files are named above; the few good ones are no volume on their own.
        for i in good:
            stage.skip(stack.images[i].file, f"too few slices: only {len(good)} of {len(stack.images)} slice(s) "
                                             f"of {stack.label} could be read, fewer than --min-slices "
                                             f"{settings.min_slices}")
        return 0
    if len(good) < len(stack.images):
        compact(plan, good)
    images = [stack.images[i] for i in good]
    positions = [stack.positions[i] for i in good]
    outcomes = [plan.outcomes[i] for i in good]
    names = [header_name(i) for i in range(len(good))]
    duplicates = []
    for image, reason in stack.duplicates:
        if image.pixel_failure:    # broken and redundant: broken is what the user needs to hear
            stage.fail(image.file, image.pixel_failure)
            continue
        stage.skip(image.file, reason)
        duplicates.append({"file": stage.rel(image.file), "frame": _frame_no(image), "reason": reason})

    manifest = build_manifest(stage, plan, images, positions, outcomes, names, duplicates, failed, run_skipped,
                              settings.padding_hu)
    plan.writer.commit()
    contract.write_manifest(plan.staged.path, manifest)
    plan.staged.commit(dest)
    stage.output(dest, slices=len(images), rows=stack.first.rows, cols=stack.first.cols, units=plan.units)
    g = manifest.geometry
    stage.log.info("%s: %s, %d slices of %d×%d, %s range [%.0f, %.0f], %s%s", dest.name, stack.label, len(images),
                   stack.first.rows, stack.first.cols, plan.units, manifest.volume.min, manifest.volume.max,
                   g.sorted_by, "".join(f"; {w}" for w in g.warnings))
    for w in g.warnings:
        stage.log.warning("%s: %s", dest.name, w)
    return 1


def compact(plan: Plan, good: list[int]) -> None:
    """Take the slices that failed out of the volume and its headers (the manifest records their place)."""
    folder = plan.staged.path
    for slot in range(len(plan.stack.images)):
        if slot not in good:
            (folder / header_name(slot)).unlink(missing_ok=True)
    for j, i in enumerate(good):   # j <= i: renaming in order never overwrites a header still needed
        if i != j:
            os.replace(folder / header_name(i), folder / header_name(j))
    old = plan.writer
    shape = (len(good), plan.stack.first.rows, plan.stack.first.cols)
    new = atomic.NpyWriter(old.dest.with_name(old.dest.name), shape)
    source = np.load(old.temp_path, mmap_mode="r")
    for j, i in enumerate(good):
        new.array[j] = source[i]
    del source
    old.discard()
    plan.writer = new


def _frame_no(image: Image) -> int | None:
    return None if image.frame is None else image.frame + 1


def build_manifest(stage: Stage, plan: Plan, images: list[Image], positions: list[float], outcomes: list[Outcome],
                   headers: list[str], duplicates: list, failed: list, run_skipped: list,
                   padding_hu: float) -> contract.Manifest:
    stack, first = plan.stack, plan.stack.first
    located = stack.sorted_by != BY_INSTANCE_NUMBER
    # Without positions the order is known, the spacing is not: none is made up.
    positions = positions if located else []
    spacing = spacing_report(positions)
    tilt = tilt_deg(stack)
    thicknesses = [i.thickness for i in images if i.thickness is not None]
    windows = dict(WINDOW_PRESETS)
    if first.window is not None and plan.units == "HU":
        windows["header"] = {"center": first.window[0], "width": first.window[1]}
    padded = sum(o.padded for o in outcomes)
    geometry = contract.Geometry(
        sorted_by=stack.sorted_by,
        slice_positions_mm=[round(p, 4) for p in positions],
        pixel_spacing_mm=list(first.pixel_spacing) if first.pixel_spacing else None,
        orientation=list(first.orientation) if first.orientation else None,
        normal=[round(float(v), 6) + 0.0 for v in stack.normal] if stack.normal is not None else None,
        duplicate_positions=duplicates,
        slice_thickness_mm=statistics.median(thicknesses) if thicknesses else None,
        slice_thickness_varies=len({round(t, 3) for t in thicknesses}) > 1,
        tilt_deg=tilt,
        gantry_detector_tilt_deg=first.gantry_tilt,
        **spacing,
    )
    geometry.warnings = geometry_warnings(stack, spacing, tilt)
    if not located:
        geometry.warnings.append("no slice positions: the slices are in InstanceNumber order and their "
                                 "spacing is unknown")
    if first.gantry_tilt and not (tilt and tilt > 0.5):
        geometry.warnings.append(f"GantryDetectorTilt says {first.gantry_tilt:g}°, "
                                 f"but the slice positions show no shear")
    return contract.Manifest(
        created_by=f"pl-dicom2matrix {__version__}",
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        series=contract.SeriesIdentity(
            study_instance_uid=first.study_uid, series_instance_uid=first.series_uid,
            frame_of_reference_uid=first.frame_of_reference_uid, modality=first.modality,
            series_number=first.series_number, description=first.description, sop_class_uid=first.sop_class_uid,
            image_type=list(first.image_type), patient_identity_removed=first.patient_identity_removed,
            source="multi-frame" if first.multiframe else "single-frame", split_by=list(stack.split_by),
        ),
        volume=contract.VolumeInfo(
            shape=[len(images), first.rows, first.cols], units=plan.units,
            min=min(o.minimum for o in outcomes), max=max(o.maximum for o in outcomes),
            padding={"pixels": padded, "set_to": padding_hu} if padded else None,
            rescale_varies=len({(i.slope, i.intercept) for i in images}) > 1,
            photometric=first.photometric, inverted=plan.invert is not None,
        ),
        geometry=geometry,
        window_presets=windows,
        slices=[contract.SliceEntry(
            index=k, source=stage.rel(i.file), header=headers[k], sop_instance_uid=i.sop_instance_uid,
            frame=_frame_no(i), instance_number=i.instance_number,
            image_position=list(i.position) if i.position else None, thickness_mm=i.thickness,
            rescale_slope=i.slope, rescale_intercept=i.intercept,
        ) for k, i in enumerate(images)],
        skipped=duplicates,
        failed=failed,
        skipped_elsewhere=run_skipped,
    )
