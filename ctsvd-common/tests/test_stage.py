"""A stage's report and exit code tell the truth."""

import json
import re
from argparse import Namespace

import pytest

from ctsvd_common.stage import InputSkipped, StageError, UsageError, run_stage


def run(tmp_path, body):
    (tmp_path / "in").mkdir(exist_ok=True)
    code = run_stage("demo", "9.9", Namespace(inputdir="x", outputdir="y", flag=3), tmp_path / "in",
                     tmp_path / "out", body)
    return code, json.loads((tmp_path / "out" / "demo.report.json").read_text())


def test_skips_are_not_errors(tmp_path):
    def body(stage):
        stage.skip(tmp_path / "in" / "README.txt", "not a DICOM file")
        stage.output(tmp_path / "out" / "series-001", slices=3)
    code, report = run(tmp_path, body)
    assert code == 0 and report["status"] == "ok"
    (skipped,) = report["skipped"]
    assert skipped["reason"] == "not a DICOM file" and re.fullmatch(r"input #1 \([0-9a-f]{8}\)", skipped["file"])
    assert report["parameters"] == {"flag": 3} and report["outputs"][0]["path"] == "series-001"


def test_a_failed_input_is_reported_and_the_outputs_stand(tmp_path, caplog):
    def body(stage):
        stage.fail(tmp_path / "in" / "a" / "cut.dcm", "truncated pixel data (10 of 20 bytes)")
        stage.output(tmp_path / "out" / "series-001")
    code, report = run(tmp_path, body)
    assert code == 0 and report["status"] == "ok-with-failures" and len(report["outputs"]) == 1
    assert report["counts"] == {"outputs": 1, "skipped": 0, "failed": 1}
    assert re.search(r"input #1 \([0-9a-f]{8}\): truncated pixel data \(10 of 20 bytes\)", caplog.text)
    assert "cut.dcm" not in caplog.text


def test_strict_fails_the_run_on_any_failed_input(tmp_path):
    (tmp_path / "in").mkdir()

    def body(stage):
        stage.fail(tmp_path / "in" / "cut.dcm", "truncated")
        stage.output(tmp_path / "out" / "series-001")
    code = run_stage("demo", "9.9", Namespace(strict=True), tmp_path / "in", tmp_path / "out", body)
    report = json.loads((tmp_path / "out" / "demo.report.json").read_text())
    assert code == 1 and report["status"] == "failed" and report["strict"] is True


def test_nothing_usable_is_exit_1_even_with_only_skips(tmp_path):
    code, report = run(tmp_path, lambda stage: stage.skip(tmp_path / "in" / "notes.txt", "not a DICOM file"))
    assert code == 1 and report["status"] == "failed"


def test_a_usage_error_is_exit_2(tmp_path, caplog):
    def body(stage):
        raise UsageError("--k must be at least 1, got 0")
    code, report = run(tmp_path, body)
    assert code == 2 and report["status"] == "usage-error"
    assert "--k must be at least 1, got 0" in caplog.text


def test_guard_contains_a_bug_to_its_input_and_quotes_no_value(tmp_path, caplog):
    def body(stage):
        with stage.guard(tmp_path / "in" / "b.dcm"):
            raise ValueError("Invalid value for VR PN: 'DOE^JANE'")
        with stage.guard(tmp_path / "in" / "c.dcm"):
            raise InputSkipped("localizer (scout) image")
        stage.output(tmp_path / "out" / "series-001")
    code, report = run(tmp_path, body)
    assert code == 0 and report["counts"] == {"outputs": 1, "skipped": 1, "failed": 1}
    (error,) = report["errors"]
    assert re.fullmatch(r"input #\d \([0-9a-f]{8}\)", error["file"]) and error["exception"] == "ValueError"
    assert error["traceback"] and all(".py:" in frame for frame in error["traceback"])
    assert "DOE" not in caplog.text and "DOE" not in json.dumps(report)
    assert "Traceback" not in caplog.text


def test_a_bug_outside_any_input_is_one_line_and_exit_1(tmp_path, caplog):
    def body(stage):
        raise KeyError("PatientName DOE^JANE")
    code, report = run(tmp_path, body)
    assert code == 1 and report["errors"][0]["reason"] == "unexpected error (KeyError)"
    assert "DOE" not in caplog.text and "Traceback" not in caplog.text


def test_a_fatal_error_is_one_line(tmp_path, caplog):
    def body(stage):
        raise StageError("no DICOM files found in /incoming")
    code, report = run(tmp_path, body)
    assert code == 1 and report["errors"] == [{"file": "", "reason": "no DICOM files found in /incoming"}]
    assert "Traceback" not in caplog.text


def test_inputs_are_named_by_position_and_keyed_hash_and_mapped_only_where_asked(tmp_path, caplog):
    (tmp_path / "in" / "DOE_JANE").mkdir(parents=True)

    def body(stage):
        stage.names.number(["DOE_JANE/2023-04-05.dcm", "DOE_JANE/notes.txt"])
        stage.skip(tmp_path / "in" / "DOE_JANE" / "notes.txt", "not a DICOM file")
        stage.fail(tmp_path / "in" / "DOE_JANE" / "2023-04-05.dcm", "truncated")
        stage.output(tmp_path / "out" / "series-001")

    mapping = tmp_path / "private" / "map.json"
    options = Namespace(input_map=str(mapping))
    assert run_stage("demo", "9.9", options, tmp_path / "in", tmp_path / "out", body) == 0
    report = (tmp_path / "out" / "demo.report.json").read_text()
    assert "DOE" not in report and "DOE" not in caplog.text and "2023" not in report and str(mapping) not in report
    labels = {e["file"] for e in json.loads(report)["skipped"] + json.loads(report)["errors"]}
    assert {label.split(" (")[0] for label in labels} == {"input #1", "input #2"}
    entries = json.loads(mapping.read_text())
    assert entries["contains_phi"] and {e["input"]: e["path"] for e in entries["inputs"]} == {
        e["input"]: e["path"] for e in entries["inputs"] if e["input"] in labels}
    assert sorted(e["path"] for e in entries["inputs"]) == ["DOE_JANE/2023-04-05.dcm", "DOE_JANE/notes.txt"]


@pytest.mark.parametrize("where", ["out/map.json", "out/sub/map.json", "out"])
def test_an_input_map_inside_the_output_folder_is_a_usage_error(tmp_path, where):
    (tmp_path / "in").mkdir()
    options = Namespace(input_map=str(tmp_path / where))
    assert run_stage("demo", "9.9", options, tmp_path / "in", tmp_path / "out", lambda stage: None) == 2
    assert not (tmp_path / "out" / "map.json").exists()


def test_the_same_key_gives_the_same_labels_and_another_key_others():
    from ctsvd_common.inputnames import InputNames

    a, b, c = InputNames(b"k"), InputNames(b"k"), InputNames(b"other")
    assert a("x/DOE.dcm") == b("x/DOE.dcm") == "input #1 (" + a.digest("x/DOE.dcm") + ")"
    assert c("x/DOE.dcm") != a("x/DOE.dcm") and a("y.dcm").startswith("input #2 (")
