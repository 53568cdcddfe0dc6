"""The benchmark scripts run and print their comparison (at a toy size: the figures
themselves are measured by hand and quoted in the README)."""

import re
import subprocess
import sys

import pytest

from conftest import ENV, ROOT


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
