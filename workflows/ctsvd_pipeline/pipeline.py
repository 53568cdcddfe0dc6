"""ChRIS pipeline files: reading them, checking them, ordering their nodes.

The format is CUBE's pipeline YAML (ChRIS RFC 2): a ``plugin_tree`` list of
nodes ``{title, plugin: "NAME vVERSION", previous: TITLE | null,
plugin_parameter_defaults: {name: value}}`` plus the resources CUBE keeps per
node (``cpu_limit: 2000m``, ``memory_limit: 4Gi``, ``number_of_workers``,
``gpu_limit``). ``compute_resource_name`` is ours: CUBE's upload ignores it
(a pipeline cannot name a compute resource), and it is given per node when a
run starts (``ctsvd-chris`` does so; the local runner reports it). Older
JSON-style files that link nodes by ``previous_index`` and spell
``plugin_name``/``plugin_version`` and ``[{name, default}]`` defaults are read
too. ``cube_json`` writes the body of ``POST /api/v1/pipelines/``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PLUGIN_SPEC = re.compile(r"^\s*(?P<name>\S.*?)\s+v(?P<version>\d+(?:\.\d+)*)\s*$")
# What CUBE keeps of a node besides its plugin, parent and defaults.
RESOURCES = ("cpu_limit", "memory_limit", "number_of_workers", "gpu_limit")
COMPUTE = "compute_resource_name"
PIPELINE_FIELDS = ("name", "authors", "category", "description", "locked")


class PipelineError(Exception):
    """The pipeline file is not a valid ChRIS pipeline; the message names the problem."""


@dataclass
class Node:
    title: str
    plugin_name: str
    plugin_version: str
    previous: str | None
    defaults: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)
    compute: str | None = None  # the compute resource the file asks for
    children: list["Node"] = field(default_factory=list)


@dataclass
class Pipeline:
    name: str
    nodes: list[Node]  # parents before children, siblings in file order
    doc: dict[str, Any] = field(default_factory=dict)  # the file as read
    source: str = ""  # where it was read from

    @property
    def root(self) -> Node:
        return self.nodes[0]

    def descendants(self, node: Node) -> list[Node]:
        out, todo = [], list(node.children)
        while todo:
            n = todo.pop(0)
            out.append(n)
            todo.extend(n.children)
        return out


def _defaults(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if isinstance(raw, dict):
        return dict(raw)
    if isinstance(raw, list) and all(isinstance(d, dict) and {"name", "default"} <= d.keys() for d in raw):
        return {d["name"]: d["default"] for d in raw}
    raise PipelineError(f"{where}: plugin_parameter_defaults must map names to values")


def _node(raw: dict, index: int, titles: list[str]) -> Node:
    where = f"plugin_tree[{index}]"
    if not isinstance(raw, dict):
        raise PipelineError(f"{where}: expected a mapping")
    title = raw.get("title")
    if not title or not isinstance(title, str):
        raise PipelineError(f"{where}: every node needs a title")
    if "plugin" in raw:
        match = PLUGIN_SPEC.match(str(raw["plugin"]))
        if not match:
            raise PipelineError(f"{where} ({title}): plugin must read 'NAME vVERSION', got {raw['plugin']!r}")
        name, version = match["name"], match["version"]
    elif "plugin_name" in raw and "plugin_version" in raw:
        name, version = str(raw["plugin_name"]), str(raw["plugin_version"])
    else:
        raise PipelineError(f"{where} ({title}): no plugin named")
    if "previous_index" in raw and "previous" not in raw:
        prev_index = raw["previous_index"]
        previous = None if prev_index is None else titles[prev_index] if 0 <= prev_index < len(titles) else "?"
    else:
        previous = raw.get("previous")
    return Node(title, name, version, previous, _defaults(raw.get("plugin_parameter_defaults"), where),
                {k: raw[k] for k in RESOURCES if k in raw}, raw.get(COMPUTE))


def read(path: Path) -> dict[str, Any]:
    try:
        return yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise PipelineError(f"{path}: cannot read the pipeline ({type(e).__name__})") from None


def load(path: Path) -> Pipeline:
    """Read and check a pipeline file; PipelineError says what is wrong, in one line."""
    doc = read(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("plugin_tree"), list) or not doc["plugin_tree"]:
        raise PipelineError(f"{path}: no plugin_tree list")
    raw_nodes = doc["plugin_tree"]
    titles = [n.get("title") if isinstance(n, dict) else None for n in raw_nodes]
    nodes = [_node(raw, i, titles) for i, raw in enumerate(raw_nodes)]
    by_title: dict[str, Node] = {}
    for n in nodes:
        if n.title in by_title:
            raise PipelineError(f"{path}: title {n.title!r} is used twice; titles must be unique")
        by_title[n.title] = n
    roots = [n for n in nodes if n.previous is None]
    if len(roots) != 1:
        raise PipelineError(f"{path}: expected exactly one root node (previous: null), found {len(roots)}")
    for n in nodes:
        if n.previous is not None:
            if n.previous not in by_title:
                raise PipelineError(f"{path}: node {n.title!r} follows {n.previous!r}, which is not a title here")
            by_title[n.previous].children.append(n)
    ordered = [roots[0]]
    for n in ordered:  # grows as it goes: breadth first, so parents precede children
        ordered.extend(n.children)
    if len(ordered) != len(nodes):
        unreachable = sorted({n.title for n in nodes} - {n.title for n in ordered})
        raise PipelineError(f"{path}: nodes not connected to the root (a cycle?): {', '.join(unreachable)}")
    return Pipeline(str(doc.get("name", Path(path).stem)), ordered, doc, str(path))


def cube_json(pipeline: Pipeline) -> dict[str, Any]:
    """The body of ``POST /api/v1/pipelines/``: plugin_tree as a JSON string, nodes in file order."""
    position = {raw.get("title"): i for i, raw in enumerate(pipeline.doc["plugin_tree"])}
    in_file_order = sorted(pipeline.nodes, key=lambda n: position[n.title])
    tree = [{"title": n.title, "plugin_name": n.plugin_name, "plugin_version": n.plugin_version,
             "previous": n.previous, **n.resources,
             "plugin_parameter_defaults": [{"name": k, "default": v} for k, v in n.defaults.items()]}
            for n in in_file_order]
    return {**{k: pipeline.doc[k] for k in PIPELINE_FIELDS if k in pipeline.doc},
            "plugin_tree": json.dumps(tree)}
