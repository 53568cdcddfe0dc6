"""Every checked-in pipeline file runs here, to its end, with run-local: the Kubernetes crossover with the
override workflows/README.md gives for it (read from there, so the document and the test cannot part)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from ctsvd_pipeline import files
from ctsvd_pipeline.__main__ import main

WORKFLOWS = Path(__file__).resolve().parents[1]
FILES = sorted(p.name for p in files.PIPELINES.glob("*.yml"))


def documented_overrides() -> dict[str, list[str]]:
    """``workflows/run-local --pipeline .../F.yml --set ...`` lines in the README: F → its --set flags."""
    found = {}
    for line in re.findall(r"^workflows/run-local --pipeline .*$", (WORKFLOWS / "README.md").read_text(), re.M):
        args = shlex.split(line)[1:]
        pipeline = Path(args[args.index("--pipeline") + 1]).name
        found[pipeline] = [a for i, a in enumerate(args) if a == "--set" or (i and args[i - 1] == "--set")]
    return found


def test_the_kubernetes_crossover_has_its_documented_override():
    assert documented_overrides().get("ct-denoise-crossover-k8s.yml") == ["--set", "ssvd.master=local[*]"]


@pytest.mark.parametrize("name", FILES)
def test_every_pipeline_file_runs_here(name, tmp_path, capsys):
    extra = documented_overrides().get(name, [])
    code = main(["run", "--pipeline", str(files.PIPELINES / name), *extra, "--demo-slices", "8", "--demo-size", "48",
                 str(tmp_path / "out")])
    record = json.loads((tmp_path / "out" / "pipeline-run.json").read_text())
    assert code == 0, capsys.readouterr().out[-2000:]
    assert record["nodes"] and all(n["status"] == "ok" for n in record["nodes"])
    renders = [n for n in record["nodes"] if n["plugin"].startswith("pl-svd-render")]
    assert renders and all((Path(n["output"]) / "index.html").is_file() for n in renders)
