"""pl-dicom2matrix: turn DICOM CT series into float32 HU volumes, manifests and headers."""

import sys
from argparse import Namespace
from pathlib import Path

from chris_plugin import chris_plugin

from ctsvd_common.stage import reports_missing_input
from dicom2matrix.convert import run
from dicom2matrix.options import Settings, parser


@reports_missing_input(parser)
@chris_plugin(
    parser=parser,
    title="DICOM series to Hounsfield volumes",
    category="DICOM",
    min_memory_limit="1Gi",
    min_cpu_limit="1000m",
)
def main(options: Namespace, inputdir: Path, outputdir: Path) -> int:
    return run(Settings.from_options(options), inputdir, outputdir)


if __name__ == "__main__":
    sys.exit(main())
