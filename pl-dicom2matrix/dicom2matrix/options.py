"""pl-dicom2matrix's flags, and the typed settings a run takes from them."""

from __future__ import annotations

from argparse import ArgumentDefaultsHelpFormatter, ArgumentParser, Namespace
from dataclasses import dataclass

from ctsvd_common.cli import Finite, Whole, add_version
from ctsvd_common.stage import Policy, add_policy_flags

parser = ArgumentParser(
    description="Group the DICOM images of the input into stacks (series, orientation, size, spacing, "
    "thickness, image type), sort each stack's slices along the slice normal, convert stored values to "
    "Hounsfield units and write, per stack, a float32 (slices, rows, cols) volume.npy, a manifest.json "
    "and the pixel-less headers later stages need. Localizers, screenshots, secondary captures, "
    "DICOMDIRs, non-image objects, non-CT images and stacks shorter than --min-slices are skipped with "
    "a reason; files that cannot be read fail with a reason and the rest goes on.",
    formatter_class=ArgumentDefaultsHelpFormatter,
)
parser.add_argument("--padding-hu", dest="padding_hu", type=float, default=-1024.0, action=Finite,
                    help="HU given to pixels outside the scanner's field of view (PixelPaddingValue)")
parser.add_argument("--min-slices", dest="min_slices", type=int, default=3, action=Whole, minimum=1,
                    help="stacks with fewer slices are skipped: they are not volumes")
parser.add_argument("--any-modality", dest="any_modality", action="store_true", default=False,
                    help="also convert non-CT images (MR, CR, ...), in their rescaled units instead of HU")
parser.add_argument("--workers", type=int, default=0, action=Whole,
                    help="processes reading the files; 0 uses every core the plugin may use, and more than "
                         "that is capped at it (the container's CPU quota counts)")
add_policy_flags(parser)
add_version(parser, "pl-dicom2matrix")


@dataclass(frozen=True)
class Settings:
    """One run's settings, in the parser's flag order (the report lists them so)."""

    padding_hu: float = -1024.0
    min_slices: int = 3
    any_modality: bool = False
    workers: int = 0
    policy: Policy = Policy()

    @classmethod
    def from_options(cls, options: Namespace) -> "Settings":
        return cls(padding_hu=options.padding_hu, min_slices=options.min_slices,
                   any_modality=options.any_modality, workers=options.workers,
                   policy=Policy.from_options(options))
