"""The suite's pipeline files: the YAML sources and the JSON made from them.

The YAML files in pipelines/ (package data) are the one source (CUBE takes
them at /api/v1/pipelines/sourcefiles/); pipelines/json/<name>.json is the
body of ``POST /api/v1/pipelines/`` made from each, so the two cannot drift:

    ctsvd-pipeline pipelines            check every YAML file, rewrite the JSON
    ctsvd-pipeline pipelines --check    exit 1 when a file has problems or a JSON is stale
"""

from __future__ import annotations

import json
from pathlib import Path

from ctsvd_common import atomic
from ctsvd_pipeline import descriptors, files, validate
from ctsvd_pipeline import pipeline as pipelines



def yaml_files() -> list[Path]:
    return sorted(files.PIPELINES.glob("*.yml"))


def json_path(source: Path) -> Path:
    return files.PIPELINE_JSON / f"{source.stem}.json"


def json_text(source: Path) -> str:
    return json.dumps(pipelines.cube_json(pipelines.load(source)), indent=2) + "\n"


def sync(check: bool = False, say=print) -> int:
    """Validate every pipeline file; write (or, with check, compare) its JSON. Exit status."""
    known = descriptors.load_all()
    status = 0
    for source in yaml_files():
        found = validate.problems(source, known)
        for line in found:
            say(line)
        if found:
            status = 1
            continue
        target, text = json_path(source), json_text(source)
        if check:
            if not target.exists() or target.read_text() != text:
                say(f"{target}: stale, not what {source.name} says: run ctsvd-pipeline pipelines")
                status = 1
        else:
            atomic.write_text(target, text)
            say(f"{source.name}: sound; wrote {target}")
    return status
