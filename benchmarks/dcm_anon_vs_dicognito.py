"""Time pl-dcm-anon against dicognito (from PyPI) on the same CT slices, in one run.

    .venv/bin/python benchmarks/dcm_anon_vs_dicognito.py [--slices 301] [--size 512] [--repeats 5]
                                                         [--workdir DIR]

Both tools run as whole processes, the way a user runs them (interpreter
start and imports included), on the same synthetic CT series in the page
cache, each writing a fresh output folder; runs are alternated so that drift
(other work on the machine) hits both alike. dicognito runs as
``python -m dicognito --quiet -o OUT IN`` (its defaults); dcm_anon with its
default flags, which include the pfdicom_tagExtract tag report and one
worker process per CPU. Two more dcm_anon variants say where its time goes:
``--no-tag-report`` (what the report adds) and ``--workers 1`` (what the
second process adds).

Prints, per variant, the wall time of every run, the median and files per
second, then the ratio of files per second against dicognito, and the cost
of the tag report set against the de-identification's own time. On a
shared machine the wall time depends on what else runs, so it also prints
the CPU time each variant used (its processes and their children, from
``getrusage``) and the load average before and after.
dicognito must be installed: ``.venv/bin/pip install -r benchmarks/requirements.txt``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent

VARIANTS = {  # label → command (input and output folders appended)
    "dicognito": [sys.executable, "-m", "dicognito", "--quiet", "-o"],
    "dcm_anon": [str(BIN / "dcm_anon")],
    "dcm_anon --no-tag-report": [str(BIN / "dcm_anon"), "--no-tag-report"],
    "dcm_anon --workers 1": [str(BIN / "dcm_anon"), "--workers", "1"],
}
PEER, OURS, NO_REPORT = "dicognito", "dcm_anon", "dcm_anon --no-tag-report"


def write_series(folder: Path, slices: int, size: int) -> int:
    from ctsvd_testdata.phantom import write_demo_series

    if folder.exists():
        shutil.rmtree(folder)
    return len(write_demo_series(folder, slices=slices, size=size, seed=1).files)


def run_once(label: str, inputdir: Path, outputdir: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process and its children)."""
    shutil.rmtree(outputdir, ignore_errors=True)
    os.sync()   # what the last run wrote is flushed before this one is timed
    folders = [outputdir, inputdir] if label == PEER else [inputdir, outputdir]   # dicognito: -o OUT IN
    command = [*VARIANTS[label], *map(str, folders)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def count_written(outputdir: Path) -> int:
    return sum(1 for p in outputdir.rglob("*.dcm") if "tag-report" not in p.relative_to(outputdir).parts)


def deidentification_seconds(outputdir: Path) -> float:
    """dcm_anon's own timing of its de-identification stage, from its run report."""
    timings = json.loads((outputdir / "dcm_anon.report.json").read_text())["timings"]
    return next(v for k, v in timings.items() if k.startswith("de-identifying"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=301)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the series and outputs go (default: a temporary folder)")
    args = parser.parse_args(argv)
    try:
        peer_version = importlib.metadata.version("dicognito")
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit("dicognito is not installed: .venv/bin/pip install -r benchmarks/requirements.txt")

    work = args.workdir or Path(tempfile.mkdtemp(prefix="dcm_anon-bench-", dir=os.environ.get("BENCH_TMP")))
    work.mkdir(parents=True, exist_ok=True)
    inputdir = work / "series"
    files = write_series(inputdir, args.slices, args.size)
    print(f"{files} CT slices of {args.size}x{args.size} (16 bit, ~{files * args.size * args.size * 2 >> 20} MiB); "
          f"{len(os.sched_getaffinity(0))} CPU(s); dicognito {peer_version}; {args.repeats} alternated run(s)")

    times: dict[str, list[float]] = {label: [] for label in VARIANTS}
    cpus: dict[str, list[float]] = {label: [] for label in VARIANTS}
    load_before = os.getloadavg()[0]
    deid: list[float] = []
    for label in VARIANTS:                       # one untimed round: page cache, .pyc files
        run_once(label, inputdir, work / "warm")
    for _ in range(args.repeats):
        for label in VARIANTS:
            out = work / "out"
            wall, cpu = run_once(label, inputdir, out)
            times[label].append(wall)
            cpus[label].append(cpu)
            written = count_written(out)
            if written != files:
                raise SystemExit(f"{label} wrote {written} of {files} files")
            if label == OURS:
                deid.append(deidentification_seconds(out))

    print(f"load average (1 min): {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"\n{'tool':28} {'median':>9} {'files/s':>9} {'CPU s':>7} {'CPU ms/file':>12}   runs (wall s)")
    rate = {}
    for label, runs in times.items():
        median, cpu = statistics.median(runs), statistics.median(cpus[label])
        rate[label] = files / median
        print(f"{label:28} {median:8.2f}s {rate[label]:9.1f} {cpu:7.2f} {1000 * cpu / files:12.2f}   "
              + " ".join(f"{t:.2f}" for t in runs))
    print(f"\nfiles/s ratio, dcm_anon (default flags) / dicognito: {rate[OURS] / rate[PEER]:.2f}x")
    for label in VARIANTS:
        if label not in (PEER, OURS):
            print(f"files/s ratio, {label} / dicognito: {rate[label] / rate[PEER]:.2f}x")
    report_cost = statistics.median(times[OURS]) - statistics.median(times[NO_REPORT])
    deid_median = statistics.median(deid)
    cpu_ratio = statistics.median(cpus[PEER]) / statistics.median(cpus[OURS])
    print(f"CPU time ratio, dicognito / dcm_anon (default flags): {cpu_ratio:.2f}x")
    print(f"tag report: adds {report_cost:.2f} s to the run; de-identification itself {deid_median:.2f} s; "
          f"ratio {report_cost / deid_median:.2f}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
