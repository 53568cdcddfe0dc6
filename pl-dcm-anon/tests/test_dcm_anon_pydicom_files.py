"""dcm_anon over every file bundled in the installed pydicom wheel's test-file folder.

Odd encodings, compressed pixel data, DICOMDIRs, cut and spoiled files and
non-DICOM files side by side, as the console command runs them: each file ends
processed, skipped or failed with a one-line reason, and nothing escapes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ctsvd_common import dicom
from pydicom.data import get_testdata_file

TEST_FILES = Path(get_testdata_file("CT_small.dcm")).parent
EVERY = sorted(p.relative_to(TEST_FILES).as_posix() for p in dicom.input_files(TEST_FILES))
DCM_ANON = Path(sys.executable).parent / "dcm_anon"
WITHHELD = ": not copied, dcm_anon de-identifies CT images only"


@pytest.fixture(autouse=True)
def _quiet():
    dicom.quiet_pydicom()   # some of these files make pydicom warn as it reads them


@pytest.fixture(scope="module")
def anonymized(tmp_path_factory):
    out = tmp_path_factory.mktemp("pydicom-files") / "out"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([str(DCM_ANON), str(TEST_FILES), str(out)], capture_output=True, text=True,
                          timeout=600, env=env)
    return proc, out, json.loads((out / "dcm_anon.report.json").read_text())


def fates(report: dict) -> dict[str, str]:
    """Each input file → "processed", or "skipped: reason" / "failed: reason".

    Names in the report are de-identified (a folder named after a PatientID is
    renamed), so entries are matched to inputs by their position, ``input``.
    """
    name = lambda entry: EVERY[entry["input"] - 1]
    out = {name(o): "processed" for o in report["outputs"]}
    out.update({name(s): "skipped: " + s["reason"] for s in report["skipped"]})
    out.update({name(e): "failed: " + e["reason"] for e in report["errors"] if e["file"] != "tag-report"})
    return out


def test_every_file_ends_processed_skipped_or_failed(anonymized):
    proc, out, report = anonymized
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    every = fates(report)
    assert sorted(every) == EVERY
    counted = len(report["outputs"]) + len(report["skipped"]) + len(report["errors"])
    assert counted == len(EVERY)   # each file once, and the tag report did not fail
    for entry in report["skipped"] + report["errors"]:
        assert entry["reason"] and "\n" not in entry["reason"]
        assert "unexpected error" not in entry["reason"], entry
    # Only CT images are de-identified (the allow-list is made for them); the rest are withheld.
    assert report["summary"]["files_written"] >= 14
    assert (out / "tag-report").is_dir()


@pytest.mark.parametrize("name, expected", [
    ("badVR.dcm", "failed: NumberOfFrames is not a valid integer"),
    ("rtplan_truncated.dcm", "failed: truncated: the file ends inside BeamSequence"),
    ("MR_truncated.dcm", "failed: truncated pixel data (8130 of 8192 bytes)"),
    ("SC_ybr_full_422_uncompressed.dcm", f"skipped: not a CT image (SOP class: Secondary Capture Image "
                                         f"Storage){WITHHELD}"),
    ("ExplVR_BigEndNoMeta.dcm", f"skipped: not a CT image (SOP class: RT Ion Plan Storage){WITHHELD}"),
    ("rtplan.dcm", f"skipped: not a CT image (SOP class: RT Plan Storage){WITHHELD}"),
    ("CT_small.dcm", "processed"),
    ("693_J2KI.dcm", "processed"),                 # JPEG 2000: its codestream's comments are taken out
    ("dicomdirtests/77654033/CT2/17106", "processed"),
    ("dicomdirtests/DICOMDIR", "skipped: DICOMDIR: a media directory, not an image"),
    ("dicomdirtests/DICOMDIR-bigEnd", "skipped: DICOMDIR: a media directory, not an image"),
    ("README.txt", "skipped: not a DICOM file (no DICM prefix)"),
    ("zipMR.gz", "skipped: not a DICOM file (no DICM prefix)"),
])
def test_known_files_get_the_right_fate(anonymized, name, expected):
    assert fates(anonymized[2])[name] == expected


def test_every_output_is_a_whole_part10_file_without_the_original_identity(anonymized):
    _, out, report = anonymized
    for entry in report["outputs"]:
        written = out / entry["path"]
        data = written.read_bytes()
        assert data[:132] == b"\x00" * 128 + b"DICM", entry["path"]
        ds = dicom.read(written)   # parses to its end, pixel data included
        original = dicom.read(TEST_FILES / EVERY[entry["input"] - 1], pixels=False)
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        for keyword in ("SOPInstanceUID", "PatientName", "PatientID"):
            value = str(original.get(keyword, "") or "").strip()
            if len(value) >= 6 and not value.startswith("1.2.840.10008."):
                assert value.encode() not in data, (entry["path"], keyword)


def test_names_in_the_output_carry_no_patient_id(anonymized):
    """dicomdirtests names folders after PatientIDs: the output renames them."""
    _, out, report = anonymized
    ids = set()
    for rel in EVERY:
        try:
            ds = dicom.read(TEST_FILES / rel, pixels=False)
        except (dicom.NotDicom, dicom.BadDicom):
            continue
        pid = str(ds.get("PatientID", "") or "").strip()
        if len(pid) >= 6:
            ids.add(pid)
    assert "77654033" in ids
    names = [str(p.relative_to(out)) for p in out.rglob("*")]
    assert not [(n, i) for n in names for i in ids if i in n]
