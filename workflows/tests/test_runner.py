"""The local runner honours the pipeline file: compute names reported, sibling branches finishing when one
fails, per-node overrides, --resume, and a per-node summary (time, peak memory, counts) as JSON and a table.

One small tree on a small demo series, run for real (the plugins' commands, Spark in local mode):

    anonymize → volume ┬→ ssvd (both) ┬→ render-local
                       │              └→ render-auto
                       └→ ssvd-bad (mode: nonsense, compute moc) → render-after-bad
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ctsvd_pipeline import files
from ctsvd_pipeline.__main__ import main



def _tree() -> dict:
    doc = yaml.safe_load(files.DEFAULT_PIPELINE.read_text())
    keep = {n["title"]: n for n in doc["plugin_tree"] if n["title"] in ("anonymize", "volume", "ssvd", "render-local",
                                                                          "render-auto")}
    keep["ssvd"]["plugin_parameter_defaults"]["k"] = 6
    bad = {**keep["ssvd"], "title": "ssvd-bad", "compute_resource_name": "moc",
           "plugin_parameter_defaults": {"mode": "nonsense"}}
    after = {**keep["render-local"], "title": "render-after-bad", "previous": "ssvd-bad"}
    doc["plugin_tree"] = [*keep.values(), bad, after]
    return doc


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = tmp_path_factory.mktemp("runner")
    (work / "tree.yml").write_text(yaml.safe_dump(_tree(), sort_keys=False))
    return work


def run_local(work: Path, capsys, *extra: str) -> tuple[int, dict, str]:
    code = main(["run", "--pipeline", str(work / "tree.yml"), "--demo-slices", "12", "--demo-size", "64",
                 *extra, str(work / "out")])
    printed = capsys.readouterr().out
    return code, json.loads((work / "out" / "pipeline-run.json").read_text()), printed


@pytest.fixture(scope="module")
def first(work):
    """The first run (capsys is function-scoped, so the output is captured by hand)."""
    import contextlib
    import io
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["run", "--pipeline", str(work / "tree.yml"), "--demo-slices", "12", "--demo-size", "64",
                     str(work / "out")])
    return code, json.loads((work / "out" / "pipeline-run.json").read_text()), buffer.getvalue()


def _nodes(record: dict) -> dict[str, dict]:
    return {n["title"]: n for n in record["nodes"]}


def test_siblings_finish_when_a_branch_fails(first):
    code, record, printed = first
    nodes = _nodes(record)
    assert code == 1
    assert {t: n["status"] for t, n in nodes.items()} == {
        "anonymize": "ok", "volume": "ok", "ssvd": "ok", "render-local": "ok", "render-auto": "ok",
        "ssvd-bad": "failed", "render-after-bad": "skipped"}
    assert nodes["ssvd-bad"]["exit_code"] == 2  # a usage error, as the plugin says
    assert "ssvd-bad: FAILED (exit 2)" in printed and "skipping render-after-bad" in printed
    assert record["totals"] == {"ok": 5, "resumed": 0, "failed": 1, "skipped": 1,
                                "seconds": record["totals"]["seconds"], "peak_mib": record["totals"]["peak_mib"]}


def test_compute_names_are_reported_and_run_here(first):
    _, record, printed = first
    nodes = _nodes(record)
    assert nodes["ssvd-bad"]["compute"] == "moc" and nodes["ssvd"]["compute"] == "host"
    assert "ssvd-bad (pl-ssvd-denoise v0.1.0, compute moc: run here):" in printed


def test_summary_has_time_and_peak_memory_per_node(first):
    _, record, printed = first
    nodes = _nodes(record)
    ran = [n for n in nodes.values() if n["status"] in ("ok", "failed")]
    assert all(n["seconds"] > 0 and n["peak_mib"] > 10 for n in ran)
    # Spark's JVM is a child of the SVD node's process: its memory is counted there.
    assert nodes["ssvd"]["peak_mib"] > 150 and nodes["ssvd"]["peak_mib"] > nodes["anonymize"]["peak_mib"]
    assert record["totals"]["peak_mib"] == max(n["peak_mib"] for n in ran)
    assert nodes["volume"]["counts"] == {"outputs": 1, "skipped": 0, "failed": 0}
    header = next(line for line in printed.splitlines() if line.startswith("node "))
    assert header.split() == ["node", "compute", "status", "exit", "seconds", "peak", "MiB", "outputs", "skipped", "failed"]
    row = next(line for line in printed.splitlines() if line.startswith("ssvd-bad "))
    assert row.split()[:4] == ["ssvd-bad", "moc", "failed", "2"]


def test_resume_reuses_complete_nodes_and_reruns_the_rest(first, work, capsys):
    before = {p: p.stat().st_mtime_ns for p in (work / "out" / "ssvd").rglob("*") if p.is_file()}
    code, record, printed = run_local(work, capsys, "--resume")
    nodes = _nodes(record)
    assert code == 1
    assert {t: n["status"] for t, n in nodes.items()} == {
        "anonymize": "resumed", "volume": "resumed", "ssvd": "resumed", "render-local": "resumed",
        "render-auto": "resumed", "ssvd-bad": "failed", "render-after-bad": "skipped"}
    assert "ssvd-bad: runs again, it did not end ok before" in printed
    assert {p: p.stat().st_mtime_ns for p in (work / "out" / "ssvd").rglob("*") if p.is_file()} == before
    assert nodes["ssvd"]["counts"]["outputs"] == 1 and nodes["ssvd"]["seconds"] is None


def test_override_reruns_only_that_node(first, work, capsys):
    code, record, printed = run_local(work, capsys, "--resume", "--set", "render-auto.rank=3")
    nodes = _nodes(record)
    assert nodes["render-auto"]["status"] == "ok" and "--rank 3" in " ".join(nodes["render-auto"]["command"])
    assert "render-auto: runs again, its command changed" in printed
    assert nodes["render-local"]["status"] == "resumed" and nodes["ssvd"]["status"] == "resumed"
    assert record["overrides"] == {"render-auto": {"rank": "3"}}
    report = json.loads((work / "out" / "render-auto" / "svd_render.report.json").read_text())
    assert report["parameters"]["rank"] == "3"

    # An output that went missing makes its node run again, and its children with it.
    (work / "out" / "volume" / "series-001" / "volume.npy").unlink()
    code, record, printed = run_local(work, capsys, "--resume", "--set", "render-auto.rank=3")
    nodes = _nodes(record)
    assert "volume: runs again, its output folder changed since it ended" in printed
    assert [nodes[t]["status"] for t in ("anonymize", "volume", "ssvd", "render-auto")] == ["resumed", "ok", "ok", "ok"]
    assert (work / "out" / "volume" / "series-001" / "volume.npy").is_file()


@pytest.mark.parametrize("assignment, message", [
    ("ssvd.power_iter=5", "pl-ssvd-denoise has no parameter 'power_iter'"),
    ("ssvd.k=thirty", "k expected an integer, got 'thirty'"),
    ("svd.k=3", "no node titled 'svd'"),
    ("ssvd-k-3", "expected TITLE.PARAM=VALUE"),
])
def test_bad_overrides_are_one_line(work, tmp_path, capsys, assignment, message):
    code = main(["run", "--pipeline", str(work / "tree.yml"), "--set", assignment, str(tmp_path), str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1


def test_a_file_with_problems_does_not_run(tmp_path, capsys):
    doc = _tree()
    doc["plugin_tree"][2]["plugin_parameter_defaults"]["bogus_param"] = "x"
    (tmp_path / "bad.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    code = main(["run", "--pipeline", str(tmp_path / "bad.yml"), str(tmp_path), str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and "no parameter 'bogus_param'" in err
    assert not (tmp_path / "o" / "anonymize").exists()


def test_peak_memory_counts_the_whole_process_tree():
    from ctsvd_pipeline import measure
    hold = "import time; b = bytearray({n}); b[::4096] = b'x' * len(b[::4096]); time.sleep(1.5)"
    tree = f'python3 -c "{hold.format(n=300 * 2**20)}" & python3 -c "{hold.format(n=100 * 2**20)}"; wait'
    code, seconds, peak = measure.execute(["bash", "-c", tree], dict(measure.os.environ))
    assert code == 0 and seconds >= 1.5
    assert 400 < peak < 600  # both children's 400 MiB, plus two interpreters
    code, _, peak = measure.execute(["bash", "-c", "exit 3"], dict(measure.os.environ))
    assert code == 3
