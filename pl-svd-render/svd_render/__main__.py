"""svd_render: the ChRIS plugin entry point."""

# No "from __future__ import annotations": chris_plugin inspects the real
# annotation types of main().
import sys
from argparse import Namespace
from pathlib import Path

from chris_plugin import chris_plugin
from ctsvd_common.stage import reports_missing_input

from svd_render.options import Settings, parser
from svd_render.run import run


@reports_missing_input(parser)
@chris_plugin(
    parser=parser,
    title="Denoised CT from global or local SVD",
    category="Imaging",
    min_memory_limit="2Gi",
    min_cpu_limit="1000m",
)
def main(options: Namespace, inputdir: Path, outputdir: Path) -> int:
    return run(Settings.from_options(options), inputdir, outputdir)


if __name__ == "__main__":
    sys.exit(main())
