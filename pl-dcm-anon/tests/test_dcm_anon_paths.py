"""Names carry identity too: exports name files after UIDs and folders after patients and dates.
Outputs get neutral names; logs and the report name inputs by position and hash only."""

from __future__ import annotations

import json
import re
from pathlib import Path


from dcm_anon.tree import OutputNames
from ctsvd_testdata.anon_tree import PATIENT_ID, PATIENT_NAME, write_series

LABEL = re.compile(r"input #(\d+) \(([0-9a-f]{8})\)")


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


def test_outputs_are_named_by_series_and_position_and_inputs_by_label(tmp_path, run, caplog):
    series, root, family = uid_named(tmp_path)
    out = tmp_path / "out"
    assert run(root, out, "--no-tag-report") == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.dcm"))
    assert written == [f"series-001/{i:04d}.dcm" for i in range(1, 5)]
    originals = [*series.original_uids, family, PATIENT_ID, PATIENT_NAME, "notes"]
    every_name = [str(p.relative_to(out)) for p in out.rglob("*")]
    report = (out / "dcm_anon.report.json").read_text()
    for value in originals:
        assert not any(value in name for name in every_name), value
        assert value not in report, value
        assert value not in caplog.text, value
    # The text file in the patient's folder is skipped, named by its position and hash.
    (skipped,) = json.loads(report)["skipped"]
    assert LABEL.fullmatch(skipped["file"]) and skipped["file"] in caplog.text
    assert LABEL.fullmatch(skipped["file"])[1] == str(skipped["input"]) == "5"   # after the 4 UIDs' folder


def test_the_input_map_is_written_only_where_asked_and_never_into_the_output(tmp_path, run):
    series, root, family = uid_named(tmp_path)
    out, mapping = tmp_path / "out", tmp_path / "private" / "map.json"
    mapping.parent.mkdir()
    assert run(root, out, "--no-tag-report", "--input-map", str(mapping)) == 0
    entries = json.loads(mapping.read_text())
    assert entries["contains_phi"] is True
    paths = {e["input"]: e["path"] for e in entries["inputs"]}
    by_position = {e["position"]: e["path"] for e in entries["inputs"]}
    report = json.loads((out / "dcm_anon.report.json").read_text())
    assert paths[report["skipped"][0]["file"]] == f"{family}_{PATIENT_ID}/notes.txt"
    assert sorted(by_position[o["input"]] for o in report["outputs"]) == \
        sorted(p.relative_to(root).as_posix() for p in series.files)
    assert str(mapping) not in json.dumps(report) and family not in json.dumps(report)
    # Inside the output folder it would go on to the next stage: refused, as a usage error.
    assert run(root, tmp_path / "out2", "--input-map", str(tmp_path / "out2" / "map.json")) == 2
    assert not (tmp_path / "out2" / "map.json").exists()


def test_the_same_key_names_and_labels_the_same_way(tmp_path, run):
    series, root, _ = uid_named(tmp_path)
    for name, key in (("a", "k1"), ("b", "k1"), ("c", "k2")):
        assert run(root, tmp_path / name, "--no-tag-report", "--pseudonym-key", key) == 0
    names = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*.dcm"))
    labels = lambda d: json.loads((d / "dcm_anon.report.json").read_text())["skipped"][0]["file"]
    assert names(tmp_path / "a") == names(tmp_path / "b") == names(tmp_path / "c")
    assert labels(tmp_path / "a") == labels(tmp_path / "b") != labels(tmp_path / "c")


def test_output_names_follow_series_then_position():
    names = OutputNames()
    claimed = [names.claim(uid) for uid in ("2.25.1", "2.25.2", "2.25.1", "", "2.25.2")]
    assert [p.as_posix() for p in claimed] == ["series-001/0001.dcm", "series-002/0001.dcm",
                                               "series-001/0002.dcm", "series-003/0001.dcm",
                                               "series-002/0002.dcm"]
