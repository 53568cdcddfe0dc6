"""Walk the input tree, de-identify every DICOM file, write it at the same relative path."""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path

from ctsvd_common.atomic import atomic_path
from ctsvd_common.dicomfiles import BadDicom, NotDicom, input_files, quiet_pydicom, read
from ctsvd_common.stage import InputFailed, InputSkipped, Stage, StageError

from dcm_anon import tag_report
from dcm_anon.deidentify import PROFILE_NAME, Deidentifier, burned_in_annotation
from dcm_anon.profile import RETAIN_OPTIONS, chosen_options, load_profile
from dcm_anon.paths import PathNamer
from dcm_anon.uids import Pseudonyms

PROGRESS_EVERY = 50


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


def anonymize_tree(stage: Stage, options: Namespace) -> None:
    """The body of one dcm_anon run."""
    quiet_pydicom()   # before anything is read: pydicom's warnings quote header values
    retain = chosen_options(options)
    pseudonyms = Pseudonyms.for_run(options.pseudonym_key)
    deidentifier = Deidentifier(load_profile(o.column for o in retain), pseudonyms, retain)
    namer = PathNamer(pseudonyms, map_uids=not deidentifier.keep_uids)
    stage.name_input = namer   # logs and the report name inputs without identity too
    stage.summary["profile"] = PROFILE_NAME
    stage.summary["options"] = {
        **{o.dest: bool(getattr(options, o.dest)) for o in RETAIN_OPTIONS},
        "pseudonym_key": "given (reproducible mapping)" if options.pseudonym_key else "random for this run",
        "tag_report": not options.no_tag_report,
    }

    files = input_files(stage.inputdir)
    tally = _Tally()
    if not files:
        _summarize(stage, tally, found=0)
        raise StageError(f"no DICOM files found in {stage.inputdir}: the folder is empty")

    with stage.timed(f"de-identifying {len(files)} file(s)"):
        for i, path in enumerate(files, 1):
            # Whatever happens stays with this one file. Names in the report may be
            # de-identified, so each entry also says which input it was, by position.
            with stage.guard(path, "file", input=i):
                _one_file(stage, deidentifier, namer, path, tally, i)
            if i % PROGRESS_EVERY == 0 or i == len(files):
                stage.log.info("%s", tally.line(stage, i, len(files)))
    _summarize(stage, tally, found=len(files))

    if not tally.written and not stage.errors:
        raise StageError(f"no DICOM files found in {stage.inputdir} "
                         f"({len(stage.skipped)} other file(s) skipped)")

    if options.no_tag_report:
        stage.summary["tag_report"] = "not made (--no-tag-report)"
    elif tally.written:
        with stage.timed("tag report"):
            made = tag_report.write_tag_report(stage, tally.written)
        stage.summary["tag_report"] = {"folder": tag_report.REPORT_DIR, "files": made}


def _one_file(stage: Stage, deidentifier: Deidentifier, namer: PathNamer, path: Path, tally: _Tally,
              index: int) -> None:
    """De-identify one file, or raise :class:`InputSkipped` / :class:`InputFailed` with why not.

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
    namer.learn(ds, deidentifier.patient_pseudonym(ds))
    try:
        deidentifier.apply(ds)
    except Exception as e:
        raise InputFailed(f"cannot de-identify this file ({type(e).__name__})") from None
    rel = namer.claim(path.relative_to(stage.inputdir))
    dest = stage.outputdir / rel
    try:
        with atomic_path(dest) as tmp:
            # A valid Part 10 file: preamble, "DICM" and the rebuilt file meta.
            ds.save_as(tmp, enforce_file_format=True)
    except Exception as e:
        raise InputFailed(f"cannot write the de-identified file ({type(e).__name__})") from None

    tally.written.append(rel)
    tally.studies.add(str(ds.get("StudyInstanceUID", "")))
    tally.series.add(str(ds.get("SeriesInstanceUID", "")))
    tally.patients.add(str(ds.get("PatientID", "")))
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
