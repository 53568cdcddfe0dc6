"""A stage's report and exit code tell the truth."""

import json
from argparse import Namespace

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
    assert report["skipped"] == [{"file": "README.txt", "reason": "not a DICOM file"}]
    assert report["parameters"] == {"flag": 3} and report["outputs"][0]["path"] == "series-001"


def test_a_failed_input_is_reported_and_the_outputs_stand(tmp_path, caplog):
    def body(stage):
        stage.fail(tmp_path / "in" / "a" / "cut.dcm", "truncated pixel data (10 of 20 bytes)")
        stage.output(tmp_path / "out" / "series-001")
    code, report = run(tmp_path, body)
    assert code == 0 and report["status"] == "ok-with-failures" and len(report["outputs"]) == 1
    assert report["counts"] == {"outputs": 1, "skipped": 0, "failed": 1}
    assert "a/cut.dcm: truncated pixel data (10 of 20 bytes)" in caplog.text


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
    assert error["file"] == "b.dcm" and error["exception"] == "ValueError"
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
