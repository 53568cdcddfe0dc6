"""Time pl-dicom2matrix against a plain pydicom loop on the same files, in one run,
and measure its peak memory at two series lengths.

    .venv/bin/python benchmarks/dicom2matrix_vs_loop.py [--slices 301] [--size 512] [--repeats 5]
                                                        [--memory-slices 60,600] [--workdir DIR]

The peer is the loop a researcher writes first::

    volume = np.stack([pydicom.dcmread(f).pixel_array for f in files])

It gives stored values (no HU, no order along the normal, no manifest, no
headers) and writes nothing. We time it two ways, both against the same files
in the page cache, runs alternated so drift hits both sides alike:

* in process: the loop against ``dicom2matrix``'s conversion called in
  process (its worker pool included);
* as processes: ``python -c <the loop>`` against the ``dicom2matrix``
  command, interpreter start and imports included on both sides.

Then it runs the command on a short and a long series and reports each one's
peak resident memory (``ru_maxrss`` of the process and of its largest worker),
to show that memory does not grow with the number of slices.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from argparse import Namespace
from pathlib import Path

BIN = Path(sys.executable).parent
LOOP = ("import sys, numpy as np, pydicom; files = sorted(sys.argv[1:]); "
        "volume = np.stack([pydicom.dcmread(f).pixel_array for f in files])")


def write_series(folder: Path, slices: int, size: int, seed: int = 1) -> list[Path]:
    from ctsvd_local.phantom import write_demo_series

    if folder.exists():
        shutil.rmtree(folder)
    return write_demo_series(folder, slices=slices, size=size, seed=seed).files


def loop_in_process(files: list[Path]) -> float:
    import numpy as np
    import pydicom

    t0 = time.perf_counter()
    volume = np.stack([pydicom.dcmread(f).pixel_array for f in files])
    dt = time.perf_counter() - t0
    assert volume.shape[0] == len(files)
    return dt


def ours_in_process(inputdir: Path, outputdir: Path) -> float:
    from ctsvd_common.stage import run_stage
    from dicom2matrix.__main__ import parser
    from dicom2matrix.convert import convert_tree

    import logging
    logging.getLogger("dicom2matrix").setLevel(logging.WARNING)
    options = parser.parse_args([])
    shutil.rmtree(outputdir, ignore_errors=True)
    t0 = time.perf_counter()
    code = run_stage("dicom2matrix", "bench", options, inputdir, outputdir, lambda s: convert_tree(s, options))
    dt = time.perf_counter() - t0
    assert code == 0, f"dicom2matrix exited {code}"
    return dt


def timed_process(argv: list[str]) -> tuple[float, float]:
    """Wall time and peak RSS (MiB, largest of the process and its waited-for workers)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t0
    stderr = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv[0]} failed:\n{stderr[-2000:]}")
    return dt, usage.ru_maxrss / 1024


def command(inputdir: Path, outputdir: Path) -> tuple[float, float]:
    shutil.rmtree(outputdir, ignore_errors=True)
    return timed_process([str(BIN / "dicom2matrix"), str(inputdir), str(outputdir)])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=301)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--memory-slices", default="60,600", help="two series lengths for the memory check")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the generated files here")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-dicom2matrix-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return run(args, work)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def run(args: Namespace, work: Path) -> int:
    print(f"cores: {len(os.sched_getaffinity(0))}; series: {args.slices} slices of {args.size}² "
          f"(int16, explicit VR little endian), written once, then read from the page cache")
    files = write_series(work / "in", args.slices, args.size)
    inputdir = work / "in"

    # Warm the page cache and the imports of both sides before timing.
    loop_in_process(files)
    ours_in_process(inputdir, work / "out")
    loop_times, ours_times, loop_proc, ours_proc = [], [], [], []
    for _ in range(args.repeats):
        loop_times.append(loop_in_process(files))
        ours_times.append(ours_in_process(inputdir, work / "out"))
        loop_proc.append(timed_process([sys.executable, "-c", LOOP, *map(str, files)])[0])
        ours_proc.append(command(inputdir, work / "out")[0])

    def row(label, ours, peer):
        o, p = statistics.median(ours), statistics.median(peer)
        print(f"{label:<12} {o:8.3f} s {p:10.3f} s {p / o:10.2f}×")

    print(f"\nmedian of {args.repeats} alternated runs   dicom2matrix   plain loop   loop ÷ ours (>1: ours faster)")
    row("in process", ours_times, loop_times)
    row("processes", ours_proc, loop_proc)

    short, long_ = (int(x) for x in args.memory_slices.split(","))
    peaks = {}
    for n in (short, long_):
        folder = work / f"mem-{n}"
        write_series(folder, n, args.size, seed=2)
        command(folder, work / "mem-out")            # warm the cache
        peaks[n] = command(folder, work / "mem-out")[1]
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\npeak RSS of the dicom2matrix command: {short} slices {peaks[short]:.0f} MiB, "
          f"{long_} slices {peaks[long_]:.0f} MiB, ratio {peaks[long_] / peaks[short]:.2f} "
          f"(the volume itself: {long_ * args.size ** 2 * 4 / 2 ** 20:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
