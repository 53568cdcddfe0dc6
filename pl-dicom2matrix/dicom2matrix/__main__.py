"""pl-dicom2matrix: turn DICOM CT series into float32 HU volumes, manifests and headers."""

import sys
from argparse import ArgumentDefaultsHelpFormatter, ArgumentParser, Namespace
from pathlib import Path

from chris_plugin import chris_plugin

from ctsvd_common.stage import run_stage
from dicom2matrix import __version__
from dicom2matrix.convert import convert_tree

parser = ArgumentParser(
    description="Group the DICOM images of the input by series, sort each series' slices along the "
    "slice normal, convert stored values to Hounsfield units and write, per series, a float32 "
    "(slices, rows, cols) volume.npy, a manifest.json and the pixel-less headers later stages need.",
    formatter_class=ArgumentDefaultsHelpFormatter,
)
parser.add_argument("--padding-hu", dest="padding_hu", type=float, default=-1024.0,
                    help="HU given to pixels outside the scanner's field of view (PixelPaddingValue)")


@chris_plugin(
    parser=parser,
    title="DICOM series to Hounsfield volumes",
    category="DICOM",
    min_memory_limit="1Gi",
    min_cpu_limit="1000m",
)
def main(options: Namespace, inputdir: Path, outputdir: Path) -> int:
    return run_stage("dicom2matrix", __version__, options, inputdir, outputdir,
                     lambda stage: convert_tree(stage, options.padding_hu))


if __name__ == "__main__":
    sys.exit(main())
