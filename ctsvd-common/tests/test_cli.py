"""The shared flag checks: one message style, exit 2, and descriptors chris_plugin can still write."""

import math

import pytest
from argparse import ArgumentParser

from chris_plugin.parameters import serialize

from ctsvd_common.cli import Finite, Whole, add_version


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="plugin")
    p.add_argument("--k", type=int, default=50, action=Whole, minimum=1, help="components")
    p.add_argument("--workers", type=int, default=0, action=Whole, maximum=64)
    p.add_argument("--percent", type=float, default=0.0, action=Finite, minimum=0, maximum=100)
    p.add_argument("--padding-hu", dest="padding_hu", type=float, default=-1024.0, action=Finite)
    add_version(p, "ctsvd-common")
    return p


def test_good_values_are_stored_with_their_type():
    options = parser().parse_args(["--k", "7", "--workers", "64", "--percent", "12.5", "--padding-hu", "-2000"])
    assert (options.k, options.workers, options.percent, options.padding_hu) == (7, 64, 12.5, -2000.0)
    assert parser().parse_args([]).k == 50


@pytest.mark.parametrize("flags, message", [
    (["--k", "0"], "argument --k: expected a whole number of 1 or more, got '0'"),
    (["--workers", "-1"], "argument --workers: expected a whole number from 0 to 64, got '-1'"),
    (["--workers", "65"], "argument --workers: expected a whole number from 0 to 64, got '65'"),
    (["--percent", "nan"], "argument --percent: expected a finite number from 0 to 100, got 'nan'"),
    (["--percent", "100.5"], "argument --percent: expected a finite number from 0 to 100, got '100.5'"),
    (["--padding-hu", "inf"], "argument --padding-hu: expected a finite number, got 'inf'"),
    (["--k", "two"], "argument --k: invalid int value: 'two'"),
])
def test_bad_values_end_in_one_line_and_exit_2(flags, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        parser().parse_args(flags)
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("usage: plugin") and err[-1] == f"plugin: error: {message}"


def test_version_comes_from_the_package_metadata(capsys):
    from importlib.metadata import version
    with pytest.raises(SystemExit) as stopped:
        parser().parse_args(["-V"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out.strip() == f"ctsvd-common {version('ctsvd-common')}"


def test_chris_plugin_serialises_the_checked_flags_with_their_plain_types():
    specs = {s["name"]: s for s in serialize(parser())}
    assert set(specs) == {"k", "workers", "percent", "padding_hu"}   # --version is not a parameter
    assert (specs["k"]["type"], specs["k"]["default"]) == ("int", 50)
    assert (specs["padding_hu"]["type"], specs["padding_hu"]["default"]) == ("float", -1024.0)
    assert not math.isnan(specs["percent"]["default"])


def test_an_exclusive_upper_bound():
    p = ArgumentParser(prog="plugin")
    p.add_argument("--percent-removed", type=float, default=0.0, action=Finite, minimum=0, below=100)
    assert p.parse_args(["--percent-removed", "99.5"]).percent_removed == 99.5
    with pytest.raises(SystemExit):
        p.parse_args(["--percent-removed", "100"])
