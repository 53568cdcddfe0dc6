"""Walk the input tree, de-identify every DICOM file, write it under a neutral name.

Input names are never reused: exports name files and folders after the
patient, the date, the record number or the original UIDs, in every format
and script. Each output is ``series-NNN/NNNN.dcm``: its series' number (in
the order the series' first file comes in the input) and its own number in
that series (in input order). Logs and the report name an input by its
position and a keyed hash of its path (``ctsvd_common.inputnames``).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ctsvd_common.dicom import BadDicom, NotDicom, quiet_pydicom, read
from ctsvd_common.inputnames import InputNames
from ctsvd_common.stage import InputFailed, InputSkipped, Stage, StageError, output_fault
from ctsvd_common.workers import WorkerPool, capped_workers

from dcm_anon import tag_report
from dcm_anon.deidentify import PROFILE_NAME, Deidentifier, withheld_because
from dcm_anon.pixel_segments import BadStream
from dcm_anon.options import Settings
from dcm_anon.profile import RETAIN_OPTIONS, load_profile
from dcm_anon.uids import Pseudonyms
from dcm_anon.writer import InvalidVR, write_part10

PROGRESS_EVERY = 50
# Below this many files per worker a pool costs more (start-up) than it saves.
MIN_FILES_PER_WORKER = 8
CHUNK = 4
TEMP_PREFIX = ".dcm_anon-"   # hidden: a later stage reading this folder never takes it for input


class _Tally:
    """What was written, for the progress lines and the summary; never the values themselves."""

    def __init__(self) -> None:
        self.written: list[Path] = []     # relative paths
        self.studies: set[str] = set()    # mapped UIDs and pseudonyms, held only to count them
        self.series: set[str] = set()
        self.patients: set[str] = set()

    def line(self, stage: Stage, done: int, total: int) -> str:
        return (f"de-identified {done}/{total} file(s): {len(self.written)} written, "
                f"{len(stage.skipped)} skipped, {len(stage.errors)} failed")


@dataclass
class _Done:
    """One file de-identified (in a worker): where it waits, and its mapped study, series and patient."""

    temp: Path
    counts: tuple[str, str, str] = ("", "", "")


class OutputNames:
    """``series-NNN/NNNN.dcm``: numbered by series (mapped UID) and by file, in input order."""

    def __init__(self) -> None:
        self._series: dict[str, int] = {}
        self._files: dict[int, int] = {}

    def claim(self, series_uid: str) -> Path:
        series = self._series.setdefault(series_uid, len(self._series) + 1)
        self._files[series] = number = self._files.get(series, 0) + 1
        return Path(f"series-{series:03d}") / f"{number:04d}.dcm"


# The worker's state: set before the pool forks, so every worker inherits it.
_JOB: tuple[Deidentifier, Path] | None = None


def anonymize_tree(stage: Stage, settings: Settings, report: tag_report.TagReport | None) -> None:
    """The body of one dcm_anon run (settings checked by the caller); ``report``: the tag report, started."""
    quiet_pydicom()   # before anything is read: pydicom's warnings quote header values
    retain = settings.retain
    pseudonyms = Pseudonyms.for_run(settings.pseudonym_key)
    deidentifier = Deidentifier(load_profile(o.column for o in retain), pseudonyms, retain)
    # Labels keyed like the pseudonyms: reproducible with --pseudonym-key, else only for this run.
    stage.names = InputNames(pseudonyms.key)
    stage.summary["profile"] = PROFILE_NAME
    stage.summary["options"] = {
        **{o.dest: getattr(settings, o.dest) for o in RETAIN_OPTIONS},
        "pseudonym_key": "given (reproducible mapping)" if settings.pseudonym_key else "random for this run",
        "tag_report": not settings.no_tag_report,
    }
    tally = _Tally()
    _deidentify_all(stage, settings.workers, deidentifier, tally)
    if report is not None and tally.written:
        with stage.timed("tag report (after the files)"):
            made = report.finish(tally.written)
        stage.summary["tag_report"] = {"folder": tag_report.REPORT_DIR, "files": made}
    if settings.no_tag_report:
        stage.summary["tag_report"] = "not made (--no-tag-report)"


def _deidentify_all(stage: Stage, requested_workers: int, deidentifier: Deidentifier, tally: _Tally) -> None:
    global _JOB
    files = stage.input_files()
    stage.names.number(f.relative_to(stage.inputdir) for f in files)
    if not files:
        _summarize(stage, tally, found=0)
        raise StageError("no DICOM files found: the input folder is empty")
    names = OutputNames()

    workers = worker_count(stage, requested_workers, len(files))
    stage.summary["workers"] = workers
    _JOB = (deidentifier, stage.outputdir)
    stage.outputdir.mkdir(parents=True, exist_ok=True)
    pool = WorkerPool(workers)
    try:
        outcomes = pool.map(_deidentify_one, files, CHUNK)
        with stage.timed(f"de-identifying {len(files)} file(s) in {workers} process(es)"):
            for i, (path, outcome) in enumerate(zip(files, outcomes), 1):
                # Whatever happens stays with this one file; each entry also says which
                # input it was by position alone, for scripts.
                with stage.guard(path, "file", input=i):
                    _place(stage, names, outcome, tally, i)
                if i % PROGRESS_EVERY == 0 or i == len(files):
                    stage.log.info("%s", tally.line(stage, i, len(files)))
        pool.close()
    finally:
        pool.kill()   # left early (an interrupt, a fatal error): the workers stop now, mid-file
        _JOB = None
        for leftover in stage.outputdir.glob(TEMP_PREFIX + "*"):
            leftover.unlink(missing_ok=True)
    _summarize(stage, tally, found=len(files))

    if not tally.written and not stage.errors:
        raise StageError(f"no DICOM files found in the input folder "
                         f"({len(stage.skipped)} other file(s) skipped)")


def worker_count(stage: Stage, requested: int, files: int) -> int:
    """``requested`` processes (0: one per CPU), no more than the CPUs and the files justify."""
    workers, note = capped_workers(requested)
    if note:
        stage.log.warning("%s", note)
    return max(1, min(workers, files // MIN_FILES_PER_WORKER))


def _deidentify_one(path: Path) -> _Done | BaseException:
    """Worker: de-identify one file into a temporary file of the output folder.

    Returns the error rather than raising it (see :meth:`WorkerPool.map`).
    """
    assert _JOB is not None
    deidentifier, outputdir = _JOB
    try:
        return _deidentify_file(deidentifier, outputdir, path)
    except Exception as e:
        return e


def _deidentify_file(deidentifier: Deidentifier, outputdir: Path, path: Path) -> _Done:
    """Raise :class:`InputSkipped` / :class:`InputFailed` with why not.

    Exception texts are never used: they may quote header values.
    """
    try:
        ds = read(path, pixels=True)   # also checks the file and its pixel data are complete
    except NotDicom as e:
        raise InputSkipped(str(e)) from None   # not copied: it could hold PHI
    except BadDicom as e:
        raise InputFailed(str(e)) from None
    except OSError as e:
        raise InputFailed(f"cannot read the file ({type(e).__name__})") from None

    reason = withheld_because(ds)
    if reason:
        raise InputSkipped(reason)   # withheld on purpose (a media index, a screenshot...), not a failure
    try:
        deidentifier.apply(ds)
    except BadStream as e:
        raise InputFailed(str(e)) from None
    except Exception as e:
        raise InputFailed(f"cannot de-identify this file ({type(e).__name__})") from None
    fd, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".dcm", dir=outputdir)
    try:
        with os.fdopen(fd, "wb") as f:
            # A valid Part 10 file: preamble, "DICM" and the rebuilt file meta.
            write_part10(ds, f)
    except InvalidVR as e:
        Path(temp).unlink(missing_ok=True)
        raise InputFailed(f"corrupt: element {e} has no valid value representation") from None
    except Exception as e:
        Path(temp).unlink(missing_ok=True)
        if output_fault(e, outputdir) is not None:
            raise   # a full or read-only disk: it ends the run (Stage.guard), it is no fault of this file
        raise InputFailed(f"cannot write the de-identified file ({type(e).__name__})") from None
    counts = tuple(str(ds.get(k, "")) for k in ("StudyInstanceUID", "SeriesInstanceUID", "PatientID"))
    return _Done(Path(temp), counts)


def _place(stage: Stage, names: OutputNames, outcome: _Done | BaseException, tally: _Tally, index: int) -> None:
    """Give a de-identified file its name (in input order, so names do not depend on the workers)."""
    if isinstance(outcome, BaseException):
        raise outcome
    rel = names.claim(outcome.counts[1])
    dest = stage.outputdir / rel
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(outcome.temp, dest)   # complete, under its final name at once
    except OSError as e:
        outcome.temp.unlink(missing_ok=True)
        raise InputFailed(f"cannot write the de-identified file ({type(e).__name__})") from None
    tally.written.append(rel)
    study, series, patient = outcome.counts
    tally.studies.add(study)
    tally.series.add(series)
    tally.patients.add(patient)
    stage.output(dest, input=index)


def _summarize(stage: Stage, tally: _Tally, found: int) -> None:
    stage.summary.update({
        "files_found": found,
        "files_written": len(tally.written),
        "files_skipped": len(stage.skipped),
        "files_failed": len(stage.errors),
        "studies": len(tally.studies - {""}),
        "series": len(tally.series - {""}),
        "patients": len(tally.patients - {""}),
    })
