"""How long run-chris's default download of a 7-series exam takes through a real CUBE on loopback.

    .venv/bin/python tests/chris_download_bench.py [--series 7] [--slices 300]

Stands up the stack of tests/chris_stack.py (CUBE, no pfcon job runs), puts
into CUBE the files four render nodes of such an exam hold, at the sizes a
render node writes for a series of 512² slices (measured on the demo series,
pl-svd-render/README.md), and times what ``run-chris run`` does after the
pipeline: walk each node's folder in the filebrowser, choose the default set
(reports, montages, strips, and the recommended node's DICOM series) and
fetch it. The bytes are random: only their number and sizes matter here. The
other nodes' DICOM series are left out of CUBE (they are listed, not fetched,
by run-chris); uploading them would only lengthen the set-up.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import chris_stack  # noqa: E402
from chris_stack import ADMIN, ADMIN_PASSWORD, Stack, say  # noqa: E402
from ctsvd_pipeline import chris  # noqa: E402
from ctsvd_testdata.shared import SHARED  # noqa: E402

# Bytes per file of a render node's series of 512² slices (the demo series, 96 slices: see the README).
DICOM_SLICE = 526_900
PER_SLICE = {"viewer-lung.jpg": 26_300, "viewer-mediastinum.jpg": 32_500}  # strips grow with the slices
FIXED = {"index.html": 8_200, "render.json": 930, "scree.svg": 4_400, "montage-lung.png": 790_700,
         "montage-mediastinum.png": 664_300}
NODES = ("render-local", "render-auto", "render-rank-10", "render-remove-50pct")


def write_exam_outputs(root: Path, series: int, slices: int) -> int:
    total = 0
    for node in NODES:
        for k in range(1, series + 1):
            s = root / node / f"series-{k:03d}"
            sizes = {**FIXED, **{n: b * slices for n, b in PER_SLICE.items()}}
            if node == "render-local":
                sizes.update({f"dicom/{i:04d}.dcm": DICOM_SLICE for i in range(slices)})
            for name, size in sizes.items():
                (s / name).parent.mkdir(parents=True, exist_ok=True)
                (s / name).write_bytes(os.urandom(size))
                total += size
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=SHARED / "chris")
    parser.add_argument("--series", type=int, default=7)
    parser.add_argument("--slices", type=int, default=300)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="chris-bench-"))
    stack = Stack(scratch)
    try:
        paths = chris_stack.install(args.shared, ROOT / "build" / "chris-e2e", scratch)
        stack.start_postgres()
        stack.start_redis()
        stack.start_cube(paths["cube_bin"], paths["cube_src"])
        exam = scratch / "exam-outputs"
        size = write_exam_outputs(exam, args.series, args.slices)
        cube = chris.Cube(stack.url, ADMIN, ADMIN_PASSWORD, say=lambda text: None)
        t0 = time.monotonic()
        count = cube.upload_folder(exam, "home/chris/bench")
        say(f"uploaded {count} files, {size / 1e6:.0f} MB, in {time.monotonic() - t0:.0f} s")
        cube.say = say
        out = scratch / "download"
        t0 = time.monotonic()
        fetched = 0
        for node in NODES:
            folder = cube.request.get(stack.url + "filebrowser/search/", {"path": f"home/chris/bench/{node}"})
            files = cube.folder_files(folder.items[0].href)
            chosen = [f for f in files if chris.wanted(f[0], node == "render-local")]
            cube.download(node, chosen, out / node)
            fetched += sum(f[1] for f in chosen)
        elapsed = time.monotonic() - t0
        say(f"default download of a {args.series}-series exam ({args.slices} slices of 512² each): "
            f"{sum(1 for p in out.rglob('*') if p.is_file())} files, {fetched / 1e6:.0f} MB in {elapsed:.0f} s "
            f"({fetched / 1e6 / elapsed:.0f} MB/s)")
        return 0
    finally:
        stack.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
