"""ctsvd-pipeline: run the suite's ChRIS pipeline on this machine, write the demo series,
and keep the ChRIS files (descriptors, pipeline JSON) in step with the code.

    ctsvd-pipeline run  [--pipeline FILE] [--set TITLE.PARAM=VALUE] [--resume]
                     [--engine docker|podman [--image TEMPLATE]] [INPUTDIR] OUTPUTDIR
    ctsvd-pipeline demo [--slices N] [--size S] OUTDIR
    ctsvd-pipeline descriptors [--check]     descriptors/*.json from the code
    ctsvd-pipeline pipelines [--check]       validate pipelines/*.yml, write pipelines/json/*.json
    ctsvd-pipeline check FILE...             validate pipeline files against the descriptors

descriptors/ and pipelines/ are package data of ctsvd_pipeline (workflows/ctsvd_pipeline/).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ctsvd_pipeline import catalog, descriptors, resume, runner, validate
from ctsvd_pipeline import pipeline as pipelines
from ctsvd_pipeline.engine import Engine
from ctsvd_pipeline.files import DEFAULT_PIPELINE

DEMO_DIR = "demo-input"


def _add_demo_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--demo-slices", type=int, default=96, help="slices of the demo series")
    p.add_argument("--demo-size", type=int, default=512, help="rows and columns of the demo series")
    p.add_argument("--demo-seed", type=int, default=0, help="seed of the demo phantom and its noise")


def write_demo(outdir: Path, slices: int, size: int, seed: int) -> Path:
    try:
        from ctsvd_testdata.phantom import write_demo_series
    except ImportError:  # the test data is an extra: a runner for real exams does without it
        raise SystemExit("error: the demo series needs ctsvd-testdata: install ctsvd-pipeline[demo], "
                         "or give an INPUTDIR") from None

    t0 = time.perf_counter()
    demo = write_demo_series(outdir, slices=slices, size=size, seed=seed)
    print(f"demo: {len(demo.files)} DICOM files of a synthetic low-dose chest CT ({slices} × {size}²) "
          f"in {outdir} ({time.perf_counter() - t0:.1f} s)")
    return outdir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ctsvd-pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="run a pipeline file on INPUTDIR (or on a demo series) into OUTPUTDIR")
    run_p.add_argument("--pipeline", type=Path, default=DEFAULT_PIPELINE, help="ChRIS pipeline YAML (default: %(default)s)")
    _add_demo_options(run_p)
    run_p.add_argument("dirs", nargs="+", metavar="[INPUTDIR] OUTPUTDIR")
    run_p.add_argument("--set", dest="assignments", action="append", default=[], metavar="TITLE.PARAM=VALUE",
                       help="override one node's parameter, e.g. --set ssvd.k=30 (repeatable)")
    run_p.add_argument("--resume", action="store_true",
                       help="reuse the nodes whose outputs in OUTPUTDIR are complete from an earlier run")
    run_p.add_argument("--engine", choices=["docker", "podman"],
                       help="run each node in its plugin's image with this engine, not from .venv")
    run_p.add_argument("--image", default=Engine.image_template, metavar="TEMPLATE",
                       help="with --engine, the images' names (default: %(default)s)")
    demo_p = sub.add_parser("demo", help="write the synthetic low-dose CT demo series into OUTDIR")
    _add_demo_options(demo_p)
    demo_p.add_argument("outdir", type=Path)
    for name, helptext in (("descriptors", "write descriptors/*.json as the images make them"),
                           ("pipelines", "validate pipelines/*.yml and write pipelines/json/*.json")):
        sub.add_parser(name, help=helptext).add_argument(
            "--check", action="store_true", help="write nothing; exit 1 when a checked-in file is stale")
    check_p = sub.add_parser("check", help="validate pipeline files against the plugins' descriptors")
    check_p.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)

    if args.command == "demo":
        write_demo(args.outdir, args.demo_slices, args.demo_size, args.demo_seed)
        return 0
    if args.command == "descriptors":
        return descriptors.write_all(check=args.check)
    if args.command == "pipelines":
        return catalog.sync(check=args.check)
    if args.command == "check":
        known = descriptors.load_all()
        found = [line for f in args.files for line in validate.problems(f, known)]
        print("\n".join(found) if found else f"{len(args.files)} pipeline file(s) sound")
        return 1 if found else 0

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
    elif (outputdir / DEMO_DIR).is_dir() and any((outputdir / DEMO_DIR).iterdir()):
        if not args.resume:
            print(f"error: {outputdir / DEMO_DIR} holds an earlier demo series: add --resume to run on it "
                  "again, or give another OUTPUTDIR", file=sys.stderr)
            return 1
        inputdir = outputdir / DEMO_DIR
        print(f"demo: the earlier series in {inputdir}")
    else:
        inputdir = write_demo(outputdir / DEMO_DIR, args.demo_slices, args.demo_size, args.demo_seed)
    outputdir.mkdir(parents=True, exist_ok=True)

    print(f"pipeline: {pipe.name} ({len(pipe.nodes)} nodes) on {inputdir}")
    t0 = time.perf_counter()
    try:
        engine = Engine(args.engine, args.image) if args.engine else None
        results = runner.run(pipe, inputdir, outputdir, assignments=args.assignments, reuse=args.resume,
                             engine=engine)
    except runner.RunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    failed = [r for r in results if r.status not in resume.OK]
    print(runner.summary_table(results))
    print(f"pipeline {'finished' if not failed else 'FAILED'} in {time.perf_counter() - t0:.1f} s: "
          f"{len(results) - len(failed)} of {len(results)} nodes ok; record: {outputdir / 'pipeline-run.json'}")
    for r in results:
        report = Path(r.output) / "index.html"
        if r.status in resume.OK and report.exists():
            print(f"report ({r.title}): {report}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
