"""One dcm_anon run: the cross-flag check, the tag report's child, then the de-identification."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Iterator

from ctsvd_common.stage import Stage, UsageError, run_stage

from dcm_anon import __version__, tag_report
from dcm_anon.options import Settings
from dcm_anon.profile import EXCLUSIVE

# Optional packages pydicom imports when they are installed: requests only to
# download its own test files (it falls back to urllib), Pillow and pylibjpeg
# only to decode compressed pixel data. dcm_anon does neither (pixel data is
# copied as it is), and importing them is 90 ms of a 0.2 s pydicom import that
# every run waits for (measured with the development environment, which has them).
_NOT_NEEDED = ("requests", "PIL", "pylibjpeg")


def run(settings: Settings, inputdir: Path, outputdir: Path) -> int:
    """De-identify ``inputdir`` into ``outputdir``; the exit code (see :mod:`ctsvd_common.stage`)."""
    return run_stage("dcm_anon", __version__, settings.shown(), inputdir, outputdir,
                     lambda stage: _body(stage, settings))


def _body(stage: Stage, settings: Settings) -> None:
    if all(getattr(settings, dest) for dest in EXCLUSIVE):
        raise UsageError("--keep-dates and --shift-dates exclude each other: keep the dates, or move them")
    # The tag report's child starts before pydicom is imported (dcm_anon.tree):
    # its start-up then overlaps ours, on the other CPU, not the de-identification.
    report = None if settings.no_tag_report else tag_report.TagReport(stage)
    try:
        with hidden(*_NOT_NEEDED):
            from dcm_anon.tree import anonymize_tree

        anonymize_tree(stage, settings, report)
    finally:
        if report is not None:
            report.cancel()


@contextlib.contextmanager
def hidden(*modules: str) -> Iterator[None]:
    """Imports of ``modules`` fail as if they were not installed, while the block runs.

    Modules already imported stay as they are; afterwards, others may import them as usual.
    """
    gone = [m for m in modules if m not in sys.modules]
    for module in gone:
        sys.modules[module] = None
    try:
        yield
    finally:
        for module in gone:
            if module in sys.modules and sys.modules[module] is None:
                del sys.modules[module]
