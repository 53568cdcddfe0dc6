"""The plugin on a real Spark standalone cluster: a master and a worker on 127.0.0.1,
started from pyspark's own ``bin/spark-class``, as on a small on-premises cluster."""

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pyspark
import pytest

from ctsvd_common import contract
from ssvd_denoise import masterprobe
from ssvd_denoise.__main__ import main, parser

SPARK_HOME = Path(pyspark.__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(log: Path, text: str, proc: subprocess.Popen, seconds: float = 90) -> None:
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
    assert main(parser.parse_args(args), inputdir, tmp_path / "cluster") == 0
    record = json.loads((tmp_path / "cluster" / "series-001" / contract.SVD_JSON).read_text())
    assert record["spark"]["master"] == standalone_master
    assert record["spark"]["executors"] == 1
    assert record["spark"]["data_access"] == ("shared" if access == "auto" else "stream")

    s = np.load(tmp_path / "cluster" / "series-001" / contract.SVD_S)
    reference = np.linalg.svd(volume.reshape(volume.shape[0], -1).astype(np.float64), compute_uv=False)[:8]
    assert np.max(np.abs(s - reference) / reference) < 1e-3
    Vt = np.load(tmp_path / "cluster" / "series-001" / contract.SVD_VT)
    assert np.allclose(Vt @ Vt.T, np.eye(8), atol=1e-4)


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
    assert main(parser.parse_args(args), Path(inputdir.name), Path("relative-out")) == 0
    record = contract.read_svd(tmp_path / "relative-out" / "series-001")
    assert record.spark["data_access"] == "shared" and record.method == "gram"
