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
  command, interpreter start and imports included on both sides; and once
  more with the loop also saving its stack (``np.save``), since the command
  writes a volume, headers and a manifest that the bare loop does not.

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
LOOP = ("import sys, numpy as np, pydicom; files = sorted(sys.argv[2:]); "
        "volume = np.stack([pydicom.dcmread(f).pixel_array for f in files])")
# The same loop, also writing what it made, as dicom2matrix writes its volume.
LOOP_SAVED = LOOP + "; np.save(sys.argv[1], volume)"


def write_series(folder: Path, slices: int, size: int, seed: int = 1) -> list[Path]:
    from ctsvd_testdata.phantom import write_demo_series

    if folder.exists():
        shutil.rmtree(folder)
    return write_demo_series(folder, slices=slices, size=size, seed=seed).files


def settle() -> None:
    """Flush what earlier runs wrote, so their writeback does not land inside the next timing."""
    os.sync()


def loop_in_process(files: list[Path]) -> float:
    import numpy as np
    import pydicom

    settle()
    t0 = time.perf_counter()
    volume = np.stack([pydicom.dcmread(f).pixel_array for f in files])
    dt = time.perf_counter() - t0
    assert volume.shape[0] == len(files)
    return dt


def ours_in_process(inputdir: Path, outputdir: Path) -> float:
    from dicom2matrix.convert import run
    from dicom2matrix.options import Settings, parser

    import logging
    logging.getLogger("dicom2matrix").setLevel(logging.WARNING)
    settings = Settings.from_options(parser.parse_args([]))
    shutil.rmtree(outputdir, ignore_errors=True)
    settle()
    t0 = time.perf_counter()
    code = run(settings, inputdir, outputdir)
    dt = time.perf_counter() - t0
    assert code == 0, f"dicom2matrix exited {code}"
    return dt


# Runs one command and prints its wall time and peak RSS. A child forked from
# this (large) benchmark process would count our pages in its high-water mark
# until its exec; forked from this small launcher, it counts only a few MiB.
LAUNCHER = """
import os, sys, time
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    fd = os.open(os.devnull, os.O_WRONLY); os.dup2(fd, 1); os.dup2(fd, 2)
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - t0, usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def timed_process(argv: list[str]) -> tuple[float, float]:
    """Wall time and peak RSS (MiB: the largest of the process and its waited-for workers)."""
    settle()
    out = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, *argv], capture_output=True, text=True, check=True)
    seconds, maxrss_kib, code = out.stdout.split()
    if int(code) != 0:
        raise SystemExit(f"{' '.join(argv)} exited {code}")
    return float(seconds), int(maxrss_kib) / 1024


def command(inputdir: Path, outputdir: Path) -> tuple[float, float]:
    shutil.rmtree(outputdir, ignore_errors=True)
    return timed_process([str(BIN / "dicom2matrix"), str(inputdir), str(outputdir)])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=301)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--memory-slices", default="60,600", help="two series lengths for the memory check")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="where the files go (default: a temporary folder); both sides read and write there")
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
    print(f"work folder: {work}")
    loop_times, ours_times, loop_proc, saved_proc, ours_proc = [], [], [], [], []
    saved = work / "loop-volume.npy"
    for _ in range(args.repeats):
        loop_times.append(loop_in_process(files))
        ours_times.append(ours_in_process(inputdir, work / "out"))
        loop_proc.append(timed_process([sys.executable, "-c", LOOP, str(saved), *map(str, files)])[0])
        saved.unlink(missing_ok=True)
        saved_proc.append(timed_process([sys.executable, "-c", LOOP_SAVED, str(saved), *map(str, files)])[0])
        saved.unlink(missing_ok=True)
        ours_proc.append(command(inputdir, work / "out")[0])

    def row(label, ours, peer):
        o, p = statistics.median(ours), statistics.median(peer)
        print(f"{label:<12} {o:8.3f} s {p:10.3f} s {p / o:10.2f}×")

    print(f"\nmedian of {args.repeats} alternated runs   dicom2matrix   plain loop   loop ÷ ours (>1: ours faster)")
    row("in process", ours_times, loop_times)
    row("processes", ours_proc, loop_proc)
    row("  + np.save", ours_proc, saved_proc)
    print("(processes: interpreter start and imports on both sides; '+ np.save': the loop also writes its\n"
          " stack to disk, as dicom2matrix writes its volume, headers and manifest)")

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
