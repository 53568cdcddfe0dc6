"""A per-folder tag listing of the de-identified files, made by pfdicom_tagExtract.

pfdicom_tagExtract 3.1.0 imports only with pftree<4 and pydicom<3, and the
suite runs on pydicom 3, so it lives in a Python environment of its own (the
pins are in tag-report-requirements.txt). Its interpreter is, in this order:

* the one named by ``DCM_ANON_TAG_REPORT_PYTHON`` (the plugin's image sets it);
* ``<prefix>-tagreport/bin/python`` beside the environment dcm_anon runs in
  (``.venv`` -> ``.venv-tagreport``, made by scripts/ensure-venv).

Without one, the tag report fails with one line saying how to make it; the
de-identified files are written all the same.

It costs little because it overlaps the rest of the run: the child is
started first, before dcm_anon imports pydicom, spends its start-up (0.12 s
of CPU, see tag_extract_child.py) while dcm_anon starts up on the other CPU,
then waits for the word to go, which comes once the files are written. It
is one process for the whole output, and it is shown one file per folder:
the one pfdicom_tagExtract would list anyway (the first in name order), so
its walk reads nothing else.

The child (tag_extract_child.py, run by path in isolated mode) imports neither
dcm_anon nor ctsvd_common. It runs there also because importing
pfdicom_tagExtract switches off all logging in the process
(``logging.disable``) and its file walker changes the working directory. The
child runs with a time limit, its output is captured and never shown (we do
not forward a third-party tool's text into our logs), and it sees only a
private temporary folder:

* input: symbolic links to the first DICOM file this run wrote in each
  folder, so no report, no skipped file and no earlier output is ever read;
* output: a temporary folder. Its ``.json`` and ``.html`` files are then
  copied atomically into ``<outputdir>/tag-report/``, the only place written.

pfdicom_tagExtract lists one file per folder (the first in name order), the
folder layout of the output tree is kept.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from ctsvd_common import atomic, contract
from ctsvd_common.stage import Stage

from dcm_anon import tag_extract_child

REPORT_DIR = contract.TAG_REPORT  # later stages know to pass it over
STEM = "dicom-tags"                 # dicom-tags.json, dicom-tags.html, dicom-tags-body.html
FORMATS = "json,html"
PUBLISHED_SUFFIXES = (".json", ".html")
# pfdicom_tagExtract lists directories, not files, at the top of the walk, so
# the linked tree sits one level down and top-level files are still listed.
_TREE = "tree"
PYTHON_ENV_VAR = "DCM_ANON_TAG_REPORT_PYTHON"
SIBLING_SUFFIX = "-tagreport"
REQUIREMENTS = "tag-report-requirements.txt"


class TagReportError(Exception):
    """The tag report could not be made; the message is one safe line."""


def timeout_for(folders: int) -> float:
    """Start-up (matplotlib and friends) plus a generous allowance per folder."""
    return 120.0 + 2.0 * folders


def tag_report_python() -> Path:
    """The interpreter of the tag-report environment, or :class:`TagReportError` saying how to make one."""
    given = os.environ.get(PYTHON_ENV_VAR, "")
    if given:
        # absolute(), not resolve(): a venv's python is a symlink that must stay one.
        python = Path(given).absolute()
        if not _runnable(python):
            raise TagReportError(f"the tag-report environment is missing: {PYTHON_ENV_VAR}={given} "
                                 f"is not a Python interpreter")
        return python
    sibling = Path(sys.prefix + SIBLING_SUFFIX)
    python = sibling / "bin" / "python"
    if not _runnable(python):
        raise TagReportError(
            f"the tag-report environment is missing: make {sibling} (python -m venv {sibling} && "
            f"{sibling}/bin/pip install -r pl-dcm-anon/{REQUIREMENTS}; scripts/ensure-venv does it), "
            f"or set {PYTHON_ENV_VAR} to a Python that has them")
    return python


def _runnable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


class TagReport:
    """The tag report of one run: started early, finished (or cancelled) once the files are written."""

    def __init__(self, stage: Stage):
        self.stage = stage
        self._tmp: Path | None = None
        self._proc: subprocess.Popen | None = None
        self._error: str | None = None
        try:
            self._start()
        except TagReportError as e:
            self._error = str(e)
        except Exception as e:
            self._error = f"cannot make the tag report ({type(e).__name__})"
        if self._error is not None:
            self._cleanup()

    def _start(self) -> None:
        python = tag_report_python()
        self._tmp = Path(tempfile.mkdtemp(prefix="dcm_anon-tag-report-"))
        view = self._tmp / "view"
        view.mkdir()
        # Isolated mode (-I): no PYTHONPATH or user site from our environment, and
        # the child's own folder (dcm_anon/, which has a profile.py) is not on its path.
        command = [str(python), "-I", "-W", "ignore", tag_extract_child.__file__, str(self._tmp / "out"),
                   STEM, FORMATS]
        env = {**os.environ, "MPLBACKEND": "Agg", "MPLCONFIGDIR": str(self._tmp / "mpl")}
        try:
            # Its output is never shown (a third-party tool's text stays out of our logs).
            self._proc = subprocess.Popen(command, cwd=view, env=env, stdin=subprocess.PIPE,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError as e:
            raise TagReportError(f"cannot start the tag-report environment's Python ({type(e).__name__})") from None

    def finish(self, written: list[Path]) -> int:
        """Make ``tag-report/`` for the files ``written`` (relative to the output folder).

        Returns how many report files were published. Any failure is recorded with
        ``stage.fail("tag-report", ...)``; the de-identified files stay as they are.
        """
        try:
            if self._error is not None:
                raise TagReportError(self._error)
            return self._make(written)
        except TagReportError as e:
            self.stage.fail(REPORT_DIR, str(e))
        except Exception as e:   # e.g. no symbolic links on this file system, disk full
            self.stage.fail(REPORT_DIR, f"cannot make the tag report ({type(e).__name__})")
        finally:
            self.cancel()
        return 0

    def cancel(self) -> None:
        """Stop the child if it still runs (nothing to report) and remove the temporary folder."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdin is not None:
                proc.stdin.close()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def _make(self, written: list[Path]) -> int:
        assert self._tmp is not None and self._proc is not None
        outputdir = Path(self.stage.outputdir).resolve()
        first: dict[Path, Path] = {}
        for rel in sorted(Path(r) for r in written):
            first.setdefault(rel.parent, rel)
        for rel in first.values():
            link = self._tmp / "view" / _TREE / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(outputdir / rel)
        self._run(limit=timeout_for(len(first)))

        made = self._tmp / "out" / _TREE
        missing = [f for f in first if not (made / f / f"{STEM}.json").is_file()]
        published = 0
        for src in sorted(made.rglob("*")) if made.is_dir() else ():
            if src.is_symlink() or not src.is_file() or src.suffix not in PUBLISHED_SUFFIXES:
                continue
            atomic.copy_file(src, outputdir / REPORT_DIR / src.relative_to(made))
            published += 1
        if missing:
            raise TagReportError(f"pfdicom_tagExtract listed {len(first) - len(missing)} of "
                                 f"{len(first)} folder(s); no listing for {len(missing)}")
        return published

    def _run(self, limit: float) -> None:
        proc = self._proc
        # A blocking wait, ended by a timer if it runs over: Popen.wait(timeout)
        # polls with sleeps of up to 50 ms, longer than the listing itself takes (10 ms).
        overrun = threading.Event()
        timer = threading.Timer(limit, lambda: (overrun.set(), proc.kill()))
        timer.start()
        try:
            try:
                proc.stdin.write(tag_extract_child.GO)
                proc.stdin.close()
            except BrokenPipeError:   # it ended before being told to go: its exit code says why
                pass
            proc.wait()
        finally:
            timer.cancel()
        if overrun.is_set():
            raise TagReportError(f"pfdicom_tagExtract did not finish within {limit:.0f} s")
        if proc.returncode == tag_extract_child.EXIT_IMPORT:
            raise TagReportError(f"pfdicom_tagExtract cannot be imported by {proc.args[0]}: "
                                 f"install pl-dcm-anon/{REQUIREMENTS} there")
        if proc.returncode != 0:
            raise TagReportError(f"pfdicom_tagExtract failed (exit code {proc.returncode})")
