"""A per-folder tag listing of the de-identified files, made by pfdicom_tagExtract.

pfdicom_tagExtract runs in a child process (``python -m dcm_anon.tag_report``)
because importing it switches off all logging in the process
(``logging.disable``) and its file walker changes the working directory. The
child runs with a time limit, its output is captured and never shown (we do
not forward a third-party tool's text into our logs), and it sees only a
private temporary folder:

* input: symbolic links to exactly the DICOM files this run wrote, so no
  report, no skipped file and no earlier output is ever read;
* output: a temporary folder. Its ``.json`` and ``.html`` files are then
  copied atomically into ``<outputdir>/tag-report/``, the only place written.

pfdicom_tagExtract lists one file per folder (the first in name order), the
folder layout of the output tree is kept.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ctsvd_common import atomic, contract
from ctsvd_common.stage import Stage

REPORT_DIR = contract.TAG_REPORT  # later stages know to pass it over
STEM = "dicom-tags"                 # dicom-tags.json, dicom-tags.html, dicom-tags-body.html
FORMATS = "json,html"
PUBLISHED_SUFFIXES = (".json", ".html")
# pfdicom_tagExtract lists directories, not files, at the top of the walk, so
# the linked tree sits one level down and top-level files are still listed.
_TREE = "tree"
_EXIT_IMPORT = 4


class TagReportError(Exception):
    """The tag report could not be made; the message is one safe line."""


def timeout_for(folders: int) -> float:
    """Start-up (matplotlib and friends) plus a generous allowance per folder."""
    return 120.0 + 2.0 * folders


def write_tag_report(stage: Stage, written: list[Path]) -> int:
    """Make ``tag-report/`` for the files ``written`` (relative to the output folder).

    Returns how many report files were published. Any failure is recorded with
    ``stage.fail("tag-report", ...)``; the de-identified files stay as they are.
    """
    try:
        return _make(stage.outputdir, written)
    except TagReportError as e:
        stage.fail(REPORT_DIR, str(e))
    except Exception as e:   # e.g. no symbolic links on this file system, disk full
        stage.fail(REPORT_DIR, f"cannot make the tag report ({type(e).__name__})")
    return 0


def _make(outputdir: Path, written: list[Path]) -> int:
    outputdir = Path(outputdir).resolve()
    folders = sorted({Path(rel).parent for rel in written})
    with tempfile.TemporaryDirectory(prefix="dcm_anon-tag-report-") as tmp:
        tmp = Path(tmp)
        view, staged = tmp / "view", tmp / "out"
        for rel in written:
            link = view / _TREE / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(outputdir / rel)
        env = {**os.environ, "MPLBACKEND": "Agg", "MPLCONFIGDIR": str(tmp / "mpl"),
               "PYTHONWARNINGS": "ignore", "PYTHONPATH": _import_path()}
        limit = timeout_for(len(folders))
        try:
            proc = subprocess.run([sys.executable, "-m", "dcm_anon.tag_report", str(staged)],
                                  cwd=view, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=limit)
        except subprocess.TimeoutExpired:
            raise TagReportError(f"pfdicom_tagExtract did not finish within {limit:.0f} s") from None
        except OSError as e:
            raise TagReportError(f"cannot start pfdicom_tagExtract ({type(e).__name__})") from None
        if proc.returncode == _EXIT_IMPORT:
            raise TagReportError("pfdicom_tagExtract cannot be imported "
                                 "(install pfdicom_tagExtract 3.1.0 with pftree<4 and pydicom<3)")
        if proc.returncode != 0:
            raise TagReportError(f"pfdicom_tagExtract failed (exit code {proc.returncode})")

        made = staged / _TREE
        missing = [f for f in folders if not (made / f / f"{STEM}.json").is_file()]
        published = 0
        for src in sorted(made.rglob("*")) if made.is_dir() else ():
            if src.is_symlink() or not src.is_file() or src.suffix not in PUBLISHED_SUFFIXES:
                continue
            atomic.copy_file(src, outputdir / REPORT_DIR / src.relative_to(made))
            published += 1
    if missing:
        raise TagReportError(f"pfdicom_tagExtract listed {len(folders) - len(missing)} of "
                             f"{len(folders)} folder(s); no listing for {len(missing)}")
    return published


def _import_path() -> str:
    """PYTHONPATH for the child: it must import dcm_anon and ctsvd_common as we did."""
    import site

    import ctsvd_common
    import dcm_anon
    site_dirs = {str(Path(d).resolve()) for d in [*site.getsitepackages(), site.getusersitepackages()]}
    roots = [str(Path(m.__file__).resolve().parent.parent) for m in (dcm_anon, ctsvd_common)]
    # Installed packages are found anyway; only source checkouts need a hint.
    roots = [r for r in roots if r not in site_dirs]
    return os.pathsep.join(dict.fromkeys([*roots, *filter(None, [os.environ.get("PYTHONPATH")])]))


def _extract(outdir: str) -> int:
    """Child process: run pfdicom_tagExtract over the current folder into ``outdir``."""
    try:
        from pfdicom_tagExtract.__main__ import parserSA
        from pfdicom_tagExtract.pfdicom_tagExtract import pfdicom_tagExtract
    except ImportError:
        return _EXIT_IMPORT
    args = parserSA.parse_args([
        "--inputDir", ".", "--relativeDir",     # paths relative to the linked view
        "--outputDir", outdir,
        "--outputFileType", FORMATS,
        "--outputFileStem", STEM,
        "--verbosity", "0",                     # 2 and up need a terminal
        "--threads", "0",
    ])
    args.str_version = ""
    args.str_desc = "dcm_anon tag report"
    # Its status reflects only the last folder walked; the parent checks
    # instead that every folder got its listing.
    pfdicom_tagExtract(vars(args)).run(timerStart=True)
    return 0


if __name__ == "__main__":
    sys.exit(_extract(sys.argv[1]))
