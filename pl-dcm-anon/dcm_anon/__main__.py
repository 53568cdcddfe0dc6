"""dcm_anon: the ChRIS plugin entry point."""

# No "from __future__ import annotations": chris_plugin inspects the real
# annotation types of main().
import os

# Before numpy is imported (by ctsvd_common): dcm_anon does no linear algebra,
# and OpenBLAS would start a thread per CPU that spin for 0.1 s of CPU at
# start-up, beside the tag report's child.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import logging
import sys
from argparse import Namespace
from pathlib import Path

from chris_plugin import chris_plugin
from ctsvd_common.stage import reports_missing_input

from dcm_anon.options import Settings, parser
from dcm_anon.run import run

DISPLAY_TITLE = "DICOM de-identification (PS3.15 Basic Profile)"


@reports_missing_input(parser)
@chris_plugin(
    parser=parser,
    title=DISPLAY_TITLE,
    category="DICOM",
    min_memory_limit="500Mi",
    min_cpu_limit="1000m",
)
def main(options: Namespace, inputdir: Path, outputdir: Path) -> int:
    return run(Settings.from_options(options), inputdir, outputdir)


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
