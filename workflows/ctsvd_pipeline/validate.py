"""Checking a pipeline file against the plugins' descriptors, as CUBE does not.

CUBE rejects a pipeline that names an unknown plugin version or gives a value
of the wrong type, but it drops unknown parameter names without a word (a typo
such as ``power_iter: 5`` runs with the default instead), and it ignores node
keys it does not know. So every problem is looked for here, and all of them
are reported, one line each, naming the file and the node.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ctsvd_pipeline import pipeline as pipelines

NODE_KEYS = {"title", "plugin", "previous", "plugin_parameter_defaults", pipelines.COMPUTE, *pipelines.RESOURCES}
PIPELINE_KEYS = {*pipelines.PIPELINE_FIELDS, "plugin_tree"}
_CPU = re.compile(r"^([1-9]\d*)m$")
_MEMORY = re.compile(r"^([1-9]\d*)(Mi|Gi)$")
_TYPE_WORDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}


def _type_ok(declared: str, value: Any) -> bool:
    """Is value of the descriptor's declared type (CUBE's int, float, str, bool)?"""
    if isinstance(value, bool):
        return declared == "bool"
    return {"int": isinstance(value, int), "float": isinstance(value, (int, float)),
            "str": isinstance(value, str), "bool": False, "path": isinstance(value, str),
            "unextpath": isinstance(value, str)}.get(declared, False)


def _quantity(kind: str, value: Any) -> int | None:
    """CUBE's CPUInt / MemoryInt: '2000m' → 2000 millicores; '4Gi' → 4096 MiB; None if malformed."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    match = (_CPU if kind == "cpu_limit" else _MEMORY).match(str(value))
    if not match:
        return None
    return int(match[1]) * (1024 if match.group(0).endswith("Gi") else 1)


def _resource_problems(raw: dict, descriptor: dict) -> list[str]:
    out = []
    for key in ("cpu_limit", "memory_limit"):
        if key not in raw:
            continue
        amount = _quantity(key, raw[key])
        if amount is None:
            out.append(f"{key} {raw[key]!r} is not {'like 2000m' if key == 'cpu_limit' else 'like 512Mi or 4Gi'}")
            continue
        low = _quantity(key, descriptor.get(f"min_{key}")) if descriptor.get(f"min_{key}") else None
        high = _quantity(key, descriptor.get(f"max_{key}")) if descriptor.get(f"max_{key}") else None
        if low is not None and amount < low or high is not None and amount > high:
            out.append(f"{key} {raw[key]} is outside the plugin's range "
                       f"[{descriptor.get(f'min_{key}') or '-'}, {descriptor.get(f'max_{key}') or '-'}]")
    for key in ("number_of_workers", "gpu_limit"):
        if key not in raw:
            continue
        value, low, high = raw[key], descriptor.get(f"min_{key}"), descriptor.get(f"max_{key}")
        if not isinstance(value, int) or isinstance(value, bool):
            out.append(f"{key} must be an integer, got {value!r}")
        elif isinstance(low, int) and value < low or isinstance(high, int) and value > high:
            out.append(f"{key} {value} is outside the plugin's range [{low}, {high}]")
    if pipelines.COMPUTE in raw and not (isinstance(raw[pipelines.COMPUTE], str) and raw[pipelines.COMPUTE]):
        out.append(f"{pipelines.COMPUTE} must name a compute resource, got {raw[pipelines.COMPUTE]!r}")
    return out


def _node_problems(raw: dict, descriptors: dict[tuple[str, str], dict]) -> list[str]:
    out = [f"unknown key {k!r} (CUBE would drop it)" for k in sorted(set(raw) - NODE_KEYS)]
    match = pipelines.PLUGIN_SPEC.match(str(raw.get("plugin", "")))
    if not match:
        return out + [f"plugin must read 'NAME vVERSION', got {raw.get('plugin')!r}"]
    name, version = match["name"], match["version"]
    descriptor = descriptors.get((name, version))
    if descriptor is None:
        known = sorted(v for n, v in descriptors if n == name)
        return out + [f"no plugin {name} v{version}" + (f" (known: v{', v'.join(known)})" if known else "")]
    params = {p["name"]: p for p in descriptor["parameters"]}
    defaults = raw.get("plugin_parameter_defaults") or {}
    if not isinstance(defaults, dict):
        return out + ["plugin_parameter_defaults must map parameter names to values"]
    for pname, value in defaults.items():
        if pname not in params:
            out.append(f"{name} has no parameter {pname!r} (it has: {', '.join(sorted(params))})")
        elif not _type_ok(params[pname]["type"], value):
            declared = params[pname]["type"]
            out.append(f"{pname} takes {_TYPE_WORDS.get(declared, declared)}, got {value!r}")
    return out + _resource_problems(raw, descriptor)


def problems(path: Path, descriptors: dict[tuple[str, str], dict]) -> list[str]:
    """Every problem of the pipeline file at path, one line each; [] when it is sound."""
    try:
        doc = pipelines.read(path)
    except pipelines.PipelineError as e:
        return [str(e)]
    return problems_in(doc, path, descriptors)


def problems_in(doc: Any, path: Path | str, descriptors: dict[tuple[str, str], dict]) -> list[str]:
    """Every problem of a pipeline read from path, one line each, each naming path."""
    if not isinstance(doc, dict) or not isinstance(doc.get("plugin_tree"), list) or not doc["plugin_tree"]:
        return [f"{path}: no plugin_tree list"]
    out = [f"{path}: unknown key {k!r}" for k in sorted(set(doc) - PIPELINE_KEYS)]
    if not isinstance(doc.get("name"), str) or not doc["name"].strip():
        out.append(f"{path}: the pipeline needs a name")
    seen: list[str] = []
    roots = 0
    for i, raw in enumerate(doc["plugin_tree"]):
        if not isinstance(raw, dict) or not isinstance(raw.get("title"), str) or not raw["title"]:
            out.append(f"{path}: plugin_tree[{i}]: every node needs a title")
            continue
        where = f"{path}: node {raw['title']!r}"
        if raw["title"] in seen:
            out.append(f"{where}: the title is used twice; titles must be unique")
        previous = raw.get("previous")
        if previous is None:
            roots += 1
        elif previous not in seen:
            later = any(isinstance(r, dict) and r.get("title") == previous for r in doc["plugin_tree"][i:])
            out.append(f"{where}: previous {previous!r} " + ("comes later in the file; a parent must come first"
                                                             if later else "is not a title here"))
        out += [f"{where}: {p}" for p in _node_problems(raw, descriptors)]
        seen.append(raw["title"])
    if roots != 1:
        out.append(f"{path}: expected exactly one root node (previous: null), found {roots}")
    return out
