"""ctsvd-local: run the suite's ChRIS pipeline on this machine, or write the demo series.

    ctsvd-local run  [--pipeline FILE] [--engine docker|podman [--image TEMPLATE]] [INPUTDIR] OUTPUTDIR
    ctsvd-local demo [--slices N] [--size S] OUTDIR
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ctsvd_local import pipeline as pipelines
from ctsvd_local import runner

DEFAULT_PIPELINE = Path(__file__).resolve().parent.parent / "ct-denoise.yml"
DEMO_DIR = "demo-input"


def _add_demo_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--demo-slices", type=int, default=96, help="slices of the demo series")
    p.add_argument("--demo-size", type=int, default=512, help="rows and columns of the demo series")
    p.add_argument("--demo-seed", type=int, default=0, help="seed of the demo phantom and its noise")


def write_demo(outdir: Path, slices: int, size: int, seed: int) -> Path:
    from ctsvd_local.phantom import write_demo_series

    t0 = time.perf_counter()
    demo = write_demo_series(outdir, slices=slices, size=size, seed=seed)
    print(f"demo: {len(demo.files)} DICOM files of a synthetic low-dose chest CT ({slices} × {size}²) "
          f"in {outdir} ({time.perf_counter() - t0:.1f} s)")
    return outdir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ctsvd-local", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="run a pipeline file on INPUTDIR (or on a demo series) into OUTPUTDIR")
    run_p.add_argument("--pipeline", type=Path, default=DEFAULT_PIPELINE, help="ChRIS pipeline YAML (default: %(default)s)")
    run_p.add_argument("--engine", choices=["docker", "podman"],
                       help="run each node in its plugin's image with this engine, not from .venv")
    run_p.add_argument("--image", default=runner.Engine.image_template, metavar="TEMPLATE",
                       help="with --engine, the images' names (default: %(default)s)")
    _add_demo_options(run_p)
    run_p.add_argument("dirs", nargs="+", metavar="[INPUTDIR] OUTPUTDIR")
    demo_p = sub.add_parser("demo", help="write the synthetic low-dose CT demo series into OUTDIR")
    _add_demo_options(demo_p)
    demo_p.add_argument("outdir", type=Path)
    args = parser.parse_args(argv)

    if args.command == "demo":
        write_demo(args.outdir, args.demo_slices, args.demo_size, args.demo_seed)
        return 0

    if len(args.dirs) > 2:
        parser.error("give at most INPUTDIR and OUTPUTDIR")
    outputdir = Path(args.dirs[-1]).resolve()
    try:
        pipe = pipelines.load(args.pipeline)
    except pipelines.PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if len(args.dirs) == 2:
        inputdir = Path(args.dirs[0]).resolve()
        if not inputdir.is_dir():
            print(f"error: {inputdir}: not a folder", file=sys.stderr)
            return 1
    else:
        inputdir = write_demo(outputdir / DEMO_DIR, args.demo_slices, args.demo_size, args.demo_seed)
    outputdir.mkdir(parents=True, exist_ok=True)

    print(f"pipeline: {pipe.name} ({len(pipe.nodes)} nodes) on {inputdir}")
    t0 = time.perf_counter()
    try:
        engine = runner.Engine(args.engine, args.image) if args.engine else None
        results = runner.run(pipe, inputdir, outputdir, engine=engine)
    except runner.RunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    failed = [r for r in results if r.status != "ok"]
    print(runner.summary_table(results))
    print(f"pipeline {'finished' if not failed else 'FAILED'} in {time.perf_counter() - t0:.1f} s: "
          f"{len(results) - len(failed)} of {len(results)} nodes ok; record: {outputdir / 'pipeline-run.json'}")
    for r in results:
        report = Path(r.output) / "index.html"
        if r.status == "ok" and report.exists():
            print(f"report ({r.title}): {report}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
