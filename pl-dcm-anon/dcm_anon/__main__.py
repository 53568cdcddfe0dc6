"""dcm_anon: the ChRIS plugin entry point."""

# No "from __future__ import annotations": chris_plugin inspects the real
# annotation types of main().
import os

# Before numpy is imported (by ctsvd_common): dcm_anon does no linear algebra,
# and OpenBLAS would start a thread per CPU that spin for 0.1 s of CPU at
# start-up, beside the tag report's child.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import contextlib
import logging
import sys
from argparse import ArgumentDefaultsHelpFormatter, ArgumentParser, Namespace
from pathlib import Path
from typing import Iterator

from chris_plugin import chris_plugin
from ctsvd_common.stage import Stage, UsageError, add_policy_flags, reports_missing_input, run_stage

from dcm_anon import __version__, tag_report
from dcm_anon.profile import EXCLUSIVE, RETAIN_OPTIONS

DISPLAY_TITLE = "DICOM de-identification (PS3.15 Basic Profile)"

parser = ArgumentParser(
    description="De-identify the CT images of the input tree by the DICOM PS3.15 Annex E "
                "Basic Application Level Confidentiality Profile and an allow-list of what a CT "
                "image needs (all else is removed), with the profile's options as flags, and "
                "write them as series-NNN/NNNN.dcm. Other files are not copied. UIDs are replaced "
                "consistently across all files; PatientID and PatientName become one pseudonym "
                "per patient. Writes dcm_anon.report.json and a tag listing of the de-identified "
                "files in tag-report/.",
    formatter_class=ArgumentDefaultsHelpFormatter,
)
for _option in RETAIN_OPTIONS:
    parser.add_argument(_option.flag, dest=_option.dest, action="store_true", default=False,
                        help=_option.help)
parser.add_argument("--pseudonym-key", dest="pseudonym_key", type=str, default="",
                    help="secret key for the UID and patient pseudonym mapping; the same key "
                         "gives the same mapping in every run. Empty: a random key for this run "
                         "(the mapping cannot be reproduced)")
parser.add_argument("--no-tag-report", dest="no_tag_report", action="store_true", default=False,
                    help="do not make the tag listing of the output in tag-report/")
parser.add_argument("--workers", dest="workers", type=int, default=0,
                    help="processes that de-identify files side by side; 0: one per CPU this "
                         "container may use (fewer for small inputs)")
add_policy_flags(parser)
parser.add_argument("-V", "--version", action="version", version=f"%(prog)s {__version__}")


def _reportable(options: Namespace) -> Namespace:
    """The options as the run report shows them: the key itself never appears."""
    shown = Namespace(**vars(options))
    if getattr(shown, "pseudonym_key", ""):
        shown.pseudonym_key = "(given, not shown)"
    return shown


@reports_missing_input(parser)
@chris_plugin(
    parser=parser,
    title=DISPLAY_TITLE,
    category="DICOM",
    min_memory_limit="500Mi",
    min_cpu_limit="1000m",
)
def main(options: Namespace, inputdir: Path, outputdir: Path) -> int:
    return run_stage("dcm_anon", __version__, _reportable(options), inputdir, outputdir,
                     lambda stage: _run(stage, options))


def _run(stage: Stage, options: Namespace) -> None:
    if all(getattr(options, dest, False) for dest in EXCLUSIVE):
        raise UsageError("--keep-dates and --shift-dates exclude each other: keep the dates, or move them")
    if options.workers < 0:
        raise UsageError(f"--workers must be 0 (one per CPU) or more, not {options.workers}")
    # The tag report's child starts before pydicom is imported (dcm_anon.tree):
    # its start-up then overlaps ours, on the other CPU, not the de-identification.
    report = None if options.no_tag_report else tag_report.TagReport(stage)
    try:
        with _hidden(*_NOT_NEEDED):
            from dcm_anon.tree import anonymize_tree

        anonymize_tree(stage, options, report)
    finally:
        if report is not None:
            report.cancel()


# Optional packages pydicom imports when they are installed: requests only to
# download its own test files (it falls back to urllib), Pillow and pylibjpeg
# only to decode compressed pixel data. dcm_anon does neither (pixel data is
# copied as it is), and importing them is 90 ms of a 0.2 s pydicom import that
# every run waits for (measured with the development environment, which has them).
_NOT_NEEDED = ("requests", "PIL", "pylibjpeg")


@contextlib.contextmanager
def _hidden(*modules: str) -> Iterator[None]:
    """Imports of ``modules`` fail as if they were not installed, while the block runs.

    Modules already imported stay as they are; afterwards, others may import them as usual.
    """
    hidden = [m for m in modules if m not in sys.modules]
    for module in hidden:
        sys.modules[module] = None
    try:
        yield
    finally:
        for module in hidden:
            if module in sys.modules and sys.modules[module] is None:
                del sys.modules[module]


def command() -> None:
    """The console command: :func:`main`, then an exit without the interpreter's teardown.

    Tearing down the modules a run has loaded (numpy, pydicom) takes 40 ms, a
    twentieth of a run on 300 slices, and does nothing for the outputs: by
    then every file is closed and in place, the run report is written, and
    logging is shut down here as at a normal exit. Any other way out (usage
    error, --help, an exception) exits as usual.
    """
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    command()
