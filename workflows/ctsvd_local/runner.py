"""Running a ChRIS pipeline on this machine, the way ChRIS would.

Each node runs its plugin's command as ``CMD [flags] inputdir outputdir``:
the root reads the user's folder, every other node reads its parent's output
folder, and every node writes a folder of its own, named after its title.
Flags come from the node's ``plugin_parameter_defaults``, translated with the
plugin's own ChRIS descriptor (the JSON ``chris_plugin_info`` prints, which is
what CUBE registers). A node that fails stops its descendants; its siblings
go on, as in ChRIS. With an ``Engine`` (docker or podman), each node runs in its
plugin's image instead, one container per node with the parent's output
mounted on /incoming and its own folder on /outgoing, as pfcon runs it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from ctsvd_common import atomic
from ctsvd_local.pipeline import Node, Pipeline

BIN = Path(sys.executable).parent
# The plugins' commands live beside this interpreter; chris_plugin_info looks them up on PATH.
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


class RunError(Exception):
    """The pipeline cannot run here; the message says why, in one line."""


@dataclass
class Engine:
    """A container engine (docker or podman) and the images' names, e.g. localhost/fnndsc/{name}:{version}."""
    program: str
    image_template: str = "localhost/fnndsc/{name}:{version}"

    def image(self, name: str, version: str) -> str:
        return self.image_template.format(name=name, version=version)

    def user(self) -> str:
        # Your own UID, so that the outputs are yours; as root, an arbitrary UID
        # in group 0, as OpenShift would give (the images are made for it).
        return f"{os.getuid()}:{os.getgid()}" if os.getuid() else "1000321:0"

    def argv(self, image: str, command: list[str], mounts: tuple[tuple[Path, str, str], ...] = ()) -> list[str]:
        """``program run`` of ``command`` in ``image``, with (source, target, mode) mounts and no network:
        plugins only read and write files."""
        volumes = [a for source, target, mode in mounts for a in ("-v", f"{source}:{target}:{mode}")]
        return [self.program, "run", "--rm", "--network", "none", "--user", self.user(), *volumes, image, *command]

    def prepare_output(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        if not os.getuid():
            out.chmod(0o775)  # writable by the container's group 0


@dataclass
class Plugin:
    name: str
    version: str
    command: Path
    parameters: dict[str, dict]
    image: str | None = None  # run in this image rather than from this interpreter's folder

    def argv(self, node: Node) -> list[str]:
        args: list[str] = []
        for pname, value in node.defaults.items():
            spec = self.parameters.get(pname)
            if spec is None:
                raise RunError(f"node {node.title!r}: {self.name} has no parameter {pname!r} "
                               f"(it has: {', '.join(sorted(self.parameters))})")
            if spec["action"] in ("store_true", "store_false"):
                if not isinstance(value, bool):
                    raise RunError(f"node {node.title!r}: {pname} is a flag and takes true or false, got {value!r}")
                if value == (spec["action"] == "store_true"):
                    args.append(spec["flag"])
            else:
                args += [spec["flag"], str(value).lower() if isinstance(value, bool) else str(value)]
        return [str(self.command), *args]


def describe(name: str, version: str, engine: Engine | None = None) -> Plugin:
    """The installed plugin ``name`` (or its image), checked against ``version``, with its descriptor."""
    if engine is not None:
        return _describe_image(name, version, engine)
    try:
        installed = metadata.version(name)
    except metadata.PackageNotFoundError:
        raise RunError(f"plugin {name} is not installed in {sys.prefix}") from None
    if installed != version:
        raise RunError(f"the pipeline asks for {name} v{version}, but v{installed} is installed")
    info = subprocess.run([str(BIN / "chris_plugin_info"), "-d", f"localhost/fnndsc/{name}:{version}", name],
                          capture_output=True, text=True, env=ENV)
    if info.returncode != 0:
        raise RunError(f"chris_plugin_info failed for {name}: {info.stderr.strip().splitlines()[-1:]}")
    descriptor = json.loads(info.stdout)
    return Plugin(name, version, BIN / descriptor["selfexec"], {p["name"]: p for p in descriptor["parameters"]})


def _describe_image(name: str, version: str, engine: Engine) -> Plugin:
    image = engine.image(name, version)
    info = subprocess.run(engine.argv(image, ["chris_plugin_info", "-d", image]), capture_output=True, text=True)
    if info.returncode != 0:
        raise RunError(f"chris_plugin_info failed in {image}: {info.stderr.strip().splitlines()[-1:]}")
    descriptor = json.loads(info.stdout)
    if descriptor["version"] != version:
        raise RunError(f"the pipeline asks for {name} v{version}, but {image} holds v{descriptor['version']}")
    return Plugin(name, version, Path(descriptor["selfexec"]), {p["name"]: p for p in descriptor["parameters"]}, image)


def node_dir(outputdir: Path, node: Node) -> Path:
    return outputdir / re.sub(r"[^A-Za-z0-9._-]+", "_", node.title)


@dataclass
class NodeRun:
    title: str
    plugin: str
    command: list[str] = field(default_factory=list)
    status: str = "pending"  # ok | failed | skipped
    exit_code: int | None = None
    seconds: float | None = None
    output: str = ""
    # From the node's own report: outputs made, inputs skipped, inputs failed.
    counts: dict[str, int] | None = None

    def read_counts(self, report: Path) -> None:
        try:
            self.counts = json.loads(report.read_text()).get("counts")
        except (OSError, ValueError):
            self.counts = None


def summary_table(results: list[NodeRun]) -> str:
    """One line per node: what ran, how it ended, and what it passed over or failed on."""
    rows = [("node", "status", "exit", "seconds", "outputs", "skipped", "failed")]
    for r in results:
        c = r.counts or {}
        rows.append((r.title, r.status, "" if r.exit_code is None else str(r.exit_code),
                     "" if r.seconds is None else f"{r.seconds:.1f}",
                     *(str(c[k]) if k in c else "" for k in ("outputs", "skipped", "failed"))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
                     for row in rows)


def run(pipeline: Pipeline, inputdir: Path, outputdir: Path, say: Callable[[str], Any] = print,
        engine: Engine | None = None) -> list[NodeRun]:
    """Run every node; return what happened to each. Nothing is raised for a failing node."""
    plugins = {(n.plugin_name, n.plugin_version): None for n in pipeline.nodes}
    for key in plugins:
        plugins[key] = describe(*key, engine=engine)
    inputs = {pipeline.root.title: inputdir}
    runs: dict[str, NodeRun] = {}
    for i, node in enumerate(pipeline.nodes, 1):
        plugin = plugins[(node.plugin_name, node.plugin_version)]
        record = runs[node.title] = NodeRun(node.title, f"{node.plugin_name} v{node.plugin_version}")
        if node.title not in inputs:
            record.status = "skipped"
            say(f"[{i}/{len(pipeline.nodes)}] {node.title}: skipped, an ancestor failed")
            continue
        out = node_dir(outputdir, node)
        record.output = str(out)
        if engine is None:
            record.command = [*plugin.argv(node), str(inputs[node.title]), str(out)]
        else:
            engine.prepare_output(out)
            record.command = engine.argv(plugin.image, [*plugin.argv(node), "/incoming", "/outgoing"],
                                         ((inputs[node.title], "/incoming", "ro"), (out, "/outgoing", "rw")))
        say(f"[{i}/{len(pipeline.nodes)}] {node.title} ({record.plugin}): {' '.join(record.command)}")
        t0 = time.perf_counter()
        code = subprocess.run(record.command, env=ENV).returncode
        record.seconds = round(time.perf_counter() - t0, 2)
        record.exit_code = code
        record.read_counts(out / f"{plugin.command.name}.report.json")
        if code == 0:
            record.status = "ok"
            for child in node.children:
                inputs[child.title] = out
            c = record.counts or {}
            say(f"[{i}/{len(pipeline.nodes)}] {node.title}: done in {record.seconds:.1f} s"
                + (f" ({c.get('skipped', 0)} input(s) skipped, {c.get('failed', 0)} failed; see its report)"
                   if c.get("skipped") or c.get("failed") else ""))
        else:
            record.status = "failed"
            skipped = pipeline.descendants(node)
            say(f"[{i}/{len(pipeline.nodes)}] {node.title}: FAILED (exit {code}) after {record.seconds:.1f} s"
                + (f"; skipping {', '.join(n.title for n in skipped)}" if skipped else ""))
    results = [runs[n.title] for n in pipeline.nodes]
    atomic.write_json(outputdir / "pipeline-run.json",
                      {"pipeline": pipeline.name, "input": str(inputdir),
                       "nodes": [vars(r) for r in results]})
    return results
