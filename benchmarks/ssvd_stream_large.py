"""A large series streamed to a standalone cluster whose executors cannot read it.

    .venv/bin/python benchmarks/ssvd_stream_large.py --workdir DIR [--slices 11500] [--size 512]

Writes a series of ``slices`` × ``size``² float32 (11,500 × 512² is 12 GB: a
low-rank anatomy that drifts along z, plus noise) into DIR, starts a Spark
master and two workers of 1 core and 2 GiB each on 127.0.0.1 from pyspark's
own ``spark-class``, and runs ``ssvd_denoise --mode global --data-access
stream`` against them with no memory settings. Prints the exit code, the wall
time, the stage lines of the log, and the peak anonymous memory of the driver
(the plugin's Python and its JVM, sampled every second from /proc).

Measured on 2 cores, the same cluster and command on 11,500 slices of the
CT phantom instead of this synthetic stack: exit 0 in 421 s, 937 MiB.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pyspark

from ctsvd_common import contract
from ctsvd_common.contract import Geometry, Manifest, SeriesIdentity, SliceEntry, VolumeInfo

SPARK_CLASS = Path(pyspark.__file__).parent / "bin" / "spark-class"


def write_series(folder: Path, slices: int, size: int, chunk: int = 100) -> None:
    """A low-rank stack (12 smooth images mixed with weights that drift along z) plus 10 HU noise."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    basis = np.stack([np.cos(np.pi * (i % 4 + 1) * x) * np.cos(np.pi * (i // 4 + 1) * y) * 200 for i in range(12)])
    volume = np.lib.format.open_memmap(folder / contract.VOLUME, mode="w+", dtype=np.float32,
                                       shape=(slices, size, size))
    for z in range(0, slices, chunk):
        n = min(chunk, slices - z)
        weights = np.cos(np.outer(np.arange(z, z + n) / 500.0, np.arange(1, 13)))
        volume[z:z + n] = (np.tensordot(weights, basis, 1) + rng.normal(0, 10, (n, size, size))).astype(np.float32)
    volume.flush()
    del volume
    (folder / contract.HEADERS).mkdir(exist_ok=True)
    contract.write_manifest(folder, Manifest(
        created_by="benchmarks/ssvd_stream_large.py", created="2026-01-01T00:00:00+00:00",
        series=SeriesIdentity(modality="CT", description="synthetic"),
        volume=VolumeInfo(shape=[slices, size, size], units="HU", min=-3000.0, max=3000.0),
        geometry=Geometry(sorted_by="synthetic", slice_positions_mm=[float(i) for i in range(slices)],
                          slice_spacing_mm=1.0),
        window_presets={"soft": {"center": 40.0, "width": 400.0}},
        slices=[SliceEntry(index=i, source=f"IM-{i:05d}.dcm", header=f"{contract.HEADERS}/{i:05d}.dcm")
                for i in range(slices)]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def anonymous_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _wait_for(log: Path, text: str, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while text not in log.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{text!r} not in {log} after {seconds:.0f} s")
        time.sleep(0.25)


@contextlib.contextmanager
def standalone_cluster(work: Path, workers: int = 2, cores: int = 1, memory: str = "2g") -> Iterator[tuple[str, list]]:
    """A Spark master and ``workers`` workers of ``cores`` and ``memory`` each on 127.0.0.1, from pyspark's
    ``spark-class``; yields the master's URL and the workers' processes, and stops them all."""
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_NO_DAEMONIZE": "1"}
    port = free_port()
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    cluster = [subprocess.Popen([str(SPARK_CLASS), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                 "--port", str(port), "--webui-port", str(free_port())], env=env,
                                stdout=open(logs / "master.log", "w"), stderr=subprocess.STDOUT)]
    try:
        _wait_for(logs / "master.log", "I have been elected leader")
        for i in range(workers):
            cluster.append(subprocess.Popen(
                [str(SPARK_CLASS), "org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}",
                 "--host", "127.0.0.1", "--cores", str(cores), "--memory", memory, "--webui-port", str(free_port()),
                 "--work-dir", str(work / f"worker-{i}")], env=env,
                stdout=open(logs / f"worker-{i}.log", "w"), stderr=subprocess.STDOUT))
        for i in range(workers):
            _wait_for(logs / f"worker-{i}.log", "Successfully registered with master")
        yield f"spark://127.0.0.1:{port}", cluster[1:]
    finally:
        for p in reversed(cluster):
            p.terminate()
            p.wait(timeout=30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--slices", type=int, default=11500)
    ap.add_argument("--size", type=int, default=512)
    a = ap.parse_args()
    work = a.workdir.resolve()
    t0 = time.monotonic()
    write_series(work / "in" / "series-001", a.slices, a.size)
    print(f"series: {a.slices} x {a.size}^2 float32 ({a.slices * a.size * a.size * 4 / 1e9:.1f} GB) written in "
          f"{time.monotonic() - t0:.0f} s", flush=True)
    logs = work / "logs"
    with standalone_cluster(work) as (master, _):
        t0 = time.monotonic()
        with open(logs / "ssvd.log", "w") as log:
            driver = subprocess.Popen([sys.executable, "-m", "ssvd_denoise", "--mode", "global", "--master",
                                       master, "--data-access", "stream",
                                       str(work / "in"), str(work / "out")], stdout=log, stderr=subprocess.STDOUT)
            peak = 0
            while driver.poll() is None:
                peak = max(peak, anonymous_kib([driver.pid, *children(driver.pid)]))
                time.sleep(1)
        wall = time.monotonic() - t0
    for line in (logs / "ssvd.log").read_text().splitlines():
        if " ssvd_denoise " in line:
            print("  " + line)
    print(f"exit {driver.returncode}, wall {wall:.0f} s, driver peak anonymous memory (Python and its JVM) "
          f"{peak / 1024:.0f} MiB")
    return driver.returncode


if __name__ == "__main__":
    sys.exit(main())
