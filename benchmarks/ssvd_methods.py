"""pl-ssvd-denoise's two SVD methods against their peers, on the same CT stacks, in one run.

    .venv/bin/python benchmarks/ssvd_methods.py [--slices 301,2000] [--size 512] [--k 50]
        [--mllib-max-slices 301] [--mllib-timeout 900] [--timeout 1800] [--workdir DIR]

Needs the peers: ``.venv/bin/pip install -r benchmarks/requirements.txt``.

Stacks: the noisy 301-slice chest phantom of ``ssvd_vs_lapack.py`` and, for
more slices, that series' slices repeated back and forth (a stack of series)
with fresh 10 HU white noise on each copy. Every method factors the same
slices × pixels float32 matrix to rank k and is scored by the largest relative
error of σ₁…σ_k against LAPACK in float64: ``numpy.linalg.svd`` up to
``--svd-max-slices``, beyond that (where it takes many minutes) the eigenvalues
of the float64 Gram matrix (``eigvalsh``), which agree with it to ~1e-13 here.

Rows:

* ``ours gram`` / ``ours randomized``: the ``ssvd_denoise`` command
  (``--mode global --method …``, ``local[*]``) as a whole process: JVM start,
  checks, pass-forward, outputs; and its passes over the data alone, from
  ``svd.json``.
* ``sklearn randomized_svd (LU)``: a Python process that loads the volume and
  calls ``sklearn.utils.extmath.randomized_svd`` with the same k, p, q.
* ``NumPy Gram, in process``: the exact route without Spark: A·Aᵀ in float64
  over column chunks, ``eigh``, Vt = Σ⁻¹Uᵀ·A; compute only, volume in the
  page cache.
* ``dask svd_compressed``: ``dask.array.linalg.svd_compressed`` (same k, p,
  q) on the memory-mapped volume, U, s and V computed, in process.
* ``MLlib computeSVD``: ``RowMatrix.computeSVD(k)`` of the pixels × slices
  matrix in a Spark process (``local[*]``), rows read by the executors from
  the file; only up to ``--mllib-max-slices`` and within ``--mllib-timeout``:
  a run that times out is reported as such, with the time it was given.

Then the issue's targets, each as a measured ratio from this run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctsvd_common import contract
from ctsvd_testdata.phantom import chest_phantom, low_dose_noise
from ssvd_vs_lapack import manifest_for

BIN = Path(sys.executable).parent

SKLEARN = """
import json, sys, numpy as np
from sklearn.utils.extmath import randomized_svd
path, k, p, q = sys.argv[1], *map(int, sys.argv[2:5])
A = np.load(path)
A = A.reshape(A.shape[0], -1)
U, s, Vt = randomized_svd(A, k, n_oversamples=p, n_iter=q, power_iteration_normalizer="LU", random_state=0)
print(json.dumps([float(x) for x in s]))
"""

MLLIB = """
import json, sys, time, numpy as np
from pyspark.sql import SparkSession
from pyspark.mllib.linalg import Vectors
from pyspark.mllib.linalg.distributed import RowMatrix
path, k = sys.argv[1], int(sys.argv[2])
spark = (SparkSession.builder.master("local[*]").config("spark.ui.enabled", "false")
         .config("spark.driver.host", "127.0.0.1").config("spark.driver.memory", "2g").getOrCreate())
sc = spark.sparkContext
m = np.load(path, mmap_mode="r").shape[0]
n = np.load(path, mmap_mode="r")[0].size
parts = max(sc.defaultParallelism, n // 16384)
def rows(i):
    A = np.load(path, mmap_mode="r").reshape(m, n)
    c0, c1 = i * n // parts, (i + 1) * n // parts
    return [Vectors.dense(col) for col in np.asarray(A[:, c0:c1], dtype=np.float64).T]
matrix = RowMatrix(sc.parallelize(range(parts), parts).flatMap(rows).cache())
matrix.numRows()  # load the rows before the clock starts
t0 = time.perf_counter()
s = matrix.computeSVD(k, computeU=False).s.toArray()
print(json.dumps({"s": [float(x) for x in s], "seconds": time.perf_counter() - t0}))
spark.stop()
"""


@dataclass
class Row:
    stack: str
    method: str
    wall: float | None             # seconds; None when not run or timed out
    passes: float | None = None    # our passes over the data, from svd.json
    error: float | None = None     # max relative error of σ₁…σ_k against LAPACK
    note: str = ""
    process: float | None = None   # MLlib: its whole process, Spark start included


def write_stack(folder: Path, slices: int, size: int) -> np.ndarray:
    """The series folder for a stack of ``slices``; returns the memory-mapped volume."""
    folder.mkdir(parents=True)
    (folder / contract.HEADERS).mkdir()
    spacing = (2.5, 350 / size, 350 / size)
    base_slices = min(slices, 301)
    clean = chest_phantom(base_slices, size, spacing_mm=spacing, seed=0)
    base = np.clip(clean + low_dose_noise(clean.shape, sigma_hu=25.0, body_mask=clean > -500, seed=1),
                   -1024, 3071).astype(np.float32)
    volume = np.lib.format.open_memmap(folder / contract.VOLUME, mode="w+", dtype=np.float32,
                                       shape=(slices, size, size))
    rng = np.random.default_rng(2)
    period = 2 * base_slices - 2 if base_slices > 1 else 1
    for i in range(slices):  # back and forth through the series, fresh noise on every repeat
        j = i % period
        j = j if j < base_slices else period - j
        volume[i] = base[j] if i < base_slices else base[j] + rng.normal(0, 10, base[j].shape).astype(np.float32)
    volume.flush()
    contract.write_manifest(folder, manifest_for(volume, spacing))
    return np.load(folder / contract.VOLUME, mmap_mode="r")


def lapack_reference(volume: np.ndarray, svd_max_slices: int) -> tuple[np.ndarray, str]:
    """σ of the stack in float64, and how: LAPACK's SVD (gesdd), or for long stacks, where that takes
    many minutes, LAPACK's eigh (syevd) of the float64 Gram matrix, which agrees with gesdd to ~1e-13
    on the 301-slice stack (the 'ours gram' row there)."""
    m = volume.shape[0]
    A = volume.reshape(m, -1)
    if m <= svd_max_slices:
        return np.linalg.svd(A.astype(np.float64), compute_uv=False), "numpy.linalg.svd (gesdd), float64"
    G = np.zeros((m, m))
    for c in range(0, A.shape[1], 4096):
        chunk = A[:, c:c + 4096].astype(np.float64)
        G += chunk @ chunk.T
    return np.sqrt(np.maximum(np.linalg.eigvalsh(G)[::-1], 0)), "numpy.linalg.eigvalsh (syevd) of the float64 Gram"


def max_error(s, reference: np.ndarray, k: int) -> float:
    s = np.asarray(s, dtype=np.float64)[:k]
    return float(np.max(np.abs(s - reference[:len(s)]) / reference[:len(s)]))


def timed_process(args: list[str], timeout: float) -> tuple[float | None, subprocess.CompletedProcess | None]:
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, None
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} … exited with {proc.returncode}:\n{proc.stderr[-3000:]}")
    return wall, proc


def ours(method: str, stack: str, series: Path, work: Path, reference, a) -> list[Row]:
    out = work / f"out-{method}"
    wall, _ = timed_process([str(BIN / "ssvd_denoise"), "--mode", "global", "--method", method, "--k", str(a.k),
                             "--oversample", str(a.oversample), "--power-iters", str(a.power_iters),
                             "--master", a.master, str(series.parent), str(out)], a.timeout)
    if wall is None:
        return [Row(stack, f"ours {method}, whole process", None, note=f"timed out after {a.timeout:.0f} s")]
    record = contract.read_svd(out / series.name)
    error = max_error(record.singular_values, reference, a.k)
    passes = record.timings["total_seconds"]
    detail = ", ".join(f"{p['seconds']:.2f}" for p in record.timings["passes"])
    return [Row(stack, f"ours {method}, whole process", wall, passes, error),
            Row(stack, f"ours {method}, passes", passes, passes, error, note=f"passes {detail} s")]


def sklearn_process(stack: str, series: Path, reference, a) -> Row:
    wall, proc = timed_process([sys.executable, "-c", SKLEARN, str(series / contract.VOLUME), str(a.k),
                                str(a.oversample), str(a.power_iters)], a.timeout)
    if wall is None:
        return Row(stack, "sklearn randomized_svd (LU), process", None, note=f"timed out after {a.timeout:.0f} s")
    return Row(stack, "sklearn randomized_svd (LU), process", wall, error=max_error(json.loads(proc.stdout), reference, a.k))


def numpy_gram(stack: str, volume: np.ndarray, reference, a) -> Row:
    m = volume.shape[0]
    A = volume.reshape(m, -1)
    np.asarray(A).sum()  # into the page cache, as the other in-process peers find it
    width = max(256, (16 << 20) // (8 * m))
    t0 = time.perf_counter()
    G = np.zeros((m, m))
    for c in range(0, A.shape[1], width):
        chunk = A[:, c:c + width].astype(np.float64)
        G += np.dot(chunk, chunk.T)
    lam, E = np.linalg.eigh(G)
    s = np.sqrt(np.maximum(lam[::-1][:a.k], 0))
    M = E[:, ::-1][:, :a.k].T / s[:, None]
    Vt = np.empty((len(s), A.shape[1]), np.float32)
    for c in range(0, A.shape[1], width):
        Vt[:, c:c + width] = M @ A[:, c:c + width].astype(np.float64)
    wall = time.perf_counter() - t0
    return Row(stack, "NumPy Gram, in process (compute)", wall, error=max_error(s, reference, a.k))


def dask_svd(stack: str, volume: np.ndarray, reference, a) -> Row:
    import dask
    import dask.array as da

    m = volume.shape[0]
    X = da.from_array(volume.reshape(m, -1), chunks=(m, max(1024, (64 << 20) // (4 * m))))
    t0 = time.perf_counter()
    u, s, v = da.linalg.svd_compressed(X, k=a.k, n_power_iter=a.power_iters, n_oversamples=a.oversample, seed=0)
    _, s, _ = dask.compute(u, s, v)
    wall = time.perf_counter() - t0
    return Row(stack, "dask svd_compressed, in process", wall, error=max_error(s, reference, a.k))


def mllib(stack: str, series: Path, reference, a) -> Row:
    name = "MLlib RowMatrix.computeSVD"
    m = reference.size
    if m > a.mllib_max_slices:
        return Row(stack, name, None, note=f"not run: {m} slices > --mllib-max-slices {a.mllib_max_slices}")
    wall, proc = timed_process([sys.executable, "-c", MLLIB, str(series / contract.VOLUME), str(a.k)],
                               a.mllib_timeout)
    if wall is None:
        return Row(stack, name, None, note=f"timed out: computeSVD did not finish within {a.mllib_timeout:.0f} s")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return Row(stack, name, result["seconds"], error=max_error(result["s"], reference, a.k),
               note=f"computeSVD alone; process {wall:.1f} s", process=wall)


def fmt(x: float | None, width: int, spec: str) -> str:
    return f"{'—' if x is None else format(x, spec):>{width}}"


def find(rows: list[Row], stack: str, method: str) -> Row | None:
    return next((r for r in rows if r.stack == stack and r.method.startswith(method)), None)


def ratio_line(label: str, num: Row | None, den: Row | None, target: str, ok) -> str:
    if num is None or den is None or num.wall is None or den.wall is None:
        note = (num or den).note if (num or den) else ""
        return f"{label}: not measured ({note})" if note else f"{label}: not measured"
    r = num.wall / den.wall
    return f"{label}: {r:.2f} (target {target}: {'met' if ok(r) else 'MISSED'})"


def targets(rows: list[Row], stacks: list[str], slices: list[int], k: int) -> list[str]:
    first = stacks[0]
    lines = []
    whole = find(rows, first, "ours gram, whole")
    sk = find(rows, first, "sklearn")
    lines.append(ratio_line(f"[{first}] ours gram whole process / sklearn process", whole, sk, "≤ 2.0",
                            lambda r: r <= 2.0))
    if whole and whole.error is not None:
        lines.append(f"[{first}] ours gram σ1..σ{k} max relative error {whole.error:.1e} "
                     f"(target ≤ 1e-6: {'met' if whole.error <= 1e-6 else 'MISSED'})")
    for stack in stacks:
        lines.append(ratio_line(f"[{stack}] ours gram passes / NumPy Gram in process",
                                find(rows, stack, "ours gram, passes"), find(rows, stack, "NumPy Gram"), "≤ 1.5",
                                lambda r: r <= 1.5))
        ml = find(rows, stack, "MLlib")
        if ml and ml.wall is not None:
            # Like for like: the computeSVD call against our passes (both after Spark is up), and
            # MLlib's process against ours (both paying the JVM start).
            lines.append(ratio_line(f"[{stack}] MLlib computeSVD alone / ours gram passes", ml,
                                    find(rows, stack, "ours gram, passes"), "≥ 50", lambda r: r >= 50))
            whole_ours = find(rows, stack, "ours gram, whole")
            if whole_ours and whole_ours.wall:
                lines.append(f"[{stack}] MLlib process / ours gram whole process: "
                             f"{ml.process / whole_ours.wall:.2f} (JVM start in both)")
        elif ml:
            lines.append(f"[{stack}] MLlib: {ml.note}")
    if len(stacks) > 1:
        for method in ("gram", "randomized"):
            a, b = find(rows, stacks[0], f"ours {method}, passes"), find(rows, stacks[-1], f"ours {method}, passes")
            if a and b and a.wall and b.wall:
                growth = (b.wall / a.wall) / (slices[-1] / slices[0])
                lines.append(f"ours {method} passes, {slices[0]} → {slices[-1]} slices: time ×{b.wall / a.wall:.1f} "
                             f"for slices ×{slices[-1] / slices[0]:.1f}; per slice ×{growth:.2f} (1.0 is linear)")
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--slices", default="301,2000", help="comma-separated stack lengths")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--oversample", type=int, default=15)
    p.add_argument("--power-iters", type=int, default=2)
    p.add_argument("--master", default="local[*]")
    p.add_argument("--timeout", type=float, default=1800, help="seconds allowed to each process")
    p.add_argument("--mllib-max-slices", type=int, default=301, help="run MLlib only on stacks up to this many slices")
    p.add_argument("--mllib-timeout", type=float, default=900, help="seconds allowed to the MLlib process")
    p.add_argument("--svd-max-slices", type=int, default=600,
                   help="reference σ by LAPACK's SVD up to this many slices, by eigh of the Gram matrix above")
    p.add_argument("--workdir", type=Path, default=None, help="where to write the stacks (default: a temporary folder)")
    a = p.parse_args()
    slices = [int(x) for x in a.slices.split(",")]

    rows: list[Row] = []
    stacks = []
    with tempfile.TemporaryDirectory(dir=a.workdir) as tmp:
        for m in slices:
            stack = f"{m}×{a.size}²"
            stacks.append(stack)
            work = Path(tmp) / f"stack-{m}"
            series = work / "in" / "series-001"
            volume = write_stack(series, m, a.size)
            reference, how = lapack_reference(volume, a.svd_max_slices)
            print(f"{stack}: {volume.nbytes / 1e6:.0f} MB float32; reference σ: {how}", flush=True)
            for method in ("gram", "randomized"):
                rows += ours(method, stack, series, work, reference, a)
            rows.append(sklearn_process(stack, series, reference, a))
            rows.append(numpy_gram(stack, volume, reference, a))
            rows.append(dask_svd(stack, volume, reference, a))
            rows.append(mllib(stack, series, reference, a))
            del volume

    print(f"\nk = {a.k}, p = {a.oversample}, q = {a.power_iters}, master {a.master}, {os.cpu_count()} cores; "
          f"error: max relative error of σ1..σ{a.k} against LAPACK")
    print(f"{'stack':<12}{'method':<42}{'wall s':>9}{'error':>10}  note")
    for r in rows:
        print(f"{r.stack:<12}{r.method:<42}{fmt(r.wall, 9, '.2f')}{fmt(r.error, 10, '.1e')}  {r.note}")
    print()
    for line in targets(rows, stacks, slices, a.k):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
