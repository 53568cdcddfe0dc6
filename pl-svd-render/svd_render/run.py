"""One render run: every series of the input folder rendered, and the index page linking them."""

from __future__ import annotations

from pathlib import Path

from ctsvd_common import atomic, contract, dicom
from ctsvd_common.contract import relative_reason
from ctsvd_common.stage import InputFailed, Stage, StageError, UsageError, run_stage
from svd_render import __version__, images, rank, report
from svd_render.options import Settings
from svd_render.render import render_series
from svd_render.results import PRESENT


def run(settings: Settings, inputdir: Path, outputdir: Path) -> int:
    """Render ``inputdir`` (pl-ssvd-denoise's output) into ``outputdir``; return the exit code."""
    return run_stage("svd_render", __version__, settings, inputdir, outputdir,
                     lambda stage: render_all(stage, settings))


def render_all(stage: Stage, settings: Settings) -> None:
    wanted_rank, windows = check(settings)
    dicom.quiet_pydicom()
    series = [d for d in contract.find_series(stage.inputdir) if any((d / f).exists() for f in PRESENT.values())]
    if not series:
        raise StageError(f"no denoised or decomposed series found in the input folder: expected folders with "
                         f"{contract.MANIFEST} and {contract.SVD_JSON} or {contract.LOCAL} written by pl-ssvd-denoise")
    entries = []
    for i, series_dir in enumerate(series, 1):
        rel = series_dir.relative_to(stage.inputdir)
        with stage.timed(f"series {i}/{len(series)}: {rel}"), stage.guard(series_dir, "series"):
            try:
                facts = render_series(stage, series_dir, stage.outputdir / rel, settings, wanted_rank, windows)
            except contract.ContractError as e:
                raise InputFailed(relative_reason(e, series_dir)) from None
            entries.append({"name": str(rel), "href": f"{rel}/index.html", "facts": facts})
    if entries:
        atomic.write_text(stage.outputdir / "index.html", report.index_page("SVD-denoised CT series", entries))
    stage.summary["series"] = len(entries)


def check(settings: Settings) -> tuple[int | None, list]:
    """Refuse a --rank or --windows the run cannot use, before any work; return the rank asked for and the
    windows. --rank with --percent-removed is refused here too: argparse checks one flag at a time."""
    try:
        return rank.parse_rank(settings.rank, settings.percent_removed), images.parse_windows(settings.windows)
    except ValueError as e:
        raise UsageError(str(e)) from None
