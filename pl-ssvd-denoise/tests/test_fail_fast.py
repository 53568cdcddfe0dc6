"""A driver that cannot go on ends the run at once, with a one-line reason naming the setting to change,
a report and no staging left: never a hang. Real Spark, real out-of-memory errors."""

import json
import subprocess
import sys
import threading
import time

import numpy as np

from ctsvd_common import contract


def large_series(folder, manifest_for, m=301, side=512):
    """301 × 512² float32 (316 MB): noise is all the driver's memory needs to choke on."""
    folder.mkdir(parents=True)
    (folder / contract.HEADERS).mkdir()
    volume = np.lib.format.open_memmap(folder / contract.VOLUME, mode="w+", dtype=np.float32, shape=(m, side, side))
    rng = np.random.default_rng(0)
    for z in range(0, m, 32):
        volume[z:z + 32] = rng.normal(0, 20, (min(32, m - z), side, side)).astype(np.float32)
    volume.flush()
    contract.write_manifest(folder, manifest_for(np.zeros((m, side, side), np.float32)))


def run_until_exit(args, tmp_path, marker):
    """Run the plugin; return its exit code, its stderr, and the seconds from ``marker`` in stderr to exit."""
    proc = subprocess.Popen([sys.executable, "-m", "ssvd_denoise", *args, str(tmp_path / "in"), str(tmp_path / "out")],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines, seen = [], []

    def read():
        for line in proc.stderr:
            lines.append(line)
            if marker in line and not seen:
                seen.append(time.monotonic())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=900)
    finally:
        proc.kill()
    reader.join(timeout=10)
    return code, "".join(lines), (time.monotonic() - seen[0]) if seen else None


def assert_reported_and_clean(tmp_path, text, setting):
    out = tmp_path / "out"
    report = json.loads((out / "ssvd_denoise.report.json").read_text())
    assert report["status"] == "failed" and report["exit_code"] == 1
    reasons = [e["reason"] for e in report["errors"]]
    assert len(reasons) == 1 and setting in reasons[0], reasons
    assert "\n" not in reasons[0]
    assert not list(out.glob(".*")), f"left behind: {list(out.glob('.*'))}"
    assert not (out / "series-001").exists()
    assert "Traceback" not in text, text[-3000:]
    return reasons[0]


def test_a_driver_out_of_memory_mid_run_ends_it_within_a_minute(tmp_path, manifest_for):
    large_series(tmp_path / "in" / "series-001", manifest_for)
    # Spark refuses a heap under 450 MiB at start (the next test); its testing knob lowers the memory it
    # reserves, so the run starts on 256 MiB and meets the OutOfMemoryError mid-series, streaming slabs.
    code, text, seconds = run_until_exit(
        ["--mode", "local", "--master", "local[2]", "--data-access", "stream",
         "--spark-conf", "spark.driver.memory=256m,spark.testing.reservedMemory=0"], tmp_path, "OutOfMemoryError")
    assert code == 1, text[-3000:]
    assert seconds is not None and seconds < 60, (seconds, text[-3000:])
    reason = assert_reported_and_clean(tmp_path, text, "spark.driver.memory")
    assert "ran out of memory" in reason and "256m" in reason


def test_a_driver_heap_spark_refuses_is_named_at_start(tmp_path, manifest_for):
    large_series(tmp_path / "in" / "series-001", manifest_for, m=4, side=64)
    code, text, _ = run_until_exit(["--mode", "local", "--master", "local[2]",
                                    "--spark-conf", "spark.driver.memory=256m"], tmp_path, "")
    assert code == 1, text[-3000:]
    reason = assert_reported_and_clean(tmp_path, text, "spark.driver.memory")
    assert reason.startswith("cannot start Spark")
