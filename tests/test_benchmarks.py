"""The benchmark scripts run and print their comparison (at a toy size: the figures
themselves are measured by hand and quoted in the README)."""

import re
import subprocess
import sys

import pytest

from plugin_commands import ENV, ROOT


def test_dicom2matrix_benchmark_runs_and_reports_ratios(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "dicom2matrix_vs_loop.py"), "--slices", "12",
                           "--size", "32", "--repeats", "1", "--memory-slices", "4,8", "--workdir", str(tmp_path)],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for label in ("in process", "processes", "+ np.save"):
        assert re.search(rf"{re.escape(label)}\s+[\d.]+ s\s+[\d.]+ s\s+[\d.]+×", proc.stdout), proc.stdout
    assert re.search(r"4 slices \d+ MiB, 8 slices \d+ MiB, ratio [\d.]+", proc.stdout)


def test_dcm_anon_benchmark_runs_against_dicognito_and_reports_ratios(tmp_path):
    pytest.importorskip("dicognito")   # benchmarks/requirements.txt
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "dcm_anon_vs_dicognito.py"), "--slices", "12",
                           "--size", "32", "--repeats", "1", "--workdir", str(tmp_path)],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for label in ("dicognito", "dcm_anon", "dcm_anon --no-tag-report", "dcm_anon --workers 1"):
        assert re.search(rf"^{re.escape(label)}\s+[\d.]+s\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+$", proc.stdout,
                         re.MULTILINE), proc.stdout
    assert re.search(r"files/s ratio, dcm_anon \(default flags\) / dicognito: [\d.]+x", proc.stdout)
    assert re.search(r"tag report: adds -?[\d.]+ s to the run; de-identification itself [\d.]+ s; ratio -?[\d.]+",
                     proc.stdout)
    # Both tools really wrote every file (the script checks, and the folders are there).
    assert len(list((tmp_path / "warm").rglob("*.dcm"))) >= 12


def test_ssvd_methods_benchmark_runs_every_peer_and_reports_ratios(tmp_path):
    pytest.importorskip("sklearn", reason="pip install -r benchmarks/requirements.txt")
    pytest.importorskip("dask.array", reason="pip install -r benchmarks/requirements.txt")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ssvd_methods.py"), "--slices", "12",
                           "--size", "32", "--k", "4", "--mllib-timeout", "300", "--workdir", str(tmp_path)],
                          capture_output=True, text=True, env=ENV, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {m.group(1).strip(): (float(m.group(2)), float(m.group(3))) for m in re.finditer(
        r"^12×32²\s+(.+?)\s+([\d.]+)\s+([\d.]+e[-+]\d+)", proc.stdout, re.M)}
    assert set(rows) == {"ours gram, whole process", "ours gram, passes", "ours randomized, whole process",
                         "ours randomized, passes", "sklearn randomized_svd (LU), process",
                         "NumPy Gram, in process (compute)", "dask svd_compressed, in process",
                         "MLlib RowMatrix.computeSVD"}, proc.stdout
    # Every method found the 4 leading singular values of a 12-slice stack; the exact ones exactly.
    assert all(error < 1e-3 for _, error in rows.values()), rows
    assert rows["ours gram, whole process"][1] < 1e-10 and rows["NumPy Gram, in process (compute)"][1] < 1e-10
    for label in ("ours gram whole process / sklearn process", "ours gram passes / NumPy Gram in process",
                  "MLlib computeSVD alone / ours gram passes"):
        assert re.search(rf"{re.escape(label)}: [\d.]+ \(target", proc.stdout), proc.stdout
    assert re.search(r"MLlib process / ours gram whole process: [\d.]+ \(JVM start in both\)", proc.stdout)


def test_large_stream_benchmark_runs_on_its_own_cluster_and_reports_memory(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ssvd_stream_large.py"), "--workdir", str(tmp_path),
                           "--slices", "40", "--size", "64"], capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "streamed data access" in proc.stdout
    m = re.search(r"^exit 0, wall \d+ s, driver peak anonymous memory \(Python and its JVM\) (\d+) MiB$", proc.stdout,
                  re.MULTILINE)
    assert m and 100 < int(m.group(1)) < 2048, proc.stdout
    assert (tmp_path / "out" / "series-001" / "Vt.npy").exists()


def test_local_scale_benchmark_runs_its_columns_with_the_same_bytes(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "local_scale.py"), "--workdir", str(tmp_path),
                           "--slices", "40", "--size", "64", "--columns", "in-process,local[2],2 workers stream"],
                          capture_output=True, text=True, env=ENV, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = re.findall(r"^\| 40×64² \| (.+?) \| 0 \| [\d.]+ \| .+ \| [\d.]+ M \| .+ \| \d+ \(\d+\) \| (.+?) \| "
                      r"(yes|reference) \|", proc.stdout, re.MULTILINE)
    assert [(column, same) for column, _, same in rows] == [
        ("in-process", "reference"), ("local[2]", "yes"), ("2 workers stream", "yes")], proc.stdout
    assert int(rows[-1][1]) > 0   # the executors' memory was sampled
    # Run again in the same folder: the columns start from empty output folders, not the last run's.
    again = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "local_scale.py"), "--workdir", str(tmp_path),
                            "--slices", "40", "--size", "64", "--columns", "local[2]"],
                           capture_output=True, text=True, env=ENV, timeout=900)
    assert again.returncode == 0 and re.search(r"^\| 40×64² \| local\[2\] \| 0 \| .+ \| reference \|", again.stdout,
                                               re.MULTILINE), again.stdout[-3000:]
