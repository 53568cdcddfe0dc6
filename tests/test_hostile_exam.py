"""The hostile exam through the whole pipeline (dcm_anon → dicom2matrix → ssvd_denoise → svd_render):
no planted value, nor any piece of it, in any output byte, file or folder name, log or report,
with default flags and with every option of dcm_anon."""

import datetime as dt
import json
import re
import subprocess

import numpy as np
import pytest
import yaml

from ctsvd_common import contract
from ctsvd_testdata.hostile_exam import BIRTH_DATE, PATIENT_ID, STUDY_DATE, HostileExam, write_hostile_exam
from dcm_anon.uids import Pseudonyms

from plugin_commands import ENV, ROOT, all_files

KEY = "hostile-test-key"
EVERY_OPTION = {"shift_dates": True, "clean_descriptors": True, "keep_safe_private": True,
                "keep_patient_chars": True, "keep_device_id": True, "keep_institution_id": True,
                "keep_uids": True, "pseudonym_key": KEY}
RUNS = {
    "default": {},
    "every-option": EVERY_OPTION,
    # Full dates exclude modified ones: the dates then stay in the headers, by design, and nowhere else.
    "full-dates": {**{k: v for k, v in EVERY_OPTION.items() if k != "shift_dates"}, "keep_dates": True},
}
DATES = (STUDY_DATE, f"{STUDY_DATE[:4]}-{STUDY_DATE[4:6]}-{STUDY_DATE[6:]}")


def _pipeline(anonymize: dict) -> dict:
    node = lambda title, plugin, previous, **params: {
        "title": title, "plugin": f"{plugin} v0.1.0", "previous": previous,
        **({"plugin_parameter_defaults": params} if params else {})}
    return {"name": "hostile exam", "authors": "ctsvd", "category": "Imaging", "description": "privacy test",
            "locked": False, "plugin_tree": [
                node("anonymize", "pl-dcm-anon", None, **anonymize),
                node("volume", "pl-dicom2matrix", "anonymize"),
                node("ssvd", "pl-ssvd-denoise", "volume", mode="both", k=6),
                node("render-local", "pl-svd-render", "ssvd", use="local"),
                node("render-global", "pl-svd-render", "ssvd", use="global", rank="auto")]}


@pytest.fixture(scope="module")
def exam(tmp_path_factory):
    return write_hostile_exam(tmp_path_factory.mktemp("hostile") / "in", slices=12, size=32, seed=7)


@pytest.fixture(scope="module", params=list(RUNS))
def run(request, exam, tmp_path_factory):
    work = tmp_path_factory.mktemp(f"hostile-{request.param}")
    pipeline = work / "pipeline.yml"
    pipeline.write_text(yaml.safe_dump(_pipeline(RUNS[request.param]), sort_keys=False, allow_unicode=True))
    out = work / "out"
    proc = subprocess.run([str(ROOT / "workflows" / "run-local"), "--pipeline", str(pipeline), str(exam.root),
                           str(out)], capture_output=True, text=True, env=ENV, timeout=900)
    return request.param, proc, out


def _shifted() -> tuple[str, str]:
    """The study date as --shift-dates moves it with KEY (the exam has one patient)."""
    days = Pseudonyms.for_run(KEY).date_shift_days(f"id:\x00{PATIENT_ID}")
    moved = dt.date(int(STUDY_DATE[:4]), int(STUDY_DATE[4:6]), int(STUDY_DATE[6:])) + dt.timedelta(days=days)
    return moved.strftime("%Y%m%d"), moved.isoformat()


def _found(data: bytes, piece: str) -> bool:
    """Case-insensitive for every script (upper, lower and title case, UTF-8)."""
    return any(form.encode() in data for form in {piece, piece.lower(), piece.upper(), piece.title()})


def test_the_pipeline_runs_and_every_input_is_accounted_for(run, exam):
    name, proc, out = run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    nodes = {n["title"]: n for n in json.loads((out / "pipeline-run.json").read_text())["nodes"]}
    assert all(n["status"] == "ok" for n in nodes.values())
    # 12 slices; the DICOMDIR body, the screenshot and the text file withheld; the cut file failed.
    assert nodes["anonymize"]["counts"] == {"outputs": 12, "skipped": 3, "failed": 1}
    report = json.loads((out / "anonymize" / "dcm_anon.report.json").read_text())
    reasons = " | ".join(s["reason"] for s in report["skipped"] + report["errors"])
    assert "DICOMDIR records" in reasons and "not a DICOM file" in reasons and "truncated" in reasons
    # The JPEG slice lost its comment, not a pixel: the volume is the phantom exactly.
    assert np.array_equal(np.load(out / "volume" / "series-001" / contract.VOLUME), exam.hu)


def test_no_planted_value_or_piece_anywhere(run, exam):
    name, proc, out = run
    files = all_files(out)
    headers = [f for f in files if f.suffix == ".dcm" or "tag-report" in f.parts]   # de-identified headers
    text = [f for f in files if f.suffix in (".json", ".html") and f not in headers]
    assert len(files) > 40 and headers and text
    logs = (proc.stdout + proc.stderr).encode()
    pieces = HostileExam.pieces()
    # The scan can fail: the input holds every piece.
    inputs = b"".join(f.read_bytes() for f in all_files(exam.root)) + \
        "".join(str(f) for f in all_files(exam.root)).encode()
    assert [p for p in pieces if not _found(inputs, p)] == []

    by_design = set(DATES) if name == "full-dates" else set()   # --keep-dates keeps dates in headers
    leaks = [(str(f.relative_to(out)), p) for f in files for p in pieces
             if p not in by_design or f not in headers if _found(f.read_bytes(), p)]
    leaks += [("log", p) for p in pieces if _found(logs, p)]
    leaks += [(str(f.relative_to(out)), p) for f in files for p in pieces if _found(str(f).encode(), p)]
    assert leaks == []


def test_names_carry_no_short_name_and_reports_no_date_at_all(run):
    name, proc, out = run
    tokens = {t.casefold() for t in HostileExam.name_tokens()}
    for f in all_files(out):
        words = set(re.split(r"[\W_]+", f.relative_to(out).as_posix().casefold()))
        assert not words & tokens, f
    # Neither the real date nor the shifted one (which would give the shift away) in a name,
    # a log line or a report: only the de-identified headers say what the date now is.
    dates = [*DATES, BIRTH_DATE, *(_shifted() if name == "every-option" else ())]
    reports = [f for f in all_files(out) if f.name.endswith(".report.json") or f.name in
               ("pipeline-run.json", "index.html", "manifest.json")]
    assert reports
    for f in reports:
        assert [d for d in dates if d in f.read_text(encoding="utf-8")] == [], f
    assert [d for d in dates if d in proc.stdout + proc.stderr] == []
    assert [d for d in dates for f in all_files(out) if d in f.relative_to(out).as_posix()] == []
