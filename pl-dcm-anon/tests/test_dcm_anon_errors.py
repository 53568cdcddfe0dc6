"""Bad input: empty folders, no DICOM, truncated and burned-in files; the console command's exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pydicom

from ctsvd_testdata.anon_tree import LAYOUT, output_dicoms

BIN = Path(sys.executable).parent
DCM_ANON = BIN / "dcm_anon"
TRUNCATED = "case01/ct/slice-002.dcm"


def _report(outdir: Path) -> dict:
    return json.loads((outdir / "dcm_anon.report.json").read_text())


def _plain(entries: list[dict]) -> list[dict]:
    """Report entries without their "file", after checking it names the input by position and hash only."""
    for entry in entries:
        assert re.fullmatch(rf"input #{entry['input']} \([0-9a-f]{{8}}\)", entry["file"]), entry
    return [{k: v for k, v in entry.items() if k != "file"} for entry in entries]


def _truncate(path: Path) -> None:
    """Cut a good file in the middle of its pixel data (2048 bytes at the end)."""
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 1024])


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([str(DCM_ANON), *args], capture_output=True, text=True, timeout=120, env=env)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " ERROR: " in line]


def test_empty_folder(tmp_path, outdir, run):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(empty, outdir) == 1
    report = _report(outdir)
    assert len(report["errors"]) == 1
    assert report["errors"][0]["reason"].startswith("no DICOM files found")
    assert "empty" in report["errors"][0]["reason"]
    assert [p.name for p in outdir.iterdir()] == ["dcm_anon.report.json"]


def test_only_non_dicom_files(tmp_path, outdir, run):
    src = tmp_path / "docs"
    (src / "sub").mkdir(parents=True)
    (src / "README.txt").write_text("hello\n")
    (src / "sub" / "data.json").write_text("{}\n")
    assert run(src, outdir) == 1
    report = _report(outdir)
    assert [e["reason"] for e in report["errors"]] == [
        "no DICOM files found in the input folder (2 other file(s) skipped)"]
    assert len(report["skipped"]) == 2
    assert [p.name for p in outdir.rglob("*")] == ["dcm_anon.report.json"]


def test_truncated_file_among_good_ones(series, outdir, run, caplog):
    _truncate(series.root / TRUNCATED)
    # The others are written, so the run did its job: exit 0, the failure in the report and the log.
    assert run(series.root, outdir, "--no-tag-report") == 0
    report = _report(outdir)
    assert report["status"] == "ok-with-failures"
    # "input": its position among the input files in name order (names may be de-identified).
    assert _plain(report["errors"]) == [{"reason": "truncated pixel data (1024 of 2048 bytes)", "input": 3}]
    assert len(output_dicoms(outdir)) == 3
    assert not [p for p in outdir.rglob("*") if p.name.startswith(".")]
    error_records = [r for r in caplog.records if r.levelname == "ERROR"]
    message = error_records[0].getMessage()
    assert len(error_records) == 1 and "input #3 (" in message and "slice-002" not in message


def test_strict_fails_the_run_on_any_failed_file(series, outdir, run):
    _truncate(series.root / TRUNCATED)
    assert run(series.root, outdir, "--no-tag-report", "--strict") == 1
    report = _report(outdir)
    assert report["status"] == "failed" and report["strict"] is True
    assert [e["input"] for e in report["errors"]] == [3]
    assert len(output_dicoms(outdir)) == 3   # the good files are written all the same


def test_a_file_cut_inside_a_sequence_fails(series, outdir, run):
    """pydicom reads such a file without complaint; the end of it is simply missing."""
    path = series.root / LAYOUT[0]
    data = path.read_bytes()
    inside = data.index(b"\x08\x00\x40\x11SQ")   # ReferencedImageSequence
    path.write_bytes(data[:inside + 40])
    assert run(series.root, outdir, "--no-tag-report") == 0
    assert _plain(_report(outdir)["errors"]) == [
        {"reason": "truncated: the file ends inside ReferencedImageSequence", "input": 2}]
    assert len(output_dicoms(outdir)) == 3


def test_burned_in_annotation_is_skipped_not_copied(series, outdir, run):
    """An exam with a screenshot among its images: the screenshot is withheld, the run succeeds."""
    path = series.root / LAYOUT[0]
    ds = pydicom.dcmread(path)
    ds.BurnedInAnnotation = "YES"
    ds.save_as(path, enforce_file_format=True)
    assert run(series.root, outdir, "--no-tag-report", "--strict") == 0
    report = _report(outdir)
    assert report["errors"] == []
    assert _plain(report["skipped"]) == [
        {"reason": "burned-in annotation: pixel data may hold PHI, not copied", "input": 2}]
    assert len(output_dicoms(outdir)) == 3


def test_an_unexpected_error_stays_with_its_file(series, outdir, run, monkeypatch, caplog):
    from dcm_anon.deidentify import Deidentifier
    real_apply = Deidentifier.apply

    def apply(self, ds):
        if ds.InstanceNumber == 2:
            raise RuntimeError(f"boom {ds.PatientName}")   # a message quoting PHI
        real_apply(self, ds)

    monkeypatch.setattr(Deidentifier, "apply", apply)
    assert run(series.root, outdir, "--no-tag-report") == 0
    (error,) = _report(outdir)["errors"]
    assert error["reason"] == "cannot de-identify this file (RuntimeError)"
    assert len(output_dicoms(outdir)) == 3
    assert "boom" not in caplog.text and "Traceback" not in caplog.text


def test_console_command_exit_codes_and_stderr(series, tmp_path):
    _truncate(series.root / TRUNCATED)
    out = tmp_path / "cli-out"
    proc = _cli(series.root.as_posix(), out.as_posix())
    assert proc.returncode == 0
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1 and errors[0].endswith(": truncated pixel data (1024 of 2048 bytes)")
    assert "input #3 (" in errors[0] and "slice-002" not in proc.stderr
    assert "finished" in proc.stderr and "Traceback" not in proc.stderr
    for text in series.phi_strings:
        assert text not in proc.stderr and text not in proc.stdout
    assert len(output_dicoms(out)) == 3 and (out / "tag-report" / "series-001" / "dicom-tags.json").is_file()

    strict = _cli("--strict", "--no-tag-report", series.root.as_posix(), (tmp_path / "strict").as_posix())
    assert strict.returncode == 1 and "FAILED" in strict.stderr and len(_error_lines(strict.stderr)) == 1

    (series.root / TRUNCATED).unlink()
    ok = _cli(series.root.as_posix(), (tmp_path / "ok").as_posix(), "--no-tag-report", "--keep-dates")
    assert ok.returncode == 0 and not _error_lines(ok.stderr)

    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _cli(empty.as_posix(), (tmp_path / "out-empty").as_posix())
    assert proc.returncode == 1
    assert _error_lines(proc.stderr) and _error_lines(proc.stderr)[0].endswith(
        "no DICOM files found: the input folder is empty")
    assert str(empty) not in proc.stderr   # the input folder's own name may be the patient's

    usage = _cli("--no-such-flag", series.root.as_posix(), (tmp_path / "x").as_posix())
    assert usage.returncode == 2 and "usage:" in usage.stderr

    version = _cli("--version")
    assert version.returncode == 0 and "0.1.0" in version.stdout
