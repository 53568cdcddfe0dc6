"""End-to-end runs of dcm_anon over the made-up CT series, called the ChRIS template way."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MediaStorageDirectoryStorage

from dcm_anon import tag_extract_child, tag_report
from ctsvd_common.dicom import input_files
from ctsvd_testdata.anon_tree import (GEOMETRY, INSTITUTION, LAYOUT, OUTPUT_OF, PATIENT_ID, PATIENT_NAME, STATION,
                               STUDY_DATE, UID_ROOT, output_dicoms)

TAG_FILES = ["dicom-tags.json", "dicom-tags.html", "dicom-tags-body.html"]


def _all_output_files(outdir: Path) -> list[Path]:
    return sorted(p for p in outdir.rglob("*") if p.is_file())


def _by_rel(outdir: Path) -> dict[str, pydicom.FileDataset]:
    """Each input of LAYOUT → its de-identified output."""
    assert len(output_dicoms(outdir)) == len(LAYOUT)
    return {rel: pydicom.dcmread(outdir / OUTPUT_OF[rel]) for rel in LAYOUT}


def _report(outdir: Path) -> dict:
    return json.loads((outdir / "dcm_anon.report.json").read_text())


def test_no_phi_and_no_original_uid_in_any_output_byte_or_log(series, outdir, run, caplog):
    assert run(series.root, outdir) == 0
    files = _all_output_files(outdir)
    tag_files = [p for p in files if p.relative_to(outdir).parts[0] == "tag-report"]
    assert len(output_dicoms(outdir)) == 4 and tag_files and (outdir / "dcm_anon.report.json") in files
    forbidden = [*series.phi_strings, STUDY_DATE, "99999.58310", *series.original_uids]
    inputs = [p.read_bytes() for p in series.files]
    for text in forbidden:   # each check below can only fail if the input holds the string
        assert any(text.encode() in data for data in inputs), f"{text!r} not in the input"
    for path in files:
        data = path.read_bytes()
        for text in forbidden:
            assert text.encode() not in data, f"{text!r} found in {path.relative_to(outdir)}"
    logs = caplog.text
    assert "finished" in logs
    for text in forbidden:
        assert text not in logs


def test_layout_meta_preamble_and_record(series, outdir, run):
    assert run(series.root, outdir, "--no-tag-report") == 0
    assert sorted(str(p.relative_to(outdir)) for p in _all_output_files(outdir)) == \
        sorted([*OUTPUT_OF.values(), "dcm_anon.report.json"])
    for rel, ds in _by_rel(outdir).items():
        assert (outdir / OUTPUT_OF[rel]).read_bytes()[:128] == b"\x00" * 128
        meta = ds.file_meta
        for gone in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle",
                     "ReceivingApplicationEntityTitle", "PrivateInformationCreatorUID",
                     "PrivateInformation"):
            assert gone not in meta
        assert meta.ImplementationClassUID == pydicom.uid.PYDICOM_IMPLEMENTATION_UID
        assert ds.PatientIdentityRemoved == "YES"
        assert "DICOM PS3.15 E.1 Basic Application Level Confidentiality Profile" in ds.DeidentificationMethod
        assert "dcm_anon 0.1.0" in ds.DeidentificationMethod
        codes = [(c.CodeValue, c.CodingSchemeDesignator) for c in ds.DeidentificationMethodCodeSequence]
        assert codes == [("113100", "DCM")]
        assert ds.LongitudinalTemporalInformationModified == "REMOVED"
        assert all(not elem.tag.is_private for elem in ds.iterall())
        assert ds.PatientName == ds.PatientID and str(ds.PatientID).startswith("ANON-")
        assert "ImageComments" not in ds and "StudyDescription" not in ds
        assert not ds.StudyDate and not ds.PatientBirthDate and not ds.AccessionNumber
        assert ds.InstitutionName == "ANONYMIZED"


def test_uids_are_mapped_consistently(series, outdir, run):
    assert run(series.root, outdir, "--no-tag-report") == 0
    out = _by_rel(outdir)
    datasets = [out[rel] for rel in LAYOUT]
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
    assert len({ds.FrameOfReferenceUID for ds in datasets}) == 1
    assert len({ds.SOPInstanceUID for ds in datasets}) == 4
    for i, ds in enumerate(datasets):
        for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.FrameOfReferenceUID):
            assert uid.startswith("2.25.") and len(uid) <= 64 and not uid.startswith(UID_ROOT)
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        original = pydicom.dcmread(series.files[i])
        ref = original.ReferencedImageSequence[0].ReferencedSOPInstanceUID
        referenced = datasets[series.sop_uids.index(ref)]   # the neighbour the phantom refers to
        assert referenced is not ds
        assert ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID == referenced.SOPInstanceUID
        assert ds.SOPClassUID == CTImageStorage
        assert ds.ReferencedImageSequence[0].ReferencedSOPClassUID == CTImageStorage
        assert ds.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert ds.file_meta.MediaStorageSOPClassUID == CTImageStorage


def test_pixels_and_geometry_are_kept_exactly(series, outdir, run):
    assert run(series.root, outdir, "--no-tag-report") == 0
    out = _by_rel(outdir)
    for i, rel in enumerate(LAYOUT):
        ds, original = out[rel], pydicom.dcmread(series.files[i])
        assert ds.PixelData == series.pixels[i] == original.PixelData
        for keyword in GEOMETRY:
            assert ds[keyword].value == original[keyword].value, keyword


def test_pseudonym_key_makes_the_mapping_reproducible(series, tmp_path, run):
    key = "correct horse battery staple"
    outs = [tmp_path / name for name in ("k1", "k2", "r1", "r2")]
    for out, flags in zip(outs, (["--pseudonym-key", key], ["--pseudonym-key", key], [], [])):
        assert run(series.root, out, "--no-tag-report", *flags) == 0
    k1, k2, r1, r2 = (_by_rel(out)[LAYOUT[0]] for out in outs)
    assert (k1.SOPInstanceUID, k1.StudyInstanceUID, k1.PatientID) == \
        (k2.SOPInstanceUID, k2.StudyInstanceUID, k2.PatientID)
    assert r1.SOPInstanceUID != r2.SOPInstanceUID and r1.PatientID != r2.PatientID
    assert r1.SOPInstanceUID != k1.SOPInstanceUID
    # The key is a secret: it is not written into the run report.
    report = (outs[0] / "dcm_anon.report.json").read_text()
    assert key not in report
    assert _report(outs[0])["summary"]["options"]["pseudonym_key"].startswith("given")


def test_keep_dates(series, tmp_path, run):
    with_dates, without = tmp_path / "dates", tmp_path / "nodates"
    assert run(series.root, with_dates, "--no-tag-report", "--keep-dates") == 0
    assert run(series.root, without, "--no-tag-report") == 0
    kept, removed = _by_rel(with_dates)[LAYOUT[0]], _by_rel(without)[LAYOUT[0]]
    assert kept.StudyDate == STUDY_DATE and kept.SeriesDate == STUDY_DATE
    assert not removed.get("StudyDate") and removed.SeriesDate == "19000101"
    assert kept.LongitudinalTemporalInformationModified == "UNMODIFIED"
    assert [c.CodeValue for c in kept.DeidentificationMethodCodeSequence] == ["113100", "113106"]
    assert "Retain Longitudinal Temporal Information Full Dates Option" in kept.DeidentificationMethod


@pytest.mark.parametrize("flag, keyword, value, code", [
    ("--keep-patient-chars", "PatientSex", "F", "113108"),
    ("--keep-device-id", "StationName", STATION, "113109"),
    ("--keep-institution-id", "InstitutionName", INSTITUTION, "113112"),
    ("--keep-uids", "StudyInstanceUID", None, "113110"),   # None: the input's own study UID
])
def test_retain_options(series, outdir, run, flag, keyword, value, code):
    assert run(series.root, outdir, "--no-tag-report", flag) == 0
    ds = _by_rel(outdir)[LAYOUT[0]]
    assert ds[keyword].value == (series.study_uid if value is None else value)
    assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100", code]
    assert ds.PatientID != PATIENT_ID   # no option keeps the patient's identity
    if flag == "--keep-uids":
        assert ds.SOPInstanceUID == series.sop_uids[0] == ds.file_meta.MediaStorageSOPInstanceUID


def test_tag_report_lists_every_folder_of_the_output(series, outdir, run, tmp_path, monkeypatch):
    # A temporary folder of its own: another test process may be writing its tag report in /tmp.
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    assert run(series.root, outdir) == 0
    report_dir = outdir / "tag-report"
    for folder in (report_dir / "series-001",):
        assert sorted(p.name for p in folder.iterdir() if p.is_file()) == sorted(TAG_FILES)
        tags = json.loads((folder / "dicom-tags.json").read_text())
        assert tags["PatientIdentityRemoved"] == "YES"
        assert tags["PatientID"].startswith("ANON-")
        assert "<html>" in (folder / "dicom-tags.html").read_text()
    # Nothing outside tag-report/ besides the DICOM tree and the run report.
    assert {p.relative_to(outdir).parts[0] for p in outdir.iterdir()} == \
        {"series-001", "tag-report", "dcm_anon.report.json"}
    summary = _report(outdir)["summary"]
    assert summary["tag_report"] == {"folder": "tag-report", "files": 3}
    counts = [summary[k] for k in ("files_written", "studies", "series", "patients")]
    assert counts == [4, 1, 1, 1]
    assert not list(Path(tempfile.gettempdir()).glob("dcm_anon-tag-report-*"))


def _no_symlinks(self, target):
    raise OSError("symbolic links not supported")


@pytest.mark.parametrize("patch, reason", [
    (("timeout_for", lambda folders: 0.001), "pfdicom_tagExtract did not finish within 0 s"),
    (("Path.symlink_to", _no_symlinks), "cannot make the tag report (OSError)"),
])
def test_tag_report_failure_keeps_the_files(series, outdir, run, monkeypatch, patch, reason):
    name, replacement = patch
    if name == "Path.symlink_to":
        monkeypatch.setattr(Path, "symlink_to", replacement)
    else:
        monkeypatch.setattr(tag_report, name, replacement)
    assert run(series.root, outdir) == 0   # the de-identified files are the output
    report = _report(outdir)
    assert report["errors"] == [{"file": "tag-report", "reason": reason}]
    assert report["status"] == "ok-with-failures"
    assert len(output_dicoms(outdir)) == 4
    assert not (outdir / "tag-report").exists()
    assert run(series.root, outdir.parent / "strict", "--strict") == 1


def test_tag_report_environment_named_by_the_variable(series, outdir, run, monkeypatch, tmp_path):
    sibling = Path(sys.prefix + tag_report.SIBLING_SUFFIX) / "bin" / "python"
    if not sibling.is_file():
        pytest.skip("no tag-report environment beside this one (scripts/ensure-venv makes it)")
    monkeypatch.setenv(tag_report.PYTHON_ENV_VAR, str(sibling))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "elsewhere"))   # the sibling alone would not be found
    assert run(series.root, outdir) == 0
    assert not _report(outdir)["errors"] and (outdir / "tag-report" / "series-001" / "dicom-tags.json").is_file()


def test_missing_tag_report_environment_is_one_clear_failure(series, outdir, run, monkeypatch, tmp_path, caplog):
    monkeypatch.delenv(tag_report.PYTHON_ENV_VAR, raising=False)
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    assert run(series.root, outdir) == 0
    (error,) = _report(outdir)["errors"]
    assert error["file"] == "tag-report"
    assert error["reason"].startswith(f"the tag-report environment is missing: make {tmp_path}/venv-tagreport ")
    assert "tag-report-requirements.txt" in error["reason"] and tag_report.PYTHON_ENV_VAR in error["reason"]
    assert len(output_dicoms(outdir)) == 4 and not (outdir / "tag-report").exists()

    monkeypatch.setenv(tag_report.PYTHON_ENV_VAR, str(tmp_path / "no-such-python"))
    assert run(series.root, tmp_path / "out2") == 0
    (error,) = _report(tmp_path / "out2")["errors"]
    assert error["reason"] == (f"the tag-report environment is missing: {tag_report.PYTHON_ENV_VAR}="
                               f"{tmp_path}/no-such-python is not a Python interpreter")


def test_tag_report_python_without_pfdicom_tagextract(series, outdir, run, monkeypatch, tmp_path):
    bare = tmp_path / "bare-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    monkeypatch.setenv(tag_report.PYTHON_ENV_VAR, str(bare / "bin" / "python"))
    assert run(series.root, outdir) == 0
    (error,) = _report(outdir)["errors"]
    assert error["reason"] == (f"pfdicom_tagExtract cannot be imported by {bare}/bin/python: "
                               f"install pl-dcm-anon/tag-report-requirements.txt there")


def test_the_child_imports_only_the_standard_library_and_pfdicom_tagextract():
    tree = ast.parse(Path(tag_extract_child.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported == {"os", "sys", "types", "pfdicom_tagExtract"}


def test_the_childs_stand_ins_change_nothing_in_the_listing(series, outdir, run, tmp_path):
    """The child replaces modules pfdicom_tagExtract imports but never uses for a listing; the
    listing must be byte for byte what pfdicom_tagExtract makes with the real modules."""
    python = Path(sys.prefix + tag_report.SIBLING_SUFFIX) / "bin" / "python"
    if not python.is_file():
        pytest.skip("no tag-report environment beside this one (scripts/ensure-venv makes it)")
    assert run(series.root, outdir, "--no-tag-report") == 0
    view = tmp_path / "view"
    (view / "tree").mkdir(parents=True)
    (view / "tree" / "one.dcm").symlink_to(outdir / OUTPUT_OF[LAYOUT[0]])
    env = {**os.environ, "MPLBACKEND": "Agg", "MPLCONFIGDIR": str(tmp_path / "mpl")}
    child = [str(python), "-I", "-W", "ignore", tag_extract_child.__file__]
    subprocess.run([*child, str(tmp_path / "stand-ins"), "t", "json,html"], input=tag_extract_child.GO,
                   cwd=view, env=env, check=True, timeout=300, capture_output=True)
    # The same child function, with the real modules (no stand-ins).
    real = (f"import sys; sys.path.insert(0, {str(Path(tag_extract_child.__file__).parent)!r}); "
            f"import tag_extract_child as c; c._stand_ins = lambda: None; "
            f"sys.exit(c.extract({str(tmp_path / 'real')!r}, 't', 'json,html'))")
    subprocess.run([str(python), "-I", "-W", "ignore", "-c", real], input=tag_extract_child.GO,
                   cwd=view, env=env, check=True, timeout=300, capture_output=True)
    made = sorted(p.relative_to(tmp_path / "real") for p in (tmp_path / "real").rglob("*") if p.is_file())
    assert [p.name for p in made] == ["t-body.html", "t.html", "t.json"]
    for rel in made:
        assert (tmp_path / "stand-ins" / rel).read_bytes() == (tmp_path / "real" / rel).read_bytes()


def test_no_tag_report_flag(series, outdir, run):
    assert run(series.root, outdir, "--no-tag-report") == 0
    assert not (outdir / "tag-report").exists()
    assert _report(outdir)["summary"]["tag_report"] == "not made (--no-tag-report)"


def _dicomdir(path: Path) -> None:
    """A small media index with a patient record, as found on CDs."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MediaStorageDirectoryStorage
    meta.MediaStorageSOPInstanceUID = UID_ROOT + "77"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("DICOMDIR", {}, file_meta=meta, preamble=b"\x00" * 128)
    record = Dataset()
    record.DirectoryRecordType = "PATIENT"
    record.PatientName = PATIENT_NAME
    record.PatientID = PATIENT_ID
    ds.DirectoryRecordSequence = Sequence([record])
    ds.save_as(path, enforce_file_format=True)


def test_non_dicom_files_and_dicomdir_are_skipped_not_copied(series, outdir, run):
    (series.root / "case01" / "notes.txt").write_text(f"patient {PATIENT_ID}\n")
    (series.root / "case01" / "ct" / "scout.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 200)
    _dicomdir(series.root / "DICOMDIR")
    assert run(series.root, outdir, "--no-tag-report") == 0
    assert sorted(str(p.relative_to(outdir)) for p in outdir.rglob("*") if p.is_file()) == \
        sorted([*OUTPUT_OF.values(), "dcm_anon.report.json"])
    report = _report(outdir)
    inputs = [p.relative_to(series.root).as_posix() for p in input_files(series.root)]
    assert sorted(inputs[s["input"] - 1] for s in report["skipped"]) == \
        ["DICOMDIR", "case01/ct/scout.png", "case01/notes.txt"]
    # Named by position and hash only, never by path.
    assert [s["file"] for s in report["skipped"]] == \
        [f"input #{s['input']} ({s['file'].split('(')[1]}" for s in report["skipped"]]
    assert "notes" not in json.dumps(report) and "scout" not in json.dumps(report)
    assert report["summary"]["files_skipped"] == 3 and report["summary"]["files_written"] == 4


def test_modules_hidden_from_pydicom_fail_only_inside_the_block():
    from dcm_anon.run import hidden

    sys.modules.pop("wave", None)   # a standard module nothing here needs
    with hidden("wave", "json"):   # json is imported already: it stays
        with pytest.raises(ImportError):
            import wave  # noqa: F401
        import json as again
        assert again is json
    import wave  # noqa: F401,F811
    assert sys.modules["wave"] is not None


def test_the_console_command_exits_with_everything_written(series, tmp_path):
    """`dcm_anon` leaves without the interpreter's teardown: the exit code, the report, the
    tag report and the last log line must all be there as after a normal exit."""
    command = Path(sys.prefix) / "bin" / "dcm_anon"
    if not command.is_file():
        pytest.skip("the dcm_anon command is not installed in this environment")
    done = subprocess.run([str(command), str(series.root), str(tmp_path / "out")], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = _report(tmp_path / "out")
    assert report["exit_code"] == 0 and report["summary"]["files_written"] == 4
    assert sorted(p.name for p in (tmp_path / "out" / "tag-report" / "series-001").iterdir() if p.is_file()) == sorted(TAG_FILES)
    assert "finished in" in done.stderr.strip().splitlines()[-1]

    failed = subprocess.run([str(command), str(tmp_path / "missing"), str(tmp_path / "out2")],
                            capture_output=True, text=True, timeout=300)
    assert failed.returncode == 1 and _report(tmp_path / "out2")["exit_code"] == 1
