"""The plugin on a real Spark standalone cluster: a master and a worker on 127.0.0.1,
started from pyspark's own ``bin/spark-class``, as on a small on-premises cluster."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyspark
import pytest

from ctsvd_common import contract
from ssvd_denoise import local
from ssvd_denoise.spark import masterprobe
from ssvd_denoise.options import Settings, parser
from ssvd_denoise.run import run


SPARK_HOME = Path(pyspark.__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(log: Path, text: str, proc: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            pytest.fail(f"{log.name} exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        time.sleep(0.25)
    pytest.fail(f"{text!r} not seen in {log.name} within {seconds} s:\n{log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def standalone_master(tmp_path_factory):
    work = tmp_path_factory.mktemp("spark-standalone")
    env = {**os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_NO_DAEMONIZE": "1"}
    port = free_port()
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    procs = []
    try:
        master_log = work / "master.log"
        procs.append(subprocess.Popen(
            [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
             "--webui-port", str(free_port())], env=env, stdout=open(master_log, "w"), stderr=subprocess.STDOUT))
        wait_for(master_log, "I have been elected leader", procs[0])
        worker_log = work / "worker.log"
        procs.append(subprocess.Popen(
            [spark_class, "org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}", "--host", "127.0.0.1",
             "--cores", "2", "--memory", "2g", "--webui-port", str(free_port()), "--work-dir", str(work / "work")],
            env=env, stdout=open(worker_log, "w"), stderr=subprocess.STDOUT))
        wait_for(worker_log, "Successfully registered with master", procs[1])
        yield f"spark://127.0.0.1:{port}"
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.mark.parametrize("access", ["auto", "stream"])
def test_standalone_cluster_gives_the_local_result(standalone_master, series_input, tmp_path, access):
    inputdir, volume = series_input
    args = ["--k", "8", "--master", standalone_master, "--data-access", access,
            "--spark-conf", "spark.executor.memory=1g,spark.cores.max=2"]
    assert run(Settings.from_options(parser.parse_args(args)), inputdir, tmp_path / "cluster") == 0
    record = json.loads((tmp_path / "cluster" / "series-001" / contract.SVD_JSON).read_text())
    assert record["spark"]["master"] == standalone_master
    assert record["spark"]["executors"] == 1
    assert record["spark"]["data_access"] == ("shared" if access == "auto" else "stream")
    # 64 × 96 pixels: rows of Vt are whole pages, so shared executors write their own columns.
    assert record["spark"]["vt_written_by"] == ("executors" if access == "auto" else "driver")

    s = np.load(tmp_path / "cluster" / "series-001" / contract.SVD_S)
    reference = np.linalg.svd(volume.reshape(volume.shape[0], -1).astype(np.float64), compute_uv=False)[:8]
    assert np.max(np.abs(s - reference) / reference) < 1e-3
    Vt = np.load(tmp_path / "cluster" / "series-001" / contract.SVD_VT)
    assert np.allclose(Vt @ Vt.T, np.eye(8), atol=1e-4)


def test_odd_slice_sizes_send_vt_through_the_driver_on_a_cluster(standalone_master, tmp_path, decaying_volume,
                                                                 write_series):
    # 50 × 70 pixels: a row of Vt is not whole pages, so two executors on two hosts could write
    # into one page of the shared file; on a cluster Vt comes back through the driver instead.
    volume = decaying_volume(m=40, rows=50, cols=70, seed=3)
    write_series(tmp_path / "in" / "series-001", volume)
    args = ["--k", "6", "--mode", "global", "--master", standalone_master, "--partitions", "3",
            "--spark-conf", "spark.executor.memory=1g,spark.cores.max=2"]
    assert run(Settings.from_options(parser.parse_args(args)), tmp_path / "in", tmp_path / "out") == 0
    record = contract.read_svd(tmp_path / "out" / "series-001")
    assert record.spark["data_access"] == "shared" and record.spark["vt_written_by"] == "driver"
    A = volume.reshape(40, -1).astype(np.float64)
    U, s, Vt_ref = np.linalg.svd(A, full_matrices=False)
    Vt = np.load(tmp_path / "out" / "series-001" / contract.SVD_VT)
    # Same subspace, row by row (signs are fixed by U's largest entries, so compare up to sign).
    assert np.allclose(np.abs(np.sum(Vt * Vt_ref[:6], axis=1)), 1, atol=1e-4)


def test_the_probe_hears_a_real_master(standalone_master):
    host, port = standalone_master[len("spark://"):].rsplit(":", 1)
    t0 = time.monotonic()
    assert masterprobe.probe(host, int(port), 10) is None
    assert time.monotonic() - t0 < 2


def test_relative_paths_are_resolved_before_the_executors_are_asked(standalone_master, series_input, tmp_path,
                                                                     monkeypatch):
    inputdir, _ = series_input
    monkeypatch.chdir(inputdir.parent)
    args = ["--k", "4", "--mode", "global", "--master", standalone_master,
            "--spark-conf", "spark.executor.memory=1g,spark.cores.max=2"]
    assert run(Settings.from_options(parser.parse_args(args)), Path(inputdir.name), Path("relative-out")) == 0
    record = contract.read_svd(tmp_path / "relative-out" / "series-001")
    assert record.spark["data_access"] == "shared" and record.method == "gram"


def large_series(folder: Path, manifest_for, m: int = 301, side: int = 512) -> np.ndarray:
    """A series of m × side² float32 (316 MB at the defaults): rank 8 plus noise, written slice by slice.
    Returns the exact singular values, from the float64 Gram matrix."""
    rng = np.random.default_rng(5)
    basis = rng.standard_normal((8, side * side)).astype(np.float32)
    weights = (rng.standard_normal((m, 8)) * (100.0 / np.arange(1, 9))).astype(np.float32)
    folder.mkdir(parents=True)
    (folder / contract.HEADERS).mkdir()
    volume = np.lib.format.open_memmap(folder / contract.VOLUME, mode="w+", dtype=np.float32, shape=(m, side, side))
    G = np.zeros((m, m))
    for i in range(0, m, 32):
        rows = weights[i:i + 32] @ basis + rng.standard_normal((len(weights[i:i + 32]), side * side), np.float32)
        volume[i:i + 32] = rows.reshape(-1, side, side)
    A = volume.reshape(m, -1)
    for c in range(0, A.shape[1], 16384):
        chunk = A[:, c:c + 16384].astype(np.float64)
        G += chunk @ chunk.T
    volume.flush()
    contract.write_manifest(folder, manifest_for(np.zeros((m, side, side), np.float32)))
    return np.sqrt(np.linalg.eigvalsh(G)[::-1])


def test_a_316_mb_series_streams_to_executors_once_with_small_tasks(standalone_master, tmp_path, manifest_for):
    reference = large_series(tmp_path / "in" / "series-001", manifest_for)
    assert (tmp_path / "in" / "series-001" / contract.VOLUME).stat().st_size > 300e6
    # No memory flags: the worker's 2 GiB, Spark's default 1 GiB executor and driver.
    proc = subprocess.run([sys.executable, "-m", "ssvd_denoise", "--mode", "global", "--k", "10",
                           "--master", standalone_master, "--data-access", "stream",
                           str(tmp_path / "in"), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "task of very large size" not in proc.stderr, [l for l in proc.stderr.splitlines() if "large size" in l]
    record = contract.read_svd(tmp_path / "out" / "series-001")
    assert record.spark["data_access"] == "stream" and record.method == "gram"
    s = np.array(record.singular_values)
    assert np.max(np.abs(s - reference[:10]) / reference[:10]) < 1e-6


def test_local_mode_streams_slabs_in_small_tasks_and_gives_the_in_process_bytes(standalone_master, tmp_path,
                                                                                decaying_volume, write_series):
    # 64 × 128²: the old code shipped each tile's slices inside its task, tasks of 2-3 MB; a slab here
    # reads over 1 MiB, and is sent once, as a block, never inside a task.
    volume = decaying_volume(m=64, rows=128, cols=128, seed=4)
    write_series(tmp_path / "in" / "series-001", volume)
    proc = subprocess.run([sys.executable, "-m", "ssvd_denoise", "--mode", "local", "--master", standalone_master,
                           "--data-access", "stream", str(tmp_path / "in"), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "task of very large size" not in proc.stderr, [l for l in proc.stderr.splitlines() if "large size" in l]
    series = tmp_path / "out" / "series-001"
    record = contract.read_local(series)
    assert record.spark["data_access"] == "stream" and record.spark["master"] == standalone_master
    slabs, tasks = record.spark["slabs"], record.spark["tasks"]
    assert slabs["count"] >= 2 and slabs["max_read_bytes"] > 1 << 20
    assert 0 < tasks["payload_bytes"] < 1 << 20 and tasks["count"] == slabs["count"] == record.tiles
    shares = record.spark["executor_shares"]
    assert sum(s["tasks"] for s in shares.values()) == slabs["count"]
    assert abs(sum(s["share"] for s in shares.values()) - 1) < 0.01
    assert {"sending the slabs", "computing", "fetching and writing"} <= set(record.timings)
    assert all(v > 0 for v in record.timings["task_seconds"].values())
    expected, found = local.denoise(volume)
    assert np.array_equal(np.load(series / contract.LOCAL), expected)
    assert record.noise == found["noise"] and record.choices == found["choices"]
    assert not list((tmp_path / "out").glob(".*")) and not list(series.glob(".*"))   # no staging, no parts


def test_a_cluster_that_cannot_host_the_executors_ends_the_run_within_a_minute(standalone_master, tmp_path,
                                                                               decaying_volume, write_series):
    # The worker offers 2 GiB; executors of 4 GiB never start, and Spark would wait for them forever.
    write_series(tmp_path / "in" / "series-001", decaying_volume(m=8, rows=16, cols=16))
    log = tmp_path / "stderr.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "ssvd_denoise", "--mode", "local", "--master", standalone_master,
                                 "--spark-conf", "spark.executor.memory=4g", str(tmp_path / "in"),
                                 str(tmp_path / "out")], stderr=stderr, stdout=subprocess.DEVNULL)
    try:
        wait_for(log, "starting the Python workers ...", proc, seconds=300)
        t0 = time.monotonic()
        code = proc.wait(timeout=120)
    finally:
        proc.kill()
    assert code == 1 and time.monotonic() - t0 < 60, log.read_text()[-3000:]
    report = json.loads((tmp_path / "out" / "ssvd_denoise.report.json").read_text())
    [error] = report["errors"]
    assert error["reason"].startswith("no Spark executor for 30 s") and "spark.executor.memory=4g" in error["reason"]
    assert "Traceback" not in log.read_text()
