"""The suite in a real ChRIS: CUBE, two pfcons and podman on 127.0.0.1 (tests/chris_stack.py), driven by run-chris.

    .venv/bin/python tests/chris_e2e.py [--slices N] [--size S] [--keep]

Registers the four plugins with ``workflows/run-chris register`` on ``host``
and ``moc``, uploads every pipeline file, runs the demo series through
ct-denoise.yml, ct-denoise-paper.yml and ct-denoise-crossover.yml (its SVD node
on ``moc``) with ``run-chris run`` to the end, and checks what came back: each
render node's index.html, the derived DICOM series read with pydicom, svd.json
and local.json through the contract's readers, and the render nodes' size.
Everything it started is stopped by PID at the end, whatever happened.
Exit 0 when every check passed, 1 otherwise (the failed check in one line).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import chris_stack  # noqa: E402
from chris_stack import ADMIN, ADMIN_PASSWORD, COMPUTES, Stack, StackError, say  # noqa: E402
from ctsvd_pipeline import files  # noqa: E402
from ctsvd_testdata.shared import SHARED  # noqa: E402

PLUGINS = ("pl-dcm-anon", "pl-dicom2matrix", "pl-ssvd-denoise", "pl-svd-render")
PIPELINES = ("ct-denoise.yml", "ct-denoise-paper.yml", "ct-denoise-crossover.yml")
RECOMMENDED = "render-local"


class CheckFailed(Exception):
    pass


def check(condition: bool, what: str) -> None:
    if not condition:
        raise CheckFailed(what)


def start_run_chris(stack: Stack, *args: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "CHRIS_URL": stack.url, "CHRIS_USER": ADMIN, "CHRIS_PASSWORD": ADMIN_PASSWORD}
    return subprocess.Popen([str(ROOT / "workflows" / "run-chris"), *args], env=env, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT)


def run_chris(stack: Stack, *args: str, log: Path) -> int:
    t0 = time.monotonic()
    code = start_run_chris(stack, *args, log=log).wait()
    say(f"run-chris {args[0]}: exit {code} in {time.monotonic() - t0:.0f} s (log: {log})")
    return code


def image_of(plugin: str) -> str:
    import tomllib
    version = tomllib.loads((ROOT / plugin / "pyproject.toml").read_text())["project"]["version"]
    return f"localhost/fnndsc/{plugin}:{version}"


def has_image(image: str) -> bool:
    return subprocess.run(["podman", "image", "inspect", image], capture_output=True).returncode == 0


def register_dircopy(stack: Stack, descriptor: dict) -> None:
    from chrisclient.client import Client
    client = Client(stack.url, ADMIN, ADMIN_PASSWORD)
    found = client.get_plugins({"name_exact": "pl-dircopy"})["data"]
    if not found:
        client.admin_upload_plugin(",".join(COMPUTES), descriptor)
    say(f"pl-dircopy {descriptor['version']} registered on {', '.join(COMPUTES)}")


def check_render(node: Path, slices: int, recommended: bool, everything: bool) -> dict:
    """A render node as downloaded: index pages, render.json, and (for the recommended one) the DICOM series."""
    from ctsvd_common import contract
    check((node / "index.html").is_file(), f"{node}: no index.html")
    series = sorted(p.parent for p in node.glob("*/render.json"))
    check(len(series) == 1, f"{node}: {len(series)} series with render.json, expected 1")
    s = series[0]
    html = (s / "index.html").read_text()
    check("SVD denoising" in html and 'id="idx"' in html, f"{s}/index.html: not the series report")
    for img in (p for p in s.iterdir() if p.suffix in (".png", ".jpg")):
        from PIL import Image
        with Image.open(img) as im:
            im.load()
    record = contract.read_render(s)
    facts = {"denoiser": record.denoiser, "files": sum(1 for p in s.rglob("*") if p.is_file())}
    if recommended or everything:
        import pydicom
        files = sorted((s / "dicom").glob("*.dcm"))
        check(len(files) == slices, f"{s}/dicom: {len(files)} files, expected {slices}")
        ds = [pydicom.dcmread(f) for f in files]
        check(all(d.Modality == "CT" and "DERIVED" in d.ImageType for d in ds), f"{s}/dicom: not a derived CT series")
        check(len({d.SeriesInstanceUID for d in ds}) == 1, f"{s}/dicom: more than one series")
        check(ds[0].pixel_array.shape == (ds[0].Rows, ds[0].Columns), f"{s}/dicom: pixels do not decode")
        if recommended:
            check(str(ds[0].SeriesDescription).startswith("SVD denoised local"),
                  f"{s}/dicom: {ds[0].SeriesDescription}")
        facts["dicom_bytes"] = sum(f.stat().st_size for f in files)
    else:
        check(not (s / "dicom").exists(), f"{s}: a DICOM series of a node that is not the recommended one was downloaded")
    return facts


def check_ssvd(node: Path, slices: int, cores: int | None) -> None:
    from ctsvd_common import contract
    (s,) = sorted(p.parent for p in node.glob("*/svd.json"))
    svd = contract.read_svd(s)
    check(svd.k == min(50, slices) and svd.relative_error < 1e-3, f"{s}/svd.json: k {svd.k}, error {svd.relative_error}")
    local = contract.read_local(s)
    check(local.automatic and all(v > 0 for v in local.noise_hu.values()), f"{s}/local.json: {local.noise_hu}")
    if cores is not None:  # Spark's local[*] sized by the node's cpu_limit
        got = svd.spark.get("default_parallelism") or svd.spark.get("cores")
        check(got == cores, f"{s}/svd.json: Spark ran on {got} cores, the node's cpu_limit gives {cores}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=SHARED / "chris")
    parser.add_argument("--slices", type=int, default=int(os.environ.get("E2E_SLICES", 24)))
    parser.add_argument("--size", type=int, default=int(os.environ.get("E2E_SIZE", 128)))
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (logs, storage)")
    args = parser.parse_args(argv)
    if not args.shared.is_dir():
        print(f"tests/chris-e2e: skipped, {args.shared} is absent (the CUBE and pfcon sources)", file=sys.stderr)
        return 0
    if shutil.which("podman") is None:
        print("tests/chris-e2e: skipped, podman is absent", file=sys.stderr)
        return 0
    missing = [image_of(p) for p in PLUGINS if not has_image(image_of(p))]
    if missing:
        print(f"tests/chris-e2e: FAILED: images {', '.join(missing)} absent: tests/images builds them", file=sys.stderr)
        return 1

    t_start = time.monotonic()
    build = ROOT / "build" / "chris-e2e"
    out = build / "out"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(build / "stack-logs", ignore_errors=True)
    out.mkdir(parents=True)
    scratch = Path(tempfile.mkdtemp(prefix="chris-e2e-"))
    conf = ROOT / "build" / "images" / "containers.conf"
    stack = Stack(scratch, conf if conf.is_file() else None)
    if stack.engine_conf:
        os.environ["CONTAINERS_CONF"] = str(stack.engine_conf)
    times: dict[str, float] = {}
    try:
        paths = chris_stack.install(args.shared, build, scratch)
        times["install"] = time.monotonic() - t_start
        t0 = time.monotonic()
        dircopy = chris_stack.DIRCOPY_IMAGE
        if not has_image(dircopy):
            # On the image the suite's images are built from: its base, the stand-in where no registry is reached.
            base_image = next((b for b in (os.environ.get("IMAGES_BASE"), "docker.io/library/python:3.11-slim-bookworm",
                                           "localhost/ctsvd/python-standin:bookworm") if b and has_image(b)), None)
            check(base_image is not None, "no Python base image to build pl-dircopy on (tests/images makes one)")
            opts = ["--runtime", "runc"]
            if Path("/etc/ssl/certs/ca-certificates.crt").is_file():
                opts += ["-v", "/etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro"]
            chris_stack.build_dircopy("podman", base_image, paths["dircopy_src"], scratch / "logs" / "dircopy-build.log",
                                      opts)
        stack.start_postgres()
        stack.start_redis()
        sock = stack.start_podman()
        for name in COMPUTES:
            stack.start_pfcon(name, paths["pfcon_bin"], sock)
        stack.start_cube(paths["cube_bin"], paths["cube_src"])
        stack.add_compute_resources(paths["cube_bin"], paths["cube_src"])
        register_dircopy(stack, chris_stack.dircopy_descriptor("podman", dircopy))
        times["stand-up"] = time.monotonic() - t0
        pfcons = ", ".join(f"{n} on port {stack.ports['pfcon-' + n]}" for n in COMPUTES)
        say(f"CUBE at {stack.url}, pfcons {pfcons}, up in {times['stand-up']:.0f} s")

        t0 = time.monotonic()
        logs = build / "logs"
        logs.mkdir(exist_ok=True)
        check(run_chris(stack, "register", "--compute", "host", log=logs / "register-1.log") == 0, "register on host")
        check(run_chris(stack, "register", "--compute", "moc", log=logs / "register-2.log") == 0, "register on moc")
        ymls = sorted(str(p) for p in files.PIPELINES.glob("*.yml"))
        check(run_chris(stack, "upload-pipeline", *ymls, log=logs / "upload.log") == 0, "upload-pipeline")
        demo = out / "demo"
        subprocess.run([str(ROOT / ".venv" / "bin" / "ctsvd-pipeline"), "demo", "--demo-slices", str(args.slices),
                        "--demo-size", str(args.size), str(demo)], check=True, capture_output=True)
        # One after the other: three at once were faster (590 s against 800 s here) but, on two cores
        # shared with other work, CUBE once gave up on a job whose pfcon answered too slowly.
        for yml in PIPELINES:
            t1 = time.monotonic()
            extra = ["--all"] if yml == "ct-denoise-crossover.yml" else []
            dest = out / yml.removesuffix(".yml")
            for attempt in (1, 2):
                races = stack.podman_stopped_races()
                code = start_run_chris(stack, "run", "--pipeline", str(files.PIPELINES / yml), "--poll", "2",
                                       "--timeout", "1800", *extra, "--upload-dir",
                                       f"home/{ADMIN}/uploads/e2e-{dest.name}-{attempt}", str(demo), str(dest),
                                       log=logs / f"run-{yml}.log").wait()
                if code == 0 or attempt == 2 or stack.podman_stopped_races() == races:
                    break
                # Not the suite's fault: see Stack.podman_stopped_races. Once more, on a new feed.
                say(f"{yml}: CUBE cancelled a job that podman showed as 'stopped' (pfcon: undefined); "
                    f"running it again")
                shutil.rmtree(dest, ignore_errors=True)
            times[yml] = time.monotonic() - t1
            say(f"run-chris run --pipeline {yml}: exit {code} in {times[yml]:.0f} s")
            check(code == 0, f"run-chris run --pipeline {yml} exited {code} (log: {logs / f'run-{yml}.log'})")
            renders = sorted(p for p in dest.iterdir() if p.name.startswith("render-"))
            check(bool(renders), f"{dest}: no render node downloaded")
            facts = {r.name: check_render(r, args.slices, r.name == RECOMMENDED, bool(extra)) for r in renders}
            rec = facts[RECOMMENDED]
            if not extra:
                check(not (dest / "ssvd").exists(), f"{dest}: the SVD node was downloaded without --all")
            else:
                check_ssvd(dest / "ssvd", args.slices, cores=2)
            # The target: per series per render node, at most slices + 20 files and 1.3 x the DICOM series.
            size = sum(f.stat().st_size for f in (dest / RECOMMENDED).rglob("*") if f.is_file())
            check(rec["files"] <= args.slices + 20, f"{RECOMMENDED}: {rec['files']} files for {args.slices} slices")
            say(f"{yml}: {len(renders)} render nodes checked; {RECOMMENDED}: {rec['files']} files, "
                f"{size / 1e6:.2f} MB ({size / rec['dicom_bytes']:.2f} x its DICOM series)")
        times["pipelines"] = time.monotonic() - t0
    except (StackError, CheckFailed, subprocess.CalledProcessError) as e:
        print(f"tests/chris-e2e: FAILED: {e}", file=sys.stderr)
        # The services' logs outlive the scratch folder, for whoever looks into the failure.
        shutil.copytree(scratch / "logs", build / "stack-logs", dirs_exist_ok=True)
        say(f"the services' logs: {build / 'stack-logs'}")
        return 1
    finally:
        stack.stop()
        left = subprocess.run(["podman", "ps", "-a", "-q", "--filter", "label=org.ctsvd.e2e"], capture_output=True,
                              text=True).stdout.split()
        if left:
            subprocess.run(["podman", "rm", "-f", *left], capture_output=True)
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            say(f"scratch kept: {scratch}")
    print(f"tests/chris-e2e: all checks passed in {time.monotonic() - t_start:.0f} s ("
          + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) + ")", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
