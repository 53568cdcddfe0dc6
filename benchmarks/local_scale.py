"""The local denoiser at scale: in this process, local[2], and a standalone cluster of one and two workers,
shared and streamed, side by side on the same series in one run.

    .venv/bin/python benchmarks/local_scale.py --workdir DIR [--slices 96,301,1200] [--size 512]
        [--columns "in-process,local[2],1 worker shared,1 worker stream,2 workers shared,2 workers stream"]

For each series length it writes a series of ``slices`` × ``size``² float32
(the drifting low-rank stack of ``ssvd_stream_large.py``), then runs

* ``in-process``: one Python process, no Spark: ``local.denoise_slab`` over
  the slabs a 1 GiB task would get, written as they come (compute only, no
  JVM);
* ``local[2]``: ``ssvd_denoise --mode local --master local[2]`` (the
  executors see the file: shared);
* ``1 worker …`` / ``2 workers …``: the same command against a standalone
  cluster it starts on 127.0.0.1 from pyspark's ``spark-class`` (workers of
  1 core and 2 GiB, Spark's default 1 GiB executors, no memory flags), with
  ``--data-access shared`` and ``stream``.

Per run: the exit code, the wall time of the whole process and the
denoising alone (``local.json``), throughput in voxels/s of both, the peak
resident memory of the driver (the plugin's Python, its JVM and, in local
mode, the Python workers; anonymous memory in brackets) and of the largest
executor (its JVM and Python workers), whether ``local.npy`` has the same
bytes as the first column's, and the load average. Memory is sampled every
0.5 s from /proc. A JSON of every figure goes to DIR/local_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from ssvd_stream_large import standalone_cluster, write_series

COLUMNS = ("in-process", "local[2]", "1 worker shared", "1 worker stream", "2 workers shared", "2 workers stream")

IN_PROCESS = """
import sys, numpy as np
from ssvd_denoise import local
from ssvd_denoise.local import spark as localspark
volume = np.load(sys.argv[1], mmap_mode="r")
out = np.lib.format.open_memmap(sys.argv[2], mode="w+", dtype=np.float32, shape=volume.shape)
params, _ = local.measured(volume)
for slab in local.slabs(volume.shape, localspark.slab_thickness(volume.shape, 1, 1 << 30)):
    out[slab.own_first:slab.own_stop] = local.denoise_slab(np.asarray(volume[slab.first:slab.stop]), slab,
                                                           volume.shape, params)[0]
out.flush()
"""


def _status(pid: int) -> dict[str, int]:
    try:
        return {k: int(v.split()[0]) for k, _, v in (line.partition(":") for line in
                Path(f"/proc/{pid}/status").read_text().splitlines()) if k in ("VmRSS", "RssAnon")}
    except (OSError, ValueError):
        return {}


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):   # a JVM starts its children from any of its threads
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return out


class Sampler(threading.Thread):
    """Peak RSS (KiB) of a driver's process tree and of each worker's executors, every 0.5 s."""

    def __init__(self, driver: int, workers: list[int]):
        super().__init__(daemon=True)
        self.driver, self.workers = driver, workers
        self.driver_rss = self.driver_anon = self.executor_rss = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            stats = [_status(p) for p in _tree(self.driver)]
            self.driver_rss = max(self.driver_rss, sum(s.get("VmRSS", 0) for s in stats))
            self.driver_anon = max(self.driver_anon, sum(s.get("RssAnon", 0) for s in stats))
            for w in self.workers:
                executors = _tree(w)[1:]   # the worker's JVM is not the executor
                self.executor_rss = max(self.executor_rss, sum(_status(p).get("VmRSS", 0) for p in executors))


def run_column(column: str, series: Path, out: Path, master: str | None, workers: list[int]) -> dict:
    # The column's output folder is the benchmark's own: an earlier run's outputs would be refused
    # (the plugin takes only an empty folder) and must never be read as this run's.
    shutil.rmtree(out, ignore_errors=True)
    out.with_suffix(".log").unlink(missing_ok=True)
    if column == "in-process":
        (out / series.name).mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-c", IN_PROCESS, str(series / "volume.npy"), str(out / series.name / "local.npy")]
    else:
        command = [sys.executable, "-m", "ssvd_denoise", "--mode", "local", "--master", master or "local[2]"]
        if master:
            command += ["--data-access", column.split()[-1]]
        command += [str(series.parent), str(out)]
    out.parent.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    t0 = time.monotonic()
    with open(out.with_suffix(".log"), "w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        sampler = Sampler(proc.pid, workers)
        sampler.start()
        proc.wait()
        sampler.done.set()
        sampler.join()
    wall = time.monotonic() - t0
    record = out / series.name / "local.json"
    denoise = json.loads(record.read_text())["timings"]["seconds"] if record.exists() else None
    return {"exit": proc.returncode, "wall_s": round(wall, 1), "denoise_s": denoise,
            "driver_rss_mib": sampler.driver_rss // 1024, "driver_anon_mib": sampler.driver_anon // 1024,
            "executor_rss_mib": sampler.executor_rss // 1024 if workers else None,
            "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2),
            "spark": json.loads(record.read_text())["spark"] if record.exists() else None}


def same_bytes(a: Path, b: Path) -> bool | None:
    if not (a.exists() and b.exists()):
        return None
    x, y = np.load(a, mmap_mode="r"), np.load(b, mmap_mode="r")
    return x.shape == y.shape and all(np.array_equal(x[i:i + 32], y[i:i + 32]) for i in range(0, len(x), 32))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--slices", type=str, default="96,301,1200")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--columns", type=str, default=",".join(COLUMNS))
    a = ap.parse_args()
    work = a.workdir.resolve()
    columns = [c.strip() for c in a.columns.split(",")]
    unknown = set(columns) - set(COLUMNS)
    if unknown:
        ap.error(f"--columns: unknown {sorted(unknown)}; expected some of {', '.join(COLUMNS)}")
    results = []
    for slices in (int(s) for s in a.slices.split(",")):
        series = work / f"in-{slices}" / "series-001"
        if not (series / "volume.npy").exists():
            write_series(series, slices, a.size)
        voxels = slices * a.size * a.size
        runs: dict[str, dict] = {}
        for workers in (0, 1, 2):
            todo = [c for c in columns if (c in ("in-process", "local[2]")) == (workers == 0)
                    and (workers == 0 or c.startswith(f"{workers} worker"))]
            if not todo:
                continue
            with (standalone_cluster(work / f"cluster-{slices}-{workers}", workers) if workers
                  else _no_cluster()) as (master, procs):
                for column in todo:
                    out = work / f"out-{slices}" / column.replace(" ", "-").replace("[", "").replace("]", "")
                    print(f"{slices} slices, {column} ...", flush=True)
                    runs[column] = run_column(column, series, out, master, [p.pid for p in procs])
                    runs[column]["output"] = str(out / series.name / "local.npy")
        reference = next(iter(runs))   # the first column; the others are compared with it
        for column, r in runs.items():
            r["same_bytes"] = ("reference" if column == reference
                               else same_bytes(Path(runs[reference]["output"]), Path(r["output"])))
            r["voxels_per_s"] = round(voxels / r["wall_s"]) if r["exit"] == 0 else None
            r["denoise_voxels_per_s"] = round(voxels / r["denoise_s"]) if r["denoise_s"] else None
            results.append({"slices": slices, "size": a.size, "column": column, **r})
        (work / "local_scale.json").write_text(json.dumps(results, indent=2))
        print_table([r for r in results if r["slices"] == slices])
    return 0 if all(r["exit"] == 0 and r["same_bytes"] is not False for r in results) else 1


class _no_cluster:
    def __enter__(self):
        return None, []

    def __exit__(self, *exc):
        return False


def print_table(rows: list[dict]) -> None:
    print("| series | column | exit | wall s | denoise s | voxels/s (whole) | voxels/s (denoise) "
          "| driver peak RSS MiB (anon) | executor peak RSS MiB | same bytes | load before/after |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['slices']}×{r['size']}² | {r['column']} | {r['exit']} | {r['wall_s']} | {r['denoise_s']} "
              f"| {_si(r['voxels_per_s'])} | {_si(r['denoise_voxels_per_s'])} "
              f"| {r['driver_rss_mib']} ({r['driver_anon_mib']}) | {r['executor_rss_mib'] or '–'} "
              f"| {'yes' if r['same_bytes'] is True else r['same_bytes'] or '–'} | {r['load_before']}/{r['load_after']} |")
    by = {r["column"]: r for r in rows}
    for mode in ("shared", "stream"):
        one, two = by.get(f"1 worker {mode}"), by.get(f"2 workers {mode}")
        if one and two and one["denoise_s"] and two["denoise_s"]:
            print(f"2 workers / 1 worker, {mode}: {one['denoise_s'] / two['denoise_s']:.2f}x denoising, "
                  f"{one['wall_s'] / two['wall_s']:.2f}x whole process (target 1.7x)")
    sys.stdout.flush()


def _si(x) -> str:
    return "–" if x is None else f"{x / 1e6:.2f} M"


if __name__ == "__main__":
    sys.exit(main())
