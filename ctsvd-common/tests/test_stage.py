"""A stage's report and exit code tell the truth."""

import json
from argparse import Namespace

from ctsvd_common.stage import StageError, run_stage


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


def test_a_failed_input_fails_the_run_but_not_the_others(tmp_path, caplog):
    def body(stage):
        stage.fail(tmp_path / "in" / "a" / "cut.dcm", "truncated pixel data (10 of 20 bytes)")
        stage.output(tmp_path / "out" / "series-001")
    code, report = run(tmp_path, body)
    assert code == 1 and report["status"] == "failed" and len(report["outputs"]) == 1
    assert "a/cut.dcm: truncated pixel data (10 of 20 bytes)" in caplog.text


def test_a_fatal_error_is_one_line(tmp_path, caplog):
    def body(stage):
        raise StageError("no DICOM files found in /incoming")
    code, report = run(tmp_path, body)
    assert code == 1 and report["errors"] == [{"file": "", "reason": "no DICOM files found in /incoming"}]
    assert "Traceback" not in caplog.text
