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
def parser():
    from dcm_anon.__main__ import parser
    return parser


@pytest.fixture
def run(parser, caplog):
    """Run the plugin the ChRIS template way; returns the exit code."""
    from dcm_anon.__main__ import main

    def _run(inputdir: Path, outputdir: Path, *flags: str) -> int:
        caplog.set_level(logging.INFO)
        return main(parser.parse_args(list(flags)), inputdir, outputdir)

    return _run
