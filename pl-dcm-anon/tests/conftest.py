"""Fixtures for the dcm_anon tests (the data itself is built in ctsvd_testdata.anon_tree)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ctsvd_testdata.anon_tree import Series, write_series


@pytest.fixture
def series(tmp_path: Path) -> Series:
    return write_series(tmp_path / "in")


@pytest.fixture
def outdir(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    return out


@pytest.fixture
def run(caplog):
    """Run the plugin as its ChRIS entry point does, on these flags; returns the exit code."""
    from dcm_anon.options import Settings, parser
    from dcm_anon.run import run as run_dcm_anon

    def _run(inputdir: Path, outputdir: Path, *flags: str) -> int:
        caplog.set_level(logging.INFO)
        return run_dcm_anon(Settings.from_options(parser.parse_args(list(flags))), inputdir, outputdir)

    return _run
