"""Bad input, through the commands as ChRIS runs them: a clear one-line error naming
the file, a truthful exit code, and nothing half-written."""

import json
import subprocess

import pytest

from ctsvd_common import contract
from ctsvd_testdata.phantom import write_demo_series

from plugin_commands import ENV, ROOT, all_files, error_lines, run_command, source

READERS = ["dcm_anon", "dicom2matrix"]


def hidden(folder):
    return [p for p in folder.rglob(".*")]


@pytest.mark.parametrize("command", READERS)
def test_empty_folder(command, tmp_path):
    (tmp_path / "in").mkdir()
    proc = run_command(command, tmp_path / "in", tmp_path / "out")
    assert proc.returncode == 1
    (line,) = error_lines(proc.stderr)
    assert "no" in line.lower() and str(tmp_path / "in") not in proc.stderr   # its name may be the patient's
    assert [f.name for f in all_files(tmp_path / "out")] == [f"{command}.report.json"]


@pytest.mark.parametrize("command", ["dcm_anon", "dicom2matrix", "ssvd_denoise", "svd_render"])
def test_missing_input_folder_is_reported(command, tmp_path):
    # chris_plugin alone would exit with "Not a directory" before the plugin runs, leaving no report.
    proc = run_command(command, tmp_path / "never-made", tmp_path / "out")
    assert proc.returncode == 1
    (line,) = error_lines(proc.stderr)
    assert line.endswith(": the input folder does not exist") and "never-made" not in proc.stderr
    report = json.loads((tmp_path / "out" / f"{command}.report.json").read_text())
    assert report["status"] == "failed"
    assert report["errors"] == [{"file": "", "reason": "the input folder does not exist"}]
    assert [f.name for f in all_files(tmp_path / "out")] == [f"{command}.report.json"]


@pytest.mark.parametrize("command", ["dcm_anon", "svd_render"])
def test_help_and_usage_errors_are_chris_plugins_own(command, tmp_path):
    help_ = run_command(command, "--help")
    assert help_.returncode == 0 and help_.stdout.count("usage:") == 1 and "inputdir outputdir" in help_.stdout
    refused = run_command(command, "--no-such-flag", tmp_path / "never-made", tmp_path / "out")
    assert refused.returncode == 2 and refused.stderr.count("usage:") == 1
    assert "unrecognized arguments: --no-such-flag" in refused.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", READERS)
def test_only_non_dicom_files(command, tmp_path):
    (tmp_path / "in" / "docs").mkdir(parents=True)
    (tmp_path / "in" / "docs" / "README.txt").write_text("referral letter")
    (tmp_path / "in" / "scan.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    proc = run_command(command, tmp_path / "in", tmp_path / "out")
    assert proc.returncode == 1
    (line,) = error_lines(proc.stderr)
    assert "no DICOM" in line
    report = json.loads((tmp_path / "out" / f"{command}.report.json").read_text())
    for entry in report["skipped"]:
        assert f"skipped {entry['file']}: not a DICOM file" in proc.stderr
    assert {source(tmp_path / "in", s["file"]) for s in report["skipped"]} == {"docs/README.txt", "scan.png"}
    assert "README" not in proc.stderr and "scan.png" not in proc.stderr
    assert [f.name for f in all_files(tmp_path / "out")] == [f"{command}.report.json"]


@pytest.mark.parametrize("command", READERS)
def test_truncated_dicom_among_good_ones(command, tmp_path):
    demo = write_demo_series(tmp_path / "in", slices=6, size=32, seed=9)
    bad = demo.files[2]
    bad.write_bytes(bad.read_bytes()[:-700])
    rel = str(bad.relative_to(tmp_path / "in"))
    proc = run_command(command, tmp_path / "in", tmp_path / "out", "--no-tag-report") if command == "dcm_anon" \
        else run_command(command, tmp_path / "in", tmp_path / "out")
    assert proc.returncode == 0     # outputs were made; the failure is in the log and the report
    (line,) = error_lines(proc.stderr)
    assert hidden(tmp_path / "out") == []
    report = json.loads((tmp_path / "out" / f"{command}.report.json").read_text())
    (label,) = [e["file"] for e in report["errors"]]
    assert line.endswith(f"{label}: truncated pixel data (1348 of 2048 bytes)") and source(tmp_path / "in", label) == rel
    assert report["status"] == "ok-with-failures"
    assert "Traceback" not in proc.stderr
    if command == "dcm_anon":
        written = {str(f.relative_to(tmp_path / "out")) for f in all_files(tmp_path / "out") if f.suffix == ".dcm"}
        assert written == {f"series-001/{i:04d}.dcm" for i in range(1, 6)}
    else:
        manifest = contract.read_manifest(tmp_path / "out" / "series-001")
        assert manifest.volume.shape == [5, 32, 32]
        assert manifest.failed[0]["file"] == label and manifest.failed[0]["left_a_gap"]


def test_a_failing_node_stops_its_descendants_only(tmp_path):
    (tmp_path / "in").mkdir()
    proc = subprocess.run([str(ROOT / "workflows" / "run-local"), str(tmp_path / "in"), str(tmp_path / "out")],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 1
    record = json.loads((tmp_path / "out" / "pipeline-run.json").read_text())
    assert [n["status"] for n in record["nodes"]] == ["failed"] + ["skipped"] * 6
    assert "anonymize: FAILED (exit 1)" in proc.stdout


def test_a_broken_pipeline_file_is_one_line(tmp_path):
    pipeline = tmp_path / "p.yml"
    pipeline.write_text("plugin_tree:\n- {title: a, plugin: pl-dcm-anon v0.1.0, previous: null}\n"
                        "- {title: b, plugin: pl-dicom2matrix v0.1.0, previous: nowhere}\n")
    proc = subprocess.run([str(ROOT / "workflows" / "run-local"), "--pipeline", str(pipeline), str(tmp_path),
                           str(tmp_path / "out")], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {pipeline}: node 'b' follows 'nowhere', which is not a title here")
