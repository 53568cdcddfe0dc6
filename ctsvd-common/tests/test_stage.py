"""A stage's report and exit code tell the truth."""

import errno
import json
import os
import re
import signal
import time
from argparse import Namespace

import pytest

from ctsvd_common import walk
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


# --------------------------------------------------------------------------- the output folder


def writes(*names):
    """A body that writes ``names`` (files, or folders when they end in /) where it is told to."""
    def body(stage):
        for name in names:
            path = stage.outputdir / name
            if name.endswith("/"):
                path.mkdir()
                (path / "data.bin").write_bytes(b"x")
            else:
                path.write_text(name)
            stage.output(path)
    return body


def test_outputs_are_staged_then_published_after_the_report(tmp_path):
    seen = []

    def body(stage):
        seen.append(stage.outputdir)
        writes("series-001/", "index.html")(stage)
        assert not (tmp_path / "out" / "index.html").exists()   # not before the run ends
    code, report = run(tmp_path, body)
    assert code == 0 and seen == [tmp_path / "out" / ".demo.staging"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["demo.report.json", "index.html", "series-001"]
    assert report["published"] == ["index.html", "series-001"]
    assert [o["path"] for o in report["outputs"]] == ["series-001", "index.html"]


def test_a_used_folder_is_refused_without_a_report(tmp_path, caplog):
    run(tmp_path, writes("series-001/"))
    before = (tmp_path / "out" / "demo.report.json").read_text()
    code = run_stage("demo", "9.9", Namespace(), tmp_path / "in", tmp_path / "out", writes("series-002/"))
    assert code == 2 and (tmp_path / "out" / "demo.report.json").read_text() == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["demo.report.json", "series-001"]
    assert "the output folder is not empty (2 entries); give an empty folder, or --overwrite" in caplog.text


def test_overwrite_removes_the_earlier_run_and_only_it(tmp_path, caplog):
    run(tmp_path, writes("series-001/", "series-002/"))
    (tmp_path / "out" / "mine.txt").write_text("a user's file")
    overwrite = Namespace(overwrite=True)
    code = run_stage("demo", "9.9", overwrite, tmp_path / "in", tmp_path / "out", writes("series-001/"))
    assert code == 2 and (tmp_path / "out" / "series-002").is_dir()     # nothing removed
    assert "1 of the 4 entries of the output folder were not written by the earlier demo run" in caplog.text
    (tmp_path / "out" / "mine.txt").unlink()
    code = run_stage("demo", "9.9", overwrite, tmp_path / "in", tmp_path / "out", writes("series-001/"))
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["demo.report.json", "series-001"]
    # Another plugin's folder is never taken for ours.
    code = run_stage("other", "1.0", overwrite, tmp_path / "in", tmp_path / "out", writes("x/"))
    assert code == 2 and "holds no report of an earlier other run" in caplog.text


def test_an_interrupted_run_publishes_nothing_and_says_so(tmp_path):
    from ctsvd_common import interrupts

    def body(stage):
        writes("series-001/")(stage)
        raise interrupts.Interrupted(signal.SIGTERM)
    code, report = run(tmp_path, body)
    assert code == 143 and report["status"] == "interrupted" and report["interrupted"] == "SIGTERM"
    assert report["outputs"] == [] and report["discarded_outputs"] == 1 and report["published"] == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["demo.report.json"]


def test_a_signal_whose_exception_a_finalizer_swallowed_still_stops_the_run(tmp_path):
    """A stop signal's handler raises in whatever the main thread runs; inside a finalizer (py4j's,
    when the garbage collector runs one) Python prints the exception and drops it. Seen in a fresh
    clone's run: the series finished and the run said exit 0 after a SIGINT."""
    import gc

    class Finalized:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)   # delivered while the finalizer runs
            time.sleep(0.1)

    def body(stage):
        writes("series-001/")(stage)
        Finalized()
        gc.collect()
    code, report = run(tmp_path, body)
    assert code == 130 and report["status"] == "interrupted" and report["interrupted"] == "SIGINT"
    assert report["published"] == [] and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["demo.report.json"]


def test_a_full_disk_ends_the_run_in_one_line(tmp_path, caplog):
    def body(stage):
        writes("series-001/")(stage)
        with stage.guard(tmp_path / "in" / "a.dcm"):
            raise OSError(errno.ENOSPC, "No space left on device")
        writes("series-002/")(stage)
    code, report = run(tmp_path, body)
    assert code == 1 and report["errors"] == [
        {"file": "", "reason": "cannot write the outputs: no space left on the device (ENOSPC)"}]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["demo.report.json"]
    assert "Traceback" not in caplog.text


def test_an_unreadable_input_is_the_inputs_failure_not_the_runs(tmp_path):
    def body(stage):
        with stage.guard(tmp_path / "in" / "a.dcm"):
            raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "in" / "a.dcm"))
        writes("series-001/")(stage)
    code, report = run(tmp_path, body)
    assert code == 0 and report["counts"] == {"outputs": 1, "skipped": 0, "failed": 1}


# --------------------------------------------------------------------------- walking the input


def test_input_walking_lists_every_entry_it_leaves_out(tmp_path):
    root = tmp_path / "in"
    (root / "a").mkdir(parents=True)
    (root / "a" / "slice.dcm").write_bytes(b"x")
    (root / ".DS_Store").write_bytes(b"x")
    (root / ".hidden-folder").mkdir()
    (root / ".hidden-folder" / "x.dcm").write_bytes(b"x")
    os.mkfifo(root / "pipe")
    (root / "dangling").symlink_to(root / "gone")
    (tmp_path / "outside.dcm").write_bytes(b"secret")
    (root / "escape.dcm").symlink_to(tmp_path / "outside.dcm")
    (root / "inside.dcm").symlink_to(root / "a" / "slice.dcm")
    (root / "loop").symlink_to(root)
    tree = walk.input_tree(root)
    assert tree.files == [root / "a" / "slice.dcm", root / "inside.dcm"]
    assert [(p.name, why) for p, why in tree.left_out] == [
        (".DS_Store", "hidden file, not read"),
        (".hidden-folder", "hidden folder, not read"),
        ("dangling", "a link that leads nowhere (dangling), not read"),
        ("escape.dcm", "a link to outside the input folder, not followed"),
        ("loop", "a link to a folder: not followed (its files are read where they are)"),
        ("pipe", "a FIFO (named pipe), not a regular file: not read"),
    ]


def test_a_second_run_into_a_folder_in_use_is_refused_and_leaves_the_first_alone(tmp_path, caplog):
    def body(stage):
        # While this run works, another starts into the same folder.
        code = run_stage("demo", "9.9", Namespace(overwrite=True), tmp_path / "in", tmp_path / "out", writes("y/"))
        assert code == 2 and stage.outputdir.is_dir()     # our staging folder is still there
        writes("series-001/")(stage)
    code, report = run(tmp_path, body)
    assert code == 0 and report["published"] == ["series-001"]
    assert "another run is writing into this output folder" in caplog.text


def test_an_error_raised_while_an_interrupt_unwinds_is_still_the_interrupt(tmp_path):
    """Library code cleaning up after a signal (PySpark's job cancellation) may raise its own error."""
    def body(stage):
        with stage.guard(tmp_path / "in" / "series-001", "series"):
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)   # the handler raises here
            finally:
                raise KeyError("a library's cleanup")   # hides the interrupt, as a finally block may
        writes("series-001/")(stage)
    code, report = run(tmp_path, body)
    assert code == 130 and report["status"] == "interrupted" and report["errors"] == []


def test_settings_dataclasses_list_their_flags_in_the_report_with_the_policy_last(tmp_path):
    from dataclasses import dataclass

    from ctsvd_common.stage import Policy, parameters_of, run_stage

    @dataclass(frozen=True)
    class Settings:
        k: int = 5
        mode: str = "both"
        policy: Policy = Policy(input_map=str(tmp_path / "map.json"))

    settings = Settings()
    assert list(parameters_of(settings)) == ["k", "mode", "strict", "input_map", "overwrite"]
    (tmp_path / "in").mkdir()
    assert run_stage("demo", "1.0", settings, tmp_path / "in", tmp_path / "out", lambda stage: None) == 1
    report = json.loads((tmp_path / "out" / "demo.report.json").read_text())
    assert report["parameters"] == {"k": 5, "mode": "both", "strict": False,
                                    "input_map": "(given, not shown)", "overwrite": False}
    assert (tmp_path / "map.json").exists()   # the policy's input map was written
