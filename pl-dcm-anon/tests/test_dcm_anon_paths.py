"""Names carry identity too: exports name files after UIDs and folders after patients.
The output layout is kept, de-identified like the headers."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom

from dcm_anon.paths import PathNamer, identifying_values
from dcm_anon.uids import Pseudonyms
from dcm_anon_testdata import PATIENT_ID, PATIENT_NAME, write_series


def uid_named(tmp_path: Path):
    """The made-up series laid out as many exports do: <patient>/<StudyInstanceUID>/<SOPInstanceUID>.dcm."""
    series = write_series(tmp_path / "staging")
    family = PATIENT_NAME.split("^")[0]
    root = tmp_path / "in"
    moved = []
    for path, sop in zip(series.files, series.sop_uids):
        target = root / f"{family}_{PATIENT_ID}" / series.study_uid / f"{sop}.dcm"
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
        moved.append(target)
    (root / f"{family}_{PATIENT_ID}" / "notes.txt").write_text("not DICOM")
    series.files = moved
    return series, root, family


def test_uid_and_patient_names_in_paths_are_de_identified(tmp_path, run, caplog):
    series, root, family = uid_named(tmp_path)
    out = tmp_path / "out"
    assert run(root, out, "--no-tag-report") == 0
    written = sorted(p for p in out.rglob("*.dcm"))
    assert len(written) == len(series.files)
    for path in written:
        ds = pydicom.dcmread(path)
        # A file named after its SOPInstanceUID is named after its new one; its folder after the new study.
        assert path.name == f"{ds.SOPInstanceUID}.dcm"
        assert path.parent.name == ds.StudyInstanceUID
        assert path.parent.parent.name == f"{ds.PatientID}_{ds.PatientID}"
    originals = [*series.original_uids, family, PATIENT_ID, PATIENT_NAME]
    every_name = [str(p.relative_to(out)) for p in out.rglob("*")]
    report = (out / "dcm_anon.report.json").read_text()
    for value in originals:
        assert not any(value in name for name in every_name), value
        assert value not in report, value
        assert value not in caplog.text, value
    # The text file in the patient's folder is skipped, and named without the patient too.
    skipped = [s["file"] for s in json.loads(report)["skipped"]]
    assert len(skipped) == 1 and skipped[0].endswith("notes.txt") and family not in skipped[0]


def test_the_same_key_names_the_same_way(tmp_path, run):
    series, root, _ = uid_named(tmp_path)
    assert run(root, tmp_path / "a", "--no-tag-report", "--pseudonym-key", "k1") == 0
    assert run(root, tmp_path / "b", "--no-tag-report", "--pseudonym-key", "k1") == 0
    names = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*.dcm"))
    assert names(tmp_path / "a") == names(tmp_path / "b")


def test_two_inputs_never_share_an_output_name():
    namer = PathNamer(Pseudonyms(b"key"))
    ds = pydicom.Dataset()
    ds.PatientName, ds.PatientID = "DOE^JANE", "MRN123"
    namer.learn(ds, "ANON-1")
    a, b = namer.claim(Path("DOE/1.dcm")), namer.claim(Path("JANE/1.dcm"))
    assert a != b and {a.parent, b.parent} == {Path("ANON-1")}
    assert namer.claim(Path("DOE/1.dcm")) == a      # the same input keeps its name


def test_identifying_values_split_names_and_skip_short_parts():
    ds = pydicom.Dataset()
    ds.PatientName, ds.PatientID, ds.PatientSex = "DOE^JO^Q", "MRN-58310-7Q", "F"
    values = identifying_values(ds)
    assert {"DOE^JO^Q", "DOE", "MRN-58310-7Q"} <= set(values)
    assert "JO" not in values and "F" not in values and "Q" not in values
