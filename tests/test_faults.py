"""Faults, plugin by plugin, through the commands as ChRIS runs them: a stop signal at three points of a
run, a rerun into a used folder, a full disk, a read-only output folder, a declared 64 GB series and
--workers 10000. Each ends with the documented exit code, a report where one can be written, no staging
left behind, no process left alive, and no output that mixes runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from ctsvd_common import contract, resources
from ctsvd_testdata.phantom import write_demo_series

from plugin_commands import BIN, ENV, error_lines, run_command

PAUSE_AT = Path(__file__).with_name("pause_at.py")
REPORT = "{}.report.json"
# The SVD node's global mode is its quickest: most tests here need it only to run at all.
FLAGS = {"dcm_anon": [], "dicom2matrix": [], "ssvd_denoise": ["--k", "4", "--mode", "global", "--master", "local[2]"],
         "svd_render": ["--windows", "lung"]}


# --------------------------------------------------------------------------- inputs, made once


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """Each plugin's input: an exam for the readers, their parent's real output for the others."""
    root = tmp_path_factory.mktemp("inputs")
    write_demo_series(root / "exam", slices=40, size=64, seed=3)
    for command, parent, child in (("dicom2matrix", "exam", "volumes"), ("ssvd_denoise", "volumes", "factors")):
        flags = ["--k", "4", "--master", "local[2]"] if command == "ssvd_denoise" else []   # both results
        proc = run_command(command, *flags, root / parent, root / child)
        assert proc.returncode == 0, proc.stderr[-2000:]
    return {"dcm_anon": root / "exam", "dicom2matrix": root / "exam", "ssvd_denoise": root / "volumes",
            "svd_render": root / "factors"}


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def report_of(command: str, out: Path) -> dict:
    return json.loads((out / REPORT.format(command)).read_text())


def assert_clean_end(command: str, proc_or_text, out: Path) -> None:
    """No traceback, no staging folder, nothing hidden left in the output folder."""
    text = proc_or_text if isinstance(proc_or_text, str) else proc_or_text.stderr
    assert "Traceback" not in text, text[-3000:]
    if out.is_dir():
        assert not [p for p in out.rglob(".*")], f"left behind: {[p for p in out.rglob('.*')]}"


# --------------------------------------------------------------------------- processes


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def assert_all_ended(pids: set[int]) -> None:
    deadline = time.monotonic() + 20
    left = {p for p in pids if alive(p)}
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = {p for p in left if alive(p)}
    assert not left, f"still alive after the run ended: {left}"


def stop_at(command: str, point: str, inputdir: Path, out: Path, log: Path, signum: int,
            flags: list[str] = ()) -> tuple[int, str, set[int]]:
    """Run ``command`` paused at ``point`` (tests/pause_at.py), send ``signum`` there, wait for the end.

    Returns the exit code, the log and every process the run had started by then."""
    with open(log, "w") as stderr:
        proc = subprocess.Popen([sys.executable, str(PAUSE_AT), point, command, *flags, str(inputdir), str(out)],
                                stdout=subprocess.DEVNULL, stderr=stderr, env=ENV)
    try:
        deadline = time.monotonic() + 180
        while f"PAUSED {point}" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        started = descendants(proc.pid)
        proc.send_signal(signum)
        code = proc.wait(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    return code, log.read_text(), started


# --------------------------------------------------------------------------- signals

POINTS = [
    # (command, where the signal lands): in a worker, in the main process while it writes, at the end
    ("dcm_anon", "dcm_anon.tree:_deidentify_file"),          # workers de-identifying, the tag report child waiting
    ("dcm_anon", "dcm_anon.tree:_place"),                    # files being placed in the staging folder
    ("dcm_anon", "dcm_anon.tag_report:timeout_for"),         # the tag report child about to list them
    ("dicom2matrix", "dicom2matrix.scan:scan_file"),         # workers reading headers
    ("dicom2matrix", "dicom2matrix.hounsfield:convert_file"),  # workers writing slices into the volume
    ("dicom2matrix", "dicom2matrix.convert:publish"),        # series being finished
    ("ssvd_denoise", "ssvd_denoise.series:check_series"),    # before Spark starts
    ("ssvd_denoise", "ssvd_denoise.local.spark:denoise"),    # Spark running, local.npy being made
    ("ssvd_denoise", "ctsvd_common.contract:write_svd"),     # the SVD done, its files being written
    ("svd_render", "svd_render.results:load_results"),
    ("svd_render", "svd_render.render:write_pictures"),
    ("svd_render", "svd_render.report:index_page"),
]


@pytest.mark.parametrize("command, point", POINTS, ids=[p for _, p in POINTS])
def test_a_stop_signal_at_any_point_ends_the_run_cleanly(command, point, inputs, tmp_path):
    out = tmp_path / "out"
    flags = [*FLAGS[command], "--workers", "2"] if command in ("dcm_anon", "dicom2matrix") else FLAGS[command]
    if point.endswith(":denoise"):
        flags = [*flags, "--mode", "local"]   # the last --mode counts
    signum = signal.SIGINT if point.endswith("publish") else signal.SIGTERM   # a terminal's Ctrl-C, once
    code, text, started = stop_at(command, point, inputs[command], out, tmp_path / "stderr.log", signum, flags)
    assert code == 128 + signum, text[-3000:]
    assert entries(out) == [REPORT.format(command)]           # nothing published, no staging
    report = report_of(command, out)
    name = signal.Signals(signum).name
    assert report["status"] == "interrupted" and report["interrupted"] == name and report["published"] == []
    assert report["exit_code"] == 128 + signum and report["outputs"] == []
    assert f"interrupted by {name}" in text
    assert_clean_end(command, text, out)
    assert_all_ended(started)


# --------------------------------------------------------------------------- a used output folder


@pytest.mark.parametrize("command", list(FLAGS))
def test_a_rerun_never_mixes_runs(command, inputs, tmp_path):
    out = tmp_path / "out"
    first = run_command(command, *FLAGS[command], inputs[command], out)
    assert first.returncode == 0, first.stderr[-2000:]
    published = report_of(command, out)["published"]
    assert published and sorted(published + [REPORT.format(command)]) == entries(out)
    before = snapshot(out)

    # Into the used folder: refused, in one line, and nothing touched (the earlier report included).
    again = run_command(command, *FLAGS[command], inputs[command], out)
    assert again.returncode == 2
    (line,) = error_lines(again.stderr)
    assert "not empty" in line and "--overwrite" in line
    assert snapshot(out) == before
    assert_clean_end(command, again, out)

    # --overwrite removes only what the earlier run wrote: with anything else there, nothing at all.
    (out / "my-notes.txt").write_text("not the plugin's")
    refused = run_command(command, *FLAGS[command], "--overwrite", inputs[command], out)
    assert refused.returncode == 2 and "nothing was removed" in error_lines(refused.stderr)[0]
    assert {k: v for k, v in snapshot(out).items() if k != "my-notes.txt"} == before
    (out / "my-notes.txt").unlink()

    # With only the earlier run there, it is replaced whole: a stray file inside its outputs goes too.
    stray = next(out / p / "stray.txt" for p in published if (out / p).is_dir())
    stray.write_text("left by hand in an earlier output")
    replaced = run_command(command, *FLAGS[command], "--overwrite", inputs[command], out)
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert not stray.exists()
    report = report_of(command, out)
    assert sorted(report["published"] + [REPORT.format(command)]) == entries(out)
    assert "--overwrite: removed the" in replaced.stderr
    assert_clean_end(command, replaced, out)


def test_overwrite_with_a_smaller_input_keeps_nothing_of_the_larger_run(inputs, tmp_path):
    """Two exams, one folder: after the second run only the second exam is there."""
    small = tmp_path / "small"
    files = sorted(inputs["dcm_anon"].rglob("*.dcm"))[:12]
    for f in files:
        target = small / f.relative_to(inputs["dcm_anon"])
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, target)
    for command in ("dcm_anon", "dicom2matrix"):
        out = tmp_path / command
        assert run_command(command, inputs[command], out).returncode == 0
        assert run_command(command, "--overwrite", small, out).returncode == 0
        report = report_of(command, out)
        if command == "dcm_anon":
            written = sorted(p for p in out.rglob("*.dcm") if "tag-report" not in p.parts)
            assert len(written) == len(files) == report["counts"]["outputs"]
        else:
            assert entries(out) == ["dicom2matrix.report.json", "series-001"]
            assert np.load(out / "series-001" / "volume.npy", mmap_mode="r").shape[0] == len(files)


def test_staging_left_by_a_killed_run_is_removed_by_the_next(inputs, tmp_path):
    out = tmp_path / "out"
    code, _, started = stop_at("dicom2matrix", "dicom2matrix.hounsfield:convert_file", inputs["dicom2matrix"],
                               out, tmp_path / "stderr.log", signal.SIGKILL, ["--workers", "2"])
    assert code == -signal.SIGKILL
    assert_all_ended(started)   # its workers die with it
    assert entries(out) == [".dicom2matrix.staging"]
    proc = run_command("dicom2matrix", inputs["dicom2matrix"], out)
    assert proc.returncode == 0
    assert "removed .dicom2matrix.staging/, left by a run that was stopped before it ended" in proc.stderr
    assert entries(out) == ["dicom2matrix.report.json", "series-001"]


# --------------------------------------------------------------------------- disks that refuse


def _mount(target: Path, options: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.decode().strip() or 'mount failed'})")


@pytest.fixture
def nearly_full(tmp_path):
    """A 20 MB tmpfs with 192 kB left: the output folder is on it."""
    disk = tmp_path / "disk"
    _mount(disk, "size=20m")
    try:
        with open(disk / "filler", "wb") as f:
            os.posix_fallocate(f.fileno(), 0, resources.free_disk(disk) - (192 << 10))
        yield disk / "out"
    finally:
        subprocess.run(["umount", "-l", str(disk)])


@pytest.mark.parametrize("command", list(FLAGS))
def test_a_full_disk_is_one_line_and_a_report(command, inputs, nearly_full):
    out = nearly_full
    proc = run_command(command, *FLAGS[command], inputs[command], out)
    assert proc.returncode == 1, proc.stderr[-2000:]
    report = report_of(command, out)
    assert report["status"] == "failed" and report["published"] == []
    reasons = " ".join(e["reason"] for e in report["errors"])
    assert "no space left on the device (ENOSPC)" in reasons or "too large for the disk" in reasons, reasons
    assert entries(out) == [REPORT.format(command)]
    assert_clean_end(command, proc, out)


@pytest.mark.parametrize("command", list(FLAGS))
def test_a_read_only_output_folder_is_one_line(command, inputs, tmp_path):
    out = tmp_path / "out"
    _mount(out, "ro,size=1m")
    try:
        proc = run_command(command, *FLAGS[command], inputs[command], out)
    finally:
        subprocess.run(["umount", "-l", str(out)])
    assert proc.returncode == 1
    errors = error_lines(proc.stderr)
    assert errors[0].endswith("cannot write the outputs: the file system is read-only (EROFS)")
    assert errors[1].endswith("the report cannot be written: cannot write the outputs: the file system is "
                              "read-only (EROFS)")
    assert len(errors) == 2
    assert_clean_end(command, proc, out)


# --------------------------------------------------------------------------- sizes and counts

GB = 1e9


def _slices_beyond_this_machine(slice_bytes: int, folder: Path) -> int:
    """Slices enough for 64 GB, and more than the disk holds, so that no machine would take them."""
    return int(max(64 * GB, 1.2 * resources.free_disk(folder)) // slice_bytes) + 1


def _huge_dicom(folder: Path, slices: int, side: int) -> None:
    """A CT series declaring ``slices`` of side² pixels, each file holding only the start of its pixels."""
    template = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    series = pydicom.uid.generate_uid()
    folder.mkdir(parents=True)
    for i in range(slices):
        ds = template.copy()
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series, pydicom.uid.generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.Rows = ds.Columns = side
        ds.ImagePositionPatient = [0, 0, float(i)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.InstanceNumber = i + 1
        ds.PixelData = bytes(4096)
        ds.save_as(folder / f"{i:04d}.dcm", enforce_file_format=True)


def _huge_series(source: Path, dest: Path) -> tuple[int, int, int]:
    """A copy of a real series folder whose volumes (sparse files) and manifest declare 64 GB or more."""
    shutil.copytree(source, dest)
    shape = (_slices_beyond_this_machine(4096 * 4096 * 4, dest), 4096, 4096)
    for name in (contract.VOLUME, contract.LOCAL):
        if (dest / name).exists():
            (dest / name).unlink()
            np.lib.format.open_memmap(dest / name, mode="w+", dtype=np.float32, shape=shape)
    manifest = contract.read_manifest(dest)
    manifest.volume.shape = list(shape)
    contract.write_manifest(dest, manifest)
    return shape


def test_a_declared_64_gb_series_is_refused_with_the_numbers_and_the_run_goes_on(inputs, tmp_path):
    # dicom2matrix: the huge series beside the small exam, which is converted as usual.
    exam = tmp_path / "exam"
    shutil.copytree(inputs["dicom2matrix"], exam / "small")
    _huge_dicom(exam / "huge", _slices_beyond_this_machine(16384 * 16384 * 4, tmp_path), 16384)
    # dcm_anon reads every file whole: the declared size costs nothing, the missing pixels fail each file.
    proc = run_command("dcm_anon", "--no-tag-report", exam, tmp_path / "anon")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = report_of("dcm_anon", tmp_path / "anon")
    assert report["counts"] == {"outputs": 40, "skipped": 0, "failed": len(list((exam / "huge").iterdir()))}
    assert {e["reason"] for e in report["errors"]} == {f"truncated pixel data (4096 of {16384 * 16384 * 2} bytes)"}
    assert_clean_end("dcm_anon", proc, tmp_path / "anon")
    proc = run_command("dicom2matrix", exam, tmp_path / "volumes")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = report_of("dicom2matrix", tmp_path / "volumes")
    assert report["counts"]["outputs"] == 1
    refused = [e for e in report["errors"] if "too large for" in e["reason"]]   # inputs are named by label
    assert len(refused) == len(list((exam / "huge").iterdir()))
    assert "16384×16384" in refused[0]["reason"] and " GB" in refused[0]["reason"]
    assert "too large for" in refused[0]["reason"]
    assert_clean_end("dicom2matrix", proc, tmp_path / "volumes")

    # ssvd_denoise (both denoisers: the local one holds tiles in memory) and svd_render: a series folder
    # declaring a huge volume (sparse files), refused before Spark and before a byte of it is read.
    for command, flags in (("ssvd_denoise", [*FLAGS["ssvd_denoise"], "--mode", "both"]),
                           ("svd_render", FLAGS["svd_render"])):
        source = inputs[command] / "series-001"
        shape = _huge_series(source, tmp_path / f"{command}-in" / "series-001")
        out = tmp_path / f"{command}-out"
        started = time.monotonic()
        proc = run_command(command, *flags, tmp_path / f"{command}-in", out)
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert time.monotonic() - started < 30   # refused from its declared size, not after reading it
        (error,) = report_of(command, out)["errors"]
        assert error["file"] == "series-001" and f"{shape[0]} slices of 4096×4096" in error["reason"]
        assert " GB" in error["reason"] and "too large for" in error["reason"]
        assert entries(out) == [REPORT.format(command)]
        assert_clean_end(command, proc, out)


@pytest.mark.parametrize("command, flags", [("dcm_anon", ["--workers", "10000"]),
                                            ("dicom2matrix", ["--workers", "10000"]),
                                            ("ssvd_denoise", ["--k", "4", "--mode", "global",
                                                              "--master", "local[10000]"])])
def test_ten_thousand_workers_are_capped_at_the_cpus(command, flags, inputs, tmp_path):
    cpus = resources.available_cpus()
    out = tmp_path / "out"
    with open(tmp_path / "stderr.log", "w") as stderr:
        proc = subprocess.Popen([str(BIN / command), *flags, str(inputs[command]), str(out)], stderr=stderr, env=ENV)
        most = 0
        while proc.poll() is None:
            most = max(most, len([p for p in descendants(proc.pid) if _is_python(p)]))
            time.sleep(0.02)
    text = (tmp_path / "stderr.log").read_text()
    assert proc.returncode == 0, text[-2000:]
    assert f"capped at {cpus}" in text or f"capped at local[{cpus}]" in text
    assert most <= cpus + 1   # the workers, and dcm_anon's tag report child
    if command != "ssvd_denoise":
        assert report_of(command, out)["summary"]["workers"] <= cpus
    assert_clean_end(command, text, out)


def _is_python(pid: int) -> bool:
    try:
        return "python" in Path(f"/proc/{pid}/comm").read_text()
    except OSError:
        return False


def test_names_the_run_reserves_are_never_taken_by_inputs(inputs, tmp_path):
    """A DICOM file named like dcm_anon's report, a series in a folder named tag-report/: both are
    written and converted like any other, and the report and the tag report stay what they are."""
    exam = tmp_path / "exam"
    shutil.copytree(inputs["dcm_anon"], exam / "tag-report")
    other = write_demo_series(tmp_path / "other", slices=3, size=64, seed=9)
    shutil.copy(other.files[0], exam / "dcm_anon.report.json")
    proc = run_command("dcm_anon", exam, tmp_path / "anon")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = report_of("dcm_anon", tmp_path / "anon")     # the run's report, not a DICOM file
    assert report["stage"] == "dcm_anon" and report["counts"] == {"outputs": 41, "skipped": 0, "failed": 0}
    assert all(p.suffix in (".json", ".html") for p in (tmp_path / "anon" / "tag-report").rglob("*") if p.is_file())
    assert len([p for p in (tmp_path / "anon").rglob("*") if p.is_file() and _is_dicom(p)]) == 41

    proc = run_command("dicom2matrix", "--min-slices", "1", tmp_path / "anon", tmp_path / "volumes")
    assert proc.returncode == 0, proc.stderr[-2000:]
    converted = sorted(o["slices"] for o in report_of("dicom2matrix", tmp_path / "volumes")["outputs"])
    assert converted == [1, 40]      # nothing dropped for its folder's name


def _is_dicom(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(132)[128:] == b"DICM"
