"""The flags: bad values refused where they are parsed, --version, and the settings a run reports."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from importlib import metadata
from pathlib import Path

import pytest

from dcm_anon.options import Settings, parser


def _refused(capsys, *flags: str) -> str:
    """The one error line argparse prints for ``flags``, after checking it exits 2."""
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(list(flags))
    assert stop.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0], err
    return errors[0]


def test_negative_workers_are_refused(capsys):
    assert _refused(capsys, "--workers", "-1").endswith(
        "argument --workers: expected a whole number of 0 or more, got '-1'")


@pytest.mark.parametrize("value", ["nan", "abc", "1.5"])
def test_workers_that_are_no_whole_number_are_refused(capsys, value):
    assert _refused(capsys, "--workers", value).endswith(f"argument --workers: invalid int value: '{value}'")


def test_workers_zero_means_every_cpu():
    assert Settings.from_options(parser.parse_args(["--workers", "0"])).workers == 0


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version_names_the_distribution(capsys, flag):
    with pytest.raises(SystemExit) as stop:
        parser.parse_args([flag])
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"pl-dcm-anon {metadata.version('pl-dcm-anon')}\n"


def test_settings_follow_the_parsers_flags():
    """The report lists the settings in their fields' order: the parser's, with the policy's last."""
    dests = [a.dest for a in parser._actions if a.dest not in ("help", "version")]
    assert [f.name for f in fields(Settings) if f.name != "policy"] + ["strict", "input_map", "overwrite"] == dests
    assert Settings.from_options(parser.parse_args([])) == Settings()


def test_the_report_lists_every_flag_and_hides_the_key(series, outdir, run):
    assert run(series.root, outdir, "--no-tag-report", "--shift-dates", "--pseudonym-key", "secret",
               "--workers", "2", "--strict") == 0
    report = json.loads((outdir / "dcm_anon.report.json").read_text())
    assert report["parameters"] == {
        "keep_dates": False, "shift_dates": True, "clean_descriptors": False, "keep_safe_private": False,
        "keep_uids": False, "keep_device_id": False, "keep_patient_chars": False, "keep_institution_id": False,
        "pseudonym_key": "(given, not shown)", "no_tag_report": True, "workers": 2,
        "strict": True, "input_map": "", "overwrite": False}
    assert list(report["parameters"]) == [a.dest for a in parser._actions if a.dest not in ("help", "version")]
    assert "secret" not in json.dumps(report)


def test_the_readme_lists_every_flag():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    table = readme.split("## Flags\n", 1)[1].split("\n## ", 1)[0]
    listed = [flag for row in re.findall(r"^\| (`.*?) \|", table, re.M) for flag in re.findall(r"`(-[^ `]+)", row)]
    assert listed == [s for a in parser._actions if a.dest != "help" for s in a.option_strings]
