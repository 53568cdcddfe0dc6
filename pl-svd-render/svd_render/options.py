"""svd_render's flags (the parser ChRIS reads) and the typed settings a run takes."""

from __future__ import annotations

from argparse import ArgumentDefaultsHelpFormatter, ArgumentParser, Namespace
from dataclasses import dataclass

from ctsvd_common.cli import Finite, Whole, add_version
from ctsvd_common.stage import Policy, add_policy_flags

USES = ("auto", "global", "local")


parser = ArgumentParser(
    description="Publish one denoised result per series: the global SVD rebuilt at a rank "
    "(slice i = (U[i,:r]·s[:r]) @ Vt[:r]), or the locally denoised local.npy. Writes a derived DICOM series, "
    "an index.html with a slice viewer (one JPEG strip per window), montages comparing original, global and "
    "local, a scree plot and render.json. Input: the output of pl-ssvd-denoise.",
    formatter_class=ArgumentDefaultsHelpFormatter,
)
parser.add_argument("--use", type=str, default="auto", choices=USES,
                    help="the result to publish: local (local.npy, denoised by SVDs of small patches), global "
                    "(the truncated SVD of the whole series, at --rank), or auto (local when the series has it)")
parser.add_argument("--rank", type=str, default="auto",
                    help="global: components to keep, a whole number of 1 or more (clipped to k, with a warning), "
                    "or 'auto' (Gavish-Donoho optimal hard threshold); with local published, the global comparison's")
parser.add_argument("--percent-removed", dest="percent_removed", type=float, default=0.0, action=Finite, minimum=0,
                    below=100, help="instead of --rank: remove the last x %% of the k components, 0 <= x < 100 (0 = not used)")
parser.add_argument("--windows", type=str, default="auto",
                    help="display windows for the PNGs: auto (the scanner's window and bone when the series has "
                    "one, mediastinum and lung otherwise), or presets lung, mediastinum, bone, header (the "
                    "scanner's), or NAME:CENTER:WIDTH in HU, comma-separated")
parser.add_argument("--montage-slices", dest="montage_slices", type=int, default=4, action=Whole, minimum=1,
                    help="slices shown in each montage of original, denoised results and differences (1 or more)")
parser.add_argument("--no-dicom", dest="no_dicom", action="store_true",
                    help="do not write the derived DICOM series")
parser.add_argument("--pngs", action="store_true",
                    help="also write every slice of every window as a PNG of its own (png/WINDOW/); by default "
                    "the slice viewer reads one JPEG strip per window")
parser.add_argument("--npy", action="store_true",
                    help="also write the published result as denoised.npy (float32 HU)")
add_policy_flags(parser)
add_version(parser, "pl-svd-render")


@dataclass(frozen=True)
class Settings:
    """One run's flags, typed; the fields follow the parser's flags, as the run report lists them.

    ``rank`` and ``windows`` stay the text given: the run checks them
    (:func:`svd_render.run.check`) with ``--percent-removed`` beside them.
    """

    use: str = "auto"
    rank: str = "auto"
    percent_removed: float = 0.0
    windows: str = "auto"
    montage_slices: int = 4
    no_dicom: bool = False
    pngs: bool = False
    npy: bool = False
    policy: Policy = Policy()

    @classmethod
    def from_options(cls, options: Namespace) -> "Settings":
        return cls(use=options.use, rank=options.rank, percent_removed=options.percent_removed,
                   windows=options.windows, montage_slices=options.montage_slices, no_dicom=options.no_dicom,
                   pngs=options.pngs, npy=options.npy, policy=Policy.from_options(options))
