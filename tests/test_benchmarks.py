"""The benchmark scripts run and print their comparison (at a toy size: the figures
themselves are measured by hand and quoted in the README)."""

import re
import subprocess
import sys

from conftest import ENV, ROOT


def test_dicom2matrix_benchmark_runs_and_reports_ratios(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "dicom2matrix_vs_loop.py"), "--slices", "12",
                           "--size", "32", "--repeats", "1", "--memory-slices", "4,8", "--workdir", str(tmp_path)],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for label in ("in process", "processes", "+ np.save"):
        assert re.search(rf"{re.escape(label)}\s+[\d.]+ s\s+[\d.]+ s\s+[\d.]+×", proc.stdout), proc.stdout
    assert re.search(r"4 slices \d+ MiB, 8 slices \d+ MiB, ratio [\d.]+", proc.stdout)
