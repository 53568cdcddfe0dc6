"""Walk the input tree, de-identify every DICOM file, write it at the same relative path."""

from __future__ import annotations

import os
import tempfile
from argparse import Namespace
from dataclasses import dataclass, field
from pathlib import Path

from ctsvd_common.dicomfiles import BadDicom, NotDicom, quiet_pydicom, read
from ctsvd_common.stage import InputFailed, InputSkipped, Stage, StageError, output_fault
from ctsvd_common.workers import WorkerPool, capped_workers

from dcm_anon import tag_report
from dcm_anon.deidentify import PROFILE_NAME, Deidentifier, burned_in_annotation
from dcm_anon.paths import PathNamer, date_values, identifying_values
from dcm_anon.profile import RETAIN_OPTIONS, chosen_options, load_profile
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
    """One file de-identified (in a worker): where it waits, and what naming it needs."""

    temp: Path
    identifying: list[str]          # for the output's name; held in memory only
    pseudonym: str
    dates: dict[str, str]           # the file's dates → what its name says instead
    counts: tuple[str, str, str] = ("", "", "")   # mapped study, series, patient
    error: BaseException | None = field(default=None)


# The worker's state: set before the pool forks, so every worker inherits it.
_JOB: tuple[Deidentifier, Path] | None = None


def anonymize_tree(stage: Stage, options: Namespace, report: tag_report.TagReport | None) -> None:
    """The body of one dcm_anon run (options checked by the caller); ``report``: the tag report, started."""
    quiet_pydicom()   # before anything is read: pydicom's warnings quote header values
    retain = chosen_options(options)
    pseudonyms = Pseudonyms.for_run(options.pseudonym_key)
    deidentifier = Deidentifier(load_profile(o.column for o in retain), pseudonyms, retain)
    namer = PathNamer(pseudonyms, map_uids=not deidentifier.keep_uids,
                      reserved=frozenset({stage.report_path.name, tag_report.REPORT_DIR}))
    stage.name_input = namer   # logs and the report name inputs without identity too
    stage.summary["profile"] = PROFILE_NAME
    stage.summary["options"] = {
        **{o.dest: bool(getattr(options, o.dest)) for o in RETAIN_OPTIONS},
        "pseudonym_key": "given (reproducible mapping)" if options.pseudonym_key else "random for this run",
        "tag_report": not options.no_tag_report,
    }
    tally = _Tally()
    _deidentify_all(stage, options, deidentifier, namer, tally)
    if report is not None and tally.written:
        with stage.timed("tag report (after the files)"):
            made = report.finish(tally.written)
        stage.summary["tag_report"] = {"folder": tag_report.REPORT_DIR, "files": made}
    if options.no_tag_report:
        stage.summary["tag_report"] = "not made (--no-tag-report)"


def _deidentify_all(stage: Stage, options: Namespace, deidentifier: Deidentifier, namer: PathNamer,
                    tally: _Tally) -> None:
    global _JOB
    files = stage.input_files()
    if not files:
        _summarize(stage, tally, found=0)
        raise StageError(f"no DICOM files found in {stage.inputdir}: the folder is empty")

    workers = worker_count(stage, options.workers, len(files))
    stage.summary["workers"] = workers
    _JOB = (deidentifier, stage.outputdir)
    stage.outputdir.mkdir(parents=True, exist_ok=True)
    pool = WorkerPool(workers)
    try:
        outcomes = pool.map(_deidentify_one, files, CHUNK)
        with stage.timed(f"de-identifying {len(files)} file(s) in {workers} process(es)"):
            for i, (path, outcome) in enumerate(zip(files, outcomes), 1):
                # Whatever happens stays with this one file. Names in the report may be
                # de-identified, so each entry also says which input it was, by position.
                with stage.guard(path, "file", input=i):
                    _place(stage, namer, path, outcome, tally, i)
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
        raise StageError(f"no DICOM files found in {stage.inputdir} "
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
    if path.name.upper() == "DICOMDIR":
        # A media index: it repeats patient names and IDs in its records and
        # would point at the original UIDs. It is not an image to de-identify.
        raise InputSkipped("DICOMDIR media index: not copied (it lists patient data)")
    try:
        ds = read(path, pixels=True)   # also checks the file and its pixel data are complete
    except NotDicom as e:
        raise InputSkipped(str(e)) from None   # not copied: it could hold PHI
    except BadDicom as e:
        raise InputFailed(str(e)) from None
    except OSError as e:
        raise InputFailed(f"cannot read the file ({type(e).__name__})") from None

    if burned_in_annotation(ds):
        # A screenshot or a scanned form: withheld on purpose, not a failure.
        raise InputSkipped("burned-in annotation: pixel data may hold PHI, not copied")

    # Before the header loses them: its identifying values must not survive in a name.
    identifying, pseudonym = identifying_values(ds), deidentifier.patient_pseudonym(ds)
    dates = deidentifier.dates_in_names(date_values(ds), ds)
    try:
        deidentifier.apply(ds)
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
    return _Done(Path(temp), identifying, pseudonym, dates, counts)


def _place(stage: Stage, namer: PathNamer, path: Path, outcome: _Done | BaseException, tally: _Tally,
           index: int) -> None:
    """Give a de-identified file its name (in input order, so names do not depend on the workers)."""
    if isinstance(outcome, BaseException):
        raise outcome
    namer.learn_values(outcome.identifying, outcome.pseudonym)
    rel = namer.claim(path.relative_to(stage.inputdir), outcome.dates)
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
