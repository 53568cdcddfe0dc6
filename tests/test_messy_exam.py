"""A messy exam, as a scanner or a CD export hands it over, through the converter and
through the whole pipeline: every stack converted exactly, every other file skipped
or failed with its reason, the geometry facts in the manifests, and every node ok."""

import json
import subprocess

import numpy as np
import pytest

from ctsvd_common import contract
from ctsvd_common.inputnames import LABEL
from ctsvd_testdata.messy_exam import write_messy_exam

from plugin_commands import ENV, ROOT, all_files, run_command, source

# How the stages word each category of the fixture's ground truth.
SKIP_REASONS = {
    "localizer": "localizer (scout) image",
    "secondary capture": "secondary capture",
    "burned-in annotation": "burned-in annotation",
    "DICOMDIR": "DICOMDIR",
    "not an image": "not an image",
    "not DICOM": "not a DICOM file",
    "not CT": "modality",
    "too few slices": "too few slices",
}
FAIL_REASONS = {
    "invalid NumberOfFrames": "NumberOfFrames is not a valid integer",
    "invalid RescaleIntercept": "RescaleIntercept is not a valid number",
    "truncated": "truncated pixel data",
}


@pytest.fixture(scope="module")
def exam(tmp_path_factory):
    return write_messy_exam(tmp_path_factory.mktemp("messy") / "exam", size=48, slices=6, seed=5)


@pytest.fixture(scope="module")
def converted(exam, tmp_path_factory):
    out = tmp_path_factory.mktemp("messy-volumes") / "out"
    proc = run_command("dicom2matrix", exam.root, out)
    report = json.loads((out / "dicom2matrix.report.json").read_text())
    series = {d.name: contract.read_manifest(d) for d in contract.find_series(out)}
    # Stages name inputs by position and hash only; the fixture's ground truth is by path.
    assert exam.root.name not in proc.stderr and "localizer/" not in proc.stderr
    name = lambda label: source(exam.root, label) if LABEL.fullmatch(label) else label   # each entry once
    for entry in report["skipped"] + [e for e in report["errors"] if e["file"]]:
        entry["file"] = name(entry["file"])
    for m in series.values():
        for s in m.slices:
            s.source = name(s.source)
        for entry in m.skipped + m.failed + m.skipped_elsewhere:
            entry["file"] = name(entry["file"])
    return proc, out, report, series


def by_sources(series: dict) -> dict[tuple, str]:
    """(relative file, 0-based frame) of every slice, in volume order → series folder name."""
    return {tuple((s.source, (s.frame or 1) - 1) for s in m.slices): name for name, m in series.items()}


def test_exit_code_and_no_traceback(converted):
    proc, out, report, series = converted
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert report["status"] == "ok-with-failures"
    assert sorted(series) == [f"series-{i:03d}" for i in range(1, len(series) + 1)]   # no gaps


def test_every_stack_becomes_its_volume_exactly(exam, converted):
    _, out, _, series = converted
    assert len(series) == len(exam.volumes)
    found = by_sources(series)
    for expected in exam.volumes:
        key = tuple((f, frame) for f, frame in expected.frames)
        assert key in found, f"{expected.label}: no volume holds exactly its slices, in order"
        folder = out / found[key]
        volume = np.load(folder / contract.VOLUME)
        assert volume.shape == expected.hu.shape, expected.label
        if expected.lossless:
            assert np.array_equal(volume, expected.hu), expected.label
        else:
            assert np.abs(volume - expected.hu).max() <= expected.tolerance_hu, expected.label
        m = series[found[key]]
        assert m.volume.units == "HU" and m.series.series_instance_uid == expected.series_uid
        assert m.series.source == ("multi-frame" if expected.multiframe else "single-frame"), expected.label


def test_geometry_facts_are_recorded(exam, converted):
    _, out, _, series = converted
    found = by_sources(series)
    for expected in exam.volumes:
        g = series[found[tuple(expected.frames)]].geometry
        assert g.tilt_deg == pytest.approx(expected.tilt_deg, abs=0.05), expected.label
        # None where the header does not say (the fixture's Enhanced CT carries no tilt attribute).
        assert (g.gantry_detector_tilt_deg or 0.0) == pytest.approx(expected.gantry_detector_tilt_deg), expected.label
        assert g.missing_slices == expected.missing_slices, expected.label
        assert g.slice_thickness_mm == pytest.approx(expected.slice_thickness_mm), expected.label
        assert g.slice_spacing_mm == pytest.approx(expected.slice_spacing_mm, abs=1e-3), expected.label
        assert g.pixel_spacing_mm == pytest.approx(list(expected.pixel_spacing_mm)), expected.label
        if expected.tilt_deg:
            assert any("gantry tilt" in w for w in g.warnings)
        if expected.missing_slices:
            assert any("missing" in w for w in g.warnings) and not g.uniform_spacing


def test_one_series_uid_two_thicknesses_are_two_volumes(exam, converted):
    _, _, _, series = converted
    thin, thick = exam.volume("mixed-4mm"), exam.volume("mixed-7mm-add")
    assert thin.series_uid == thick.series_uid
    found = by_sources(series)
    a, b = series[found[tuple(thin.frames)]], series[found[tuple(thick.frames)]]
    assert {"slice thickness", "image type"} <= set(a.series.split_by) == set(b.series.split_by)
    assert (a.geometry.slice_thickness_mm, b.geometry.slice_thickness_mm) == (4.0, 7.0)


def test_every_other_file_is_skipped_or_failed_with_its_reason(exam, converted):
    _, _, report, series = converted
    skipped = {s["file"]: s["reason"] for s in report["skipped"]}
    failed = {e["file"]: e["reason"] for e in report["errors"] if e["file"]}
    for rel, category in exam.skipped.items():
        assert rel in skipped, f"{rel} ({category}) was not skipped"
        assert SKIP_REASONS[category] in skipped[rel], (rel, skipped[rel])
    for rel, category in exam.failed.items():
        assert failed.get(rel, "").startswith(FAIL_REASONS[category]), (rel, failed.get(rel))
    used = {s.source for m in series.values() for s in m.slices}
    assert set(skipped) | set(failed) | used == {str(f.relative_to(exam.root)) for f in all_files(exam.root)}
    assert not (set(skipped) & set(failed)) and not (used & (set(skipped) | set(failed)))


def test_failed_slices_leave_a_recorded_gap(exam, converted):
    _, _, _, series = converted
    gaps = {f["file"] for m in series.values() for f in m.failed}
    assert gaps == set(exam.failed)
    # Every manifest also lists what the run passed over outside its own stack.
    for m in series.values():
        assert {s["file"] for s in m.skipped_elsewhere} >= set(exam.skipped) - {
            s.source for mm in series.values() for s in mm.slices}


def test_strict_turns_failures_into_exit_1(exam, tmp_path):
    proc = run_command("dicom2matrix", "--strict", exam.root, tmp_path / "out")
    assert proc.returncode == 1
    assert len(contract.find_series(tmp_path / "out")) == len(exam.volumes)   # still all written


def test_the_whole_pipeline_runs_on_the_messy_exam(exam, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([str(ROOT / "workflows" / "run-local"), str(exam.root), str(out)],
                          capture_output=True, text=True, env=ENV, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    record = json.loads((out / "pipeline-run.json").read_text())
    assert all(n["status"] == "ok" for n in record["nodes"]), [(n["title"], n["status"]) for n in record["nodes"]]
    counts = {n["title"]: n["counts"] for n in record["nodes"]}
    assert counts["anonymize"]["skipped"] >= 3           # DICOMDIR, burned-in, README
    assert counts["volume"]["outputs"] == len(exam.volumes)
    # The broken files fail once, at the first node that must read what is broken in them.
    assert counts["anonymize"]["failed"] + counts["volume"]["failed"] == len(exam.failed)
    assert "Traceback" not in proc.stderr
    # The table at the end names each node with its counts.
    table = proc.stdout[proc.stdout.index("node "):]
    assert all(n["title"] in table for n in record["nodes"])
    # Nothing of the made-up identity, in any output byte or in the logs.
    phi = [p.encode() for p in exam.phi_strings()]
    leaks = [(str(f.relative_to(out)), p.decode()) for f in all_files(out) for p in phi if p in f.read_bytes()]
    assert leaks == []
    assert [p for p in exam.phi_strings() if p in proc.stdout + proc.stderr] == []
