"""A stopped run (SIGTERM from Kubernetes or Docker, SIGINT from a terminal) leaves no staging
folder behind and still writes a report that says it was interrupted. A real subprocess, real signals."""

import json
import signal
import subprocess
import sys
import time

import pytest


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_discards_the_series_in_progress_and_reports(tmp_path, signum, decaying_volume, write_series):
    inputdir, out = tmp_path / "in", tmp_path / "out"
    # Large enough that the local SVD denoising takes several seconds: the signal lands mid-series.
    write_series(inputdir / "series-001", decaying_volume(m=64, rows=192, cols=256))
    log = tmp_path / "stderr.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "ssvd_denoise", "--master", "local[2]", str(inputdir), str(out)],
                                stderr=stderr, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300   # Spark's start, on a busy machine
        while "local SVD denoising ..." not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-2000:]
            time.sleep(0.1)
        staging = list((out / ".ssvd_denoise.staging").glob(".series-001.*.part"))
        assert staging, "the run is expected to be inside its staging folder when the signal arrives"
        proc.send_signal(signum)
        code = proc.wait(timeout=60)
    finally:
        proc.kill()
    text = log.read_text()
    assert code == 128 + signum, text[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["ssvd_denoise.report.json"]   # no staging, no series
    report = json.loads((out / "ssvd_denoise.report.json").read_text())
    name = signal.Signals(signum).name
    assert report["status"] == "interrupted" and report["interrupted"] == name
    assert report["exit_code"] == 128 + signum and report["published"] == [] and report["outputs"] == []
    assert f"interrupted by {name}" in text
    assert "Traceback" not in text
