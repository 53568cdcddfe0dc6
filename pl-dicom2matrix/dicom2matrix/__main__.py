"""pl-dicom2matrix: turn DICOM CT series into float32 HU volumes, manifests and headers."""

import sys
from argparse import ArgumentDefaultsHelpFormatter, ArgumentParser, Namespace
from pathlib import Path

from chris_plugin import chris_plugin

from ctsvd_common.stage import add_policy_flags, reports_missing_input, run_stage
from dicom2matrix import __version__
from dicom2matrix.convert import convert_tree

parser = ArgumentParser(
    description="Group the DICOM images of the input into stacks (series, orientation, size, spacing, "
    "thickness, image type), sort each stack's slices along the slice normal, convert stored values to "
    "Hounsfield units and write, per stack, a float32 (slices, rows, cols) volume.npy, a manifest.json "
    "and the pixel-less headers later stages need. Localizers, screenshots, secondary captures, "
    "DICOMDIRs, non-image objects, non-CT images and stacks shorter than --min-slices are skipped with "
    "a reason; files that cannot be read fail with a reason and the rest goes on.",
    formatter_class=ArgumentDefaultsHelpFormatter,
)
parser.add_argument("--padding-hu", dest="padding_hu", type=float, default=-1024.0,
                    help="HU given to pixels outside the scanner's field of view (PixelPaddingValue)")
parser.add_argument("--min-slices", dest="min_slices", type=int, default=3,
                    help="stacks with fewer slices are skipped: they are not volumes")
parser.add_argument("--any-modality", dest="any_modality", action="store_true", default=False,
                    help="also convert non-CT images (MR, CR, ...), in their rescaled units instead of HU")
parser.add_argument("--workers", type=int, default=0,
                    help="processes reading the files; 0 uses every core the plugin may use")
add_policy_flags(parser)


@reports_missing_input(parser)
@chris_plugin(
    parser=parser,
    title="DICOM series to Hounsfield volumes",
    category="DICOM",
    min_memory_limit="1Gi",
    min_cpu_limit="1000m",
)
def main(options: Namespace, inputdir: Path, outputdir: Path) -> int:
    return run_stage("dicom2matrix", __version__, options, inputdir, outputdir,
                     lambda stage: convert_tree(stage, options))


if __name__ == "__main__":
    sys.exit(main())
