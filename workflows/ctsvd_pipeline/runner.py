"""Running a ChRIS pipeline on this machine, the way ChRIS would.

Each node runs its plugin's command as ``CMD [flags] inputdir outputdir``:
the root reads the user's folder, every other node reads its parent's output
folder, and every node writes a folder of its own, named after its title.
Flags come from the node's ``plugin_parameter_defaults``, translated with the
plugin's own ChRIS descriptor (plus ``--overwrite``: a node run again writes
into its own earlier folder, where ChRIS would give it a new one) (the JSON ``chris_plugin_info`` prints, which is
what CUBE registers). A node that fails stops its descendants; its siblings
go on, as in ChRIS.

Before anything runs, the file is checked against the plugins' descriptors as
CUBE registers them (validate.py). ``--set TITLE.PARAM=VALUE`` overrides a
node's parameter (overrides.py); a node's compute resource is reported, but
every node runs here; ``resume`` reuses the nodes whose earlier outputs are
complete (resume.py). Each node's time and peak memory (of its whole process
tree, measure.py) go into the record and the table. With an engine (docker or
podman), each node runs in its plugin's image instead, one container per node
(engine.py); the peak memory is then the engine client's, not the container's.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from ctsvd_common import atomic
from ctsvd_pipeline import descriptors, measure, overrides, resume, validate
from ctsvd_pipeline.descriptors import BIN, ENV  # the plugins' commands live beside this interpreter
from ctsvd_pipeline.engine import Engine, EngineError
from ctsvd_pipeline.pipeline import Node, Pipeline


class RunError(Exception):
    """The pipeline cannot run here; the message says why, in one line."""


@dataclass
class Plugin:
    name: str
    version: str
    command: Path
    parameters: dict[str, dict]
    image: str | None = None  # with an engine, the node runs in this image

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
        if "overwrite" in self.parameters and "--overwrite" not in args:
            # ChRIS gives every job a new folder; here a node that runs again reuses its own, and
            # --overwrite lets the plugin replace what its earlier run wrote there (and nothing else).
            args.append("--overwrite")
        return [str(self.command), *args]


def describe(name: str, version: str, engine: Engine | None = None) -> Plugin:
    """The installed plugin ``name`` (or its image), checked against ``version``, with its descriptor."""
    if engine is not None:
        try:
            descriptor = engine.descriptor(name, version)
        except EngineError as e:
            raise RunError(str(e)) from None
        return Plugin(name, version, Path(descriptor["selfexec"]), {p["name"]: p for p in descriptor["parameters"]},
                      engine.image(name, version))
    try:
        installed = metadata.version(name)
    except metadata.PackageNotFoundError:
        raise RunError(f"plugin {name} is not installed in {sys.prefix}") from None
    if installed != version:
        raise RunError(f"the pipeline asks for {name} v{version}, but v{installed} is installed")
    try:
        descriptor = descriptors.make(name)
    except descriptors.DescriptorError as e:
        raise RunError(str(e)) from None
    return Plugin(name, version, BIN / descriptor["selfexec"], {p["name"]: p for p in descriptor["parameters"]})


def node_dir(outputdir: Path, node: Node) -> Path:
    return outputdir / re.sub(r"[^A-Za-z0-9._-]+", "_", node.title)


@dataclass
class NodeRun:
    title: str
    plugin: str
    command: list[str] = field(default_factory=list)
    status: str = "pending"  # ok | resumed | failed | skipped
    exit_code: int | None = None
    seconds: float | None = None
    peak_mib: float | None = None
    compute: str | None = None  # where the file asks the node to run (it runs here)
    output: str = ""
    fingerprint: str | None = None  # of the output folder when the node ended ok (for --resume)
    # From the node's own report: outputs made, inputs skipped, inputs failed.
    counts: dict[str, int] | None = None

    def read_counts(self, report: Path) -> None:
        try:
            self.counts = json.loads(report.read_text()).get("counts")
        except (OSError, ValueError):
            self.counts = None


def summary_table(results: list[NodeRun]) -> str:
    """One line per node: what ran where, how it ended, its cost, and what it passed over or failed on."""
    rows = [("node", "compute", "status", "exit", "seconds", "peak MiB", "outputs", "skipped", "failed")]
    for r in results:
        c = r.counts or {}
        rows.append((r.title, r.compute or "", r.status, "" if r.exit_code is None else str(r.exit_code),
                     "" if r.seconds is None else f"{r.seconds:.1f}", "" if r.peak_mib is None else f"{r.peak_mib:.0f}",
                     *(str(c[k]) if k in c else "" for k in ("outputs", "skipped", "failed"))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
                     for row in rows)


def check(pipeline: Pipeline) -> None:
    """Refuse a file with problems CUBE would not catch (or would catch only at upload)."""
    found = validate.problems_in(pipeline.doc, pipeline.source, descriptors.load_all())
    if found:
        raise RunError(f"{len(found)} problem(s) in the pipeline file:\n" + "\n".join(found))


def run(pipeline: Pipeline, inputdir: Path, outputdir: Path, say: Callable[[str], Any] = print, *,
        assignments: list[str] = (), reuse: bool = False, engine: Engine | None = None) -> list[NodeRun]:
    """Run every node; return what happened to each. Nothing is raised for a failing node.

    assignments are --set TITLE.PARAM=VALUE overrides; with reuse, nodes whose earlier
    outputs in outputdir are complete for the same command are not run again."""
    check(pipeline)
    plugins = {(n.plugin_name, n.plugin_version): None for n in pipeline.nodes}
    for key in plugins:
        plugins[key] = describe(*key, engine=engine)
    try:
        overridden = overrides.apply(pipeline, list(assignments), {
            n.title: plugins[(n.plugin_name, n.plugin_version)].parameters for n in pipeline.nodes})
    except overrides.OverrideError as e:
        raise RunError(str(e)) from None
    earlier = resume.earlier_runs(outputdir) if reuse else {}
    inputs = {pipeline.root.title: inputdir}
    reused: set[str] = set()
    runs: dict[str, NodeRun] = {}
    for i, node in enumerate(pipeline.nodes, 1):
        plugin = plugins[(node.plugin_name, node.plugin_version)]
        record = runs[node.title] = NodeRun(node.title, f"{node.plugin_name} v{node.plugin_version}",
                                            compute=node.compute)
        if node.title not in inputs:
            record.status = "skipped"
            say(f"[{i}/{len(pipeline.nodes)}] {node.title}: skipped, an ancestor failed")
            continue
        out = node_dir(outputdir, node)
        record.output = str(out)
        record.command = ([*plugin.argv(node), str(inputs[node.title]), str(out)] if engine is None else
                          engine.node_command(plugin.image, plugin.argv(node), inputs[node.title], out))
        report = out / f"{plugin.command.name}.report.json"
        if reuse and (node.previous is None or node.previous in reused):
            reason = resume.why_not(earlier.get(node.title), record.command, report)
            if reason is None:
                record.status, record.exit_code, record.fingerprint = "resumed", 0, earlier[node.title]["fingerprint"]
                record.read_counts(report)
                reused.add(node.title)
                inputs.update({child.title: out for child in node.children})
                say(f"[{i}/{len(pipeline.nodes)}] {node.title}: complete from the earlier run, not run again")
                continue
            say(f"[{i}/{len(pipeline.nodes)}] {node.title}: runs again, {reason}")
        where = f", compute {node.compute}: run here" if node.compute and node.compute != "host" else ""
        say(f"[{i}/{len(pipeline.nodes)}] {node.title} ({record.plugin}{where}): {' '.join(record.command)}")
        code, record.seconds, record.peak_mib = measure.execute(record.command, ENV)
        record.exit_code = code
        record.read_counts(report)
        if code == 0:
            record.status, record.fingerprint = "ok", resume.fingerprint(out)
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
    statuses = [r.status for r in results]
    atomic.write_json(outputdir / resume.RECORD,
                      {"pipeline": pipeline.name, "input": str(inputdir), "overrides": overridden,
                       "totals": {s: statuses.count(s) for s in ("ok", "resumed", "failed", "skipped")}
                       | {"seconds": round(sum(r.seconds or 0 for r in results), 2),
                          "peak_mib": max((r.peak_mib or 0 for r in results), default=0)},
                       "nodes": [vars(r) for r in results]})
    return results
