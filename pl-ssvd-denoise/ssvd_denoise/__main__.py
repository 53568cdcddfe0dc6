"""The ``ssvd_denoise`` command: ChRIS's entry point, the flags turned into settings for :func:`run`."""

import sys
from argparse import Namespace
from pathlib import Path

from chris_plugin import chris_plugin

from ctsvd_common.stage import reports_missing_input
from ssvd_denoise.options import Settings, parser
from ssvd_denoise.run import run


@reports_missing_input(parser)
@chris_plugin(
    parser=parser,
    title="Local and global SVD denoising of CT series (Spark)",
    category="Imaging",
    min_memory_limit="2Gi",
    min_cpu_limit="2000m",
)
def main(options: Namespace, inputdir: Path, outputdir: Path) -> int:
    return run(Settings.from_options(options), inputdir, outputdir)


if __name__ == "__main__":
    sys.exit(main())
