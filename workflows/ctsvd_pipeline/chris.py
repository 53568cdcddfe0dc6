"""ctsvd-chris: run the suite in a ChRIS backend (CUBE) with python-chrisclient.

    ctsvd-chris register [--compute host,moc [--replace-compute]] [--image-prefix REGISTRY/ORG]
    ctsvd-chris upload-pipeline [PIPELINE.yml ...]
    ctsvd-chris run [--pipeline FILE] [--compute TITLE=NAME ...] [--all] DICOMDIR OUTDIR

CUBE's address and account come from --url/--user/--password or from
CHRIS_URL, CHRIS_USER and CHRIS_PASSWORD (registering plugins needs an admin).

``register`` uploads the four checked-in descriptors (ctsvd_pipeline/descriptors/),
or adds the compute resources to those of the plugins CUBE already has
(``--replace-compute``: makes them the only ones). ``upload-pipeline``
checks each file against the descriptors first (CUBE drops unknown parameter
names silently) and uploads the YAML unless CUBE has a pipeline of that name.
``run`` uploads the pipeline when needed, uploads DICOMDIR into the user's
space, starts a feed with pl-dircopy on it, runs the pipeline on that feed
with each node on the compute resource its file names (compute_resource_name;
--compute overrides it per node title), prints every node's progress,
downloads what a person reads into OUTDIR/<title>/ (the render nodes' reports,
montages and slice viewers, and the recommended node's DICOM series; --all:
every file of every node), and exits 1 naming the nodes that failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import requests
from chrisclient.client import Client
from chrisclient.exceptions import ChrisRequestException
from chrisclient.request import Request

from ctsvd_common import atomic
from ctsvd_pipeline import descriptors, validate
from ctsvd_pipeline import pipeline as pipelines
from ctsvd_pipeline.files import DEFAULT_PIPELINE

DOWNLOADED_PLUGINS = ("pl-svd-render",)
FINISHED_OK = "finishedSuccessfully"
FAILED = ("finishedWithError", "cancelled")
PAGE = {"limit": 100}
DICOM_DIR = "dicom"  # where pl-svd-render writes the derived series, in each series folder
DOWNLOAD_THREADS = 4


class ChrisError(Exception):
    """CUBE refused or failed something; the message says what, in one line."""


class Cube:
    """One CUBE, through python-chrisclient; what the script needs of it, each step one method."""

    def __init__(self, url: str, user: str, password: str, say: Callable[[str], Any] = print):
        self.url = url if url.endswith("/") else url + "/"
        self.user = user
        # A token, not the password, on every request: CUBE hashes a password on each request that
        # carries one (a tenth of a second or more), which made downloads of many files crawl.
        token = self.login(user, password)
        self.client = Client(self.url, token=token)
        self.request = Request({"token": token})  # for links chrisclient does not follow
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Token {token}"
        self.say = say

    def login(self, user: str, password: str) -> str:
        r = requests.post(self.url + "auth-token/", json={"username": user, "password": password}, timeout=60)
        if r.status_code != 200:
            try:
                reason = " ".join(m for v in r.json().values() for m in (v if isinstance(v, list) else [v]))
            except ValueError:
                reason = f"HTTP {r.status_code}"
            raise ChrisError(f"CUBE at {self.url} refused the login of {user}: {reason}")
        return r.json()["token"]

    # --- plugins ---------------------------------------------------------------------------
    def register(self, compute_names: list[str], image_prefix: str | None, replace: bool = False) -> int:
        """Upload each descriptor CUBE lacks; add compute_names to the plugins it has (or, with
        replace, make them its only ones). 1 when a registered plugin's image differs from the one
        asked for: CUBE keeps dock_image read-only once a plugin is registered."""
        refused = 0
        for plugin in descriptors.PLUGINS:
            d = descriptors.load(plugin)
            if image_prefix:
                d = {**d, "dock_image": descriptors.dock_image(d["name"], d["version"], image_prefix)}
            found = self.client.get_plugins({"name_exact": d["name"], "version": d["version"]})["data"]
            if not found:
                self.client.admin_upload_plugin(",".join(compute_names), d)
                self.say(f"register: {d['name']} v{d['version']} ({d['dock_image']}) on {', '.join(compute_names)}")
                continue
            registered = found[0]
            if image_prefix and registered["dock_image"] != d["dock_image"]:
                print(f"error: {d['name']} v{d['version']} is registered with image {registered['dock_image']}; "
                      f"CUBE cannot change a registered plugin's image (dock_image is read-only), so it stays: "
                      f"delete the plugin in CUBE's admin and register it again to use {d['dock_image']}",
                      file=sys.stderr)
                refused += 1
            has = self.compute_names(registered)
            wanted = list(compute_names) if replace else has + [c for c in compute_names if c not in has]
            if wanted == has:
                self.say(f"register: {d['name']} v{d['version']} is on {', '.join(has)} already")
                continue
            self.client.admin_register_plugin_with_computes(registered["id"], ",".join(wanted))
            self.say(f"register: {d['name']} v{d['version']} was on {', '.join(has)}; now on {', '.join(wanted)}")
        return 1 if refused else 0

    def compute_names(self, plugin: dict) -> list[str]:
        """The compute resources a registered plugin runs on, in CUBE's order."""
        item = self.request.get(self.client.plugins_url + "search/", {"id": plugin["id"]}).items[0]
        url, params, names = Request.get_link_relation_urls(item, "compute_resources")[0], PAGE, []
        while url:
            page = self.request.get(url, params)
            names += [Request.get_item_descriptors(c)["name"] for c in page.items]
            url, params = (Request.get_link_relation_urls(page, "next") or [None])[0], None
        return names

    def plugin_id(self, name: str) -> int:
        found = self.client.get_plugins({"name_exact": name})["data"]
        if not found:
            raise ChrisError(f"CUBE has no plugin {name}")
        return max(found, key=lambda p: [int(x) for x in p["version"].split(".") if x.isdigit()])["id"]

    # --- pipelines -------------------------------------------------------------------------
    def upload_pipeline(self, path: Path) -> int:
        """The id of the pipeline in path, uploading it unless CUBE has one of its name."""
        found = validate.problems(path, descriptors.load_all())
        if found:
            raise ChrisError("; ".join(found))
        name = pipelines.load(path).name
        same = [p for p in self.client.get_pipelines({"name": name})["data"] if p["name"] == name]
        if same:
            self.say(f"pipeline: {name!r} is in CUBE already (id {same[0]['id']})")
            return same[0]["id"]
        uploaded = self.client.upload_pipeline_source_file("yaml", str(path))
        self.say(f"pipeline: uploaded {path.name} as {name!r} (id {uploaded['pipeline_id']})")
        return uploaded["pipeline_id"]

    # --- data and feeds --------------------------------------------------------------------
    def upload_folder(self, folder: Path, upload_dir: str) -> int:
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        if not files:
            raise ChrisError(f"{folder}: no files to upload")
        for i, f in enumerate(files, 1):
            self.client.upload_file(f"{upload_dir}/{f.relative_to(folder).as_posix()}", str(f))
            if i == len(files) or i % 50 == 0:
                self.say(f"upload: {i}/{len(files)} files into {upload_dir}")
        return len(files)

    def start_feed(self, upload_dir: str, feed_name: str) -> dict:
        inst = self.client.create_plugin_instance(self.plugin_id("pl-dircopy"), {"dir": upload_dir, "title": feed_name})
        self.say(f"feed: pl-dircopy instance {inst['id']} copies {upload_dir} into feed {inst.get('feed_id')}")
        return inst

    def wait(self, instance_id: int, poll: float, deadline: float) -> str:
        while True:
            status = self.client.get_plugin_instance_by_id(instance_id)["status"]
            if status == FINISHED_OK or status in FAILED:
                return status
            if time.monotonic() > deadline:
                return status
            time.sleep(poll)

    # --- workflows -------------------------------------------------------------------------
    def nodes_info(self, pipeline_id: int, compute: dict[str, str]) -> list[dict]:
        """One entry per piping: its id, its title and the compute resource it runs on."""
        params = self.client.get_pipeline_default_parameters(pipeline_id, {"limit": 1000})["data"]
        pipings = {p["plugin_piping_id"]: p["plugin_piping_title"] for p in params}
        unknown = set(compute) - set(pipings.values())
        if unknown:
            raise ChrisError(f"pipeline {pipeline_id} has no node titled {', '.join(sorted(unknown))}")
        return [{"piping_id": pid, "title": title, "compute_resource_name": compute.get(title, "host")}
                for pid, title in sorted(pipings.items())]

    def start_workflow(self, pipeline_id: int, previous_id: int, nodes: list[dict]) -> int:
        workflow = self.client.create_workflow(pipeline_id, {"previous_plugin_inst_id": previous_id,
                                                             "nodes_info": json.dumps(nodes)})
        self.say(f"run: workflow {workflow['id']} of pipeline {pipeline_id}, {len(nodes)} nodes: "
                 + ", ".join(f"{n['title']}@{n['compute_resource_name']}" for n in nodes))
        return workflow["id"]

    def follow(self, workflow_id: int, expected: int, poll: float, deadline: float) -> list[dict]:
        """Poll every node until all have ended (or the deadline); print each change of status."""
        seen: dict[int, str] = {}
        while True:
            nodes = self.client.get_workflow_plugin_instances(workflow_id, PAGE)["data"]
            for n in sorted(nodes, key=lambda n: n["id"]):
                if seen.get(n["id"]) != n["status"]:
                    seen[n["id"]] = n["status"]
                    ended = sum(s == FINISHED_OK or s in FAILED for s in seen.values())
                    self.say(f"[{ended}/{expected} ended] {n['title']} ({n['plugin_name']} "
                             f"on {n.get('compute_resource_name', '?')}): {n['status']}")
            done = len(nodes) == expected and all(n["status"] == FINISHED_OK or n["status"] in FAILED for n in nodes)
            if done or time.monotonic() > deadline:
                return nodes
            time.sleep(poll)

    # --- outputs -----------------------------------------------------------------------------
    def output_files(self, instance_id: int) -> list[tuple[str, int, str]]:
        """(path below the output folder, size, download URL) of every file a plugin instance wrote.

        Since CUBE 6 an instance has no files link: its output_folder is a
        filebrowser folder, whose files and child folders are walked here.
        """
        item = self.request.get(self.client.plugin_instances_url + "search/", {"id": instance_id}).items[0]
        return self.folder_files(Request.get_link_relation_urls(item, "output_folder")[0])

    def folder_files(self, top: str) -> list[tuple[str, int, str]]:
        """(path below it, size, download URL) of every file in a filebrowser folder and its subfolders."""
        folders, found = [(top, "")], []
        while folders:
            url, prefix = folders.pop()
            folder = self.request.get(url).items[0]
            for f in self._pages(Request.get_link_relation_urls(folder, "files")[0]):
                fname = Request.get_item_descriptors(f)["fname"]
                found.append((prefix + fname.rsplit("/", 1)[-1], int(Request.get_item_descriptors(f)["fsize"]),
                              Request.get_link_relation_urls(f, "file_resource")[0]))
            for child in self._pages(Request.get_link_relation_urls(folder, "children")[0]):
                name = Request.get_item_descriptors(child)["path"].rsplit("/", 1)[-1]
                folders.append((child.href, f"{prefix}{name}/"))
        return sorted(found)

    def _pages(self, url: str):
        params = PAGE
        while url:
            page = self.request.get(url, params)
            yield from page.items
            url, params = (Request.get_link_relation_urls(page, "next") or [None])[0], None

    def download(self, title: str, files: list[tuple[str, int, str]], outdir: Path) -> None:
        """The files, into outdir (paths kept), a few at a time, saying how far it has come every 2 s."""
        total, done, count, start = sum(f[1] for f in files), 0, 0, time.monotonic()
        last = start

        def fetch(f: tuple[str, int, str]) -> int:
            r = self.http.get(f[2], timeout=300)
            r.raise_for_status()
            atomic.write_bytes(outdir / f[0], r.content)
            return len(r.content)

        with ThreadPoolExecutor(DOWNLOAD_THREADS) as pool:
            for size in pool.map(fetch, files):
                done, count = done + size, count + 1
                if time.monotonic() - last > 2 or count == len(files):
                    last = time.monotonic()
                    self.say(f"download: {title}: {count}/{len(files)} files, {done / 1e6:.1f}/{total / 1e6:.1f} MB, "
                             f"{last - start:.1f} s")


def recommended(pipe: pipelines.Pipeline) -> set[str]:
    """The render nodes that publish the local result, the suite's recommended one (``use`` local, or auto)."""
    return {n.title for n in pipe.nodes
            if n.plugin_name in DOWNLOADED_PLUGINS and n.defaults.get("use", "auto") in ("local", "auto")}


def wanted(path: str, recommended_node: bool) -> bool:
    """What a person fetches of a render node: reports, montages, the slice viewer's strips, render.json; the
    DICOM series of the recommended node; never the per-slice PNGs (--pngs) or arrays."""
    parts = path.split("/")
    if "png" in parts[:-1] or path.endswith(".npy"):
        return False
    return recommended_node or DICOM_DIR not in parts[:-1]


def run(cube: Cube, pipeline_file: Path, dicomdir: Path, outdir: Path, overrides: dict[str, str],
        upload_dir: str, poll: float, timeout: float, everything: bool = False) -> int:
    pipe = pipelines.load(pipeline_file)
    titles = {n.title for n in pipe.nodes}
    if set(overrides) - titles:
        raise ChrisError(f"{pipeline_file}: no node titled {', '.join(sorted(set(overrides) - titles))}")
    compute = {n.title: overrides.get(n.title, n.compute or "host") for n in pipe.nodes}
    deadline = time.monotonic() + timeout
    pipeline_id = cube.upload_pipeline(pipeline_file)
    cube.upload_folder(dicomdir, upload_dir)
    feed = cube.start_feed(upload_dir, f"{pipe.name}: {dicomdir.name}")
    status = cube.wait(feed["id"], poll, deadline)
    if status != FINISHED_OK:
        raise ChrisError(f"pl-dircopy (instance {feed['id']}) ended {status}: the data never reached the feed")
    workflow = cube.start_workflow(pipeline_id, feed["id"], cube.nodes_info(pipeline_id, compute))
    nodes = cube.follow(workflow, len(pipe.nodes), poll, deadline)
    best = recommended(pipe)
    for n in nodes:
        if n["status"] != FINISHED_OK or not (everything or n["plugin_name"] in DOWNLOADED_PLUGINS):
            continue
        files = cube.output_files(n["id"])
        chosen = files if everything else [f for f in files if wanted(f[0], n["title"] in best)]
        cube.download(n["title"], chosen, outdir / n["title"])
        cube.say(f"download: {len(chosen)} of {len(files)} files of {n['title']} into {outdir / n['title']}")
    failed = [n for n in nodes if n["status"] in FAILED]
    unfinished = [n for n in nodes if n["status"] != FINISHED_OK and n["status"] not in FAILED]
    for n in failed:
        print(f"error: node {n['title']!r} ({n['plugin_name']}, instance {n['id']}) {n['status']}", file=sys.stderr)
    if len(nodes) < len(pipe.nodes) or unfinished:
        print(f"error: timed out after {timeout:.0f} s; not ended: "
              f"{', '.join(n['title'] for n in unfinished) or 'nodes not yet created'}", file=sys.stderr)
    ok = not failed and not unfinished and len(nodes) == len(pipe.nodes)
    print(f"run {'finished' if ok else 'FAILED'}: {sum(n['status'] == FINISHED_OK for n in nodes)} of "
          f"{len(pipe.nodes)} nodes ok; outputs in {outdir}")
    return 0 if ok else 1


def _pair(text: str) -> tuple[str, str]:
    title, sep, name = text.partition("=")
    if not sep or not title or not name:
        raise argparse.ArgumentTypeError(f"expected TITLE=COMPUTE, got {text!r}")
    return title, name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ctsvd-chris", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("CHRIS_URL"), help="CUBE's API, e.g. http://localhost:8000/api/v1/ (CHRIS_URL)")
    parser.add_argument("--user", default=os.environ.get("CHRIS_USER"), help="account (CHRIS_USER)")
    parser.add_argument("--password", default=os.environ.get("CHRIS_PASSWORD"), help="its password (CHRIS_PASSWORD)")
    sub = parser.add_subparsers(dest="command", required=True)
    reg = sub.add_parser("register", help="register the four plugins (admin)")
    reg.add_argument("--compute", default="host",
                     help="comma-separated compute resources to add to each plugin's (default: %(default)s)")
    reg.add_argument("--replace-compute", dest="replace_compute", action="store_true",
                     help="make --compute each plugin's only compute resources instead of adding them")
    reg.add_argument("--image-prefix", help=f"registry/organisation the images were pushed to (default: {descriptors.IMAGE_PREFIX})")
    up = sub.add_parser("upload-pipeline", help="validate and upload pipeline YAML files")
    up.add_argument("files", nargs="*", type=Path, default=[DEFAULT_PIPELINE])
    run_p = sub.add_parser("run", help="upload DICOMDIR, run the pipeline on it, download the renders")
    run_p.add_argument("--pipeline", type=Path, default=DEFAULT_PIPELINE, help="pipeline YAML (default: %(default)s)")
    run_p.add_argument("--compute", type=_pair, action="append", default=[], metavar="TITLE=NAME",
                       help="run node TITLE on compute resource NAME (overrides the file)")
    run_p.add_argument("--upload-dir", help="where in CUBE the files go (default: home/USER/uploads/ctsvd-TIME-PID)")
    run_p.add_argument("--poll", type=float, default=5.0, help="seconds between status checks")
    run_p.add_argument("--timeout", type=float, default=6 * 3600, help="give up after this many seconds")
    run_p.add_argument("--all", dest="everything", action="store_true",
                       help="download every file of every node (default: the render nodes' reports and montages, "
                            "and the recommended node's DICOM series)")
    run_p.add_argument("dicomdir", type=Path)
    run_p.add_argument("outdir", type=Path)
    args = parser.parse_args(argv)
    missing = [n for n, v in (("--url/CHRIS_URL", args.url), ("--user/CHRIS_USER", args.user),
                              ("--password/CHRIS_PASSWORD", args.password)) if not v]
    if missing:
        parser.error(f"missing {', '.join(missing)}")

    try:
        cube = Cube(args.url, args.user, args.password)
        if args.command == "register":
            names = [c.strip() for c in args.compute.split(",") if c.strip()]
            return cube.register(names, args.image_prefix, args.replace_compute)
        if args.command == "upload-pipeline":
            for f in args.files:
                cube.upload_pipeline(f)
            return 0
        if not args.dicomdir.is_dir():
            print(f"error: {args.dicomdir}: not a folder", file=sys.stderr)
            return 1
        # The process id too: two runs started in the same second must not upload into one folder.
        upload_dir = args.upload_dir or f"home/{args.user}/uploads/ctsvd-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        return run(cube, args.pipeline, args.dicomdir, args.outdir.resolve(), dict(args.compute),
                   upload_dir.strip("/"), args.poll, args.timeout, args.everything)
    except (ChrisError, ChrisRequestException, pipelines.PipelineError, descriptors.DescriptorError,
            requests.RequestException) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (KeyError, IndexError, ValueError) as e:  # a reply without what CUBE's API promises
        print(f"error: unexpected reply from {args.url}: {type(e).__name__} {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
