"""pl-svd-render: publish a denoised CT series (global SVD or local SVD), with pictures, a report and DICOM."""

import sys
from argparse import ArgumentDefaultsHelpFormatter, ArgumentParser, Namespace
from pathlib import Path

from chris_plugin import chris_plugin

from ctsvd_common.stage import add_policy_flags, reports_missing_input, run_stage
from svd_render import __version__
from svd_render.render import render_all

parser = ArgumentParser(
    description="Publish one denoised result per series: the global SVD rebuilt at a rank "
    "(slice i = (U[i,:r]·s[:r]) @ Vt[:r]), or the locally denoised local.npy. Writes a derived DICOM series, "
    "an index.html with a slice viewer (one JPEG strip per window), montages comparing original, global and "
    "local, a scree plot and render.json. Input: the output of pl-ssvd-denoise.",
    formatter_class=ArgumentDefaultsHelpFormatter,
)
parser.add_argument("--use", type=str, default="auto",
                    help="the result to publish: local (local.npy, denoised by SVDs of small patches), global "
                    "(the truncated SVD of the whole series, at --rank), or auto (local when the series has it)")
parser.add_argument("--rank", type=str, default="auto",
                    help="global: components to keep, a whole number of 1 or more (clipped to k, with a warning), "
                    "or 'auto' (Gavish-Donoho optimal hard threshold); with local published, the global comparison's")
parser.add_argument("--percent-removed", dest="percent_removed", type=float, default=0.0,
                    help="instead of --rank: remove the last x %% of the k components, 0 <= x < 100 (0 = not used)")
parser.add_argument("--windows", type=str, default="auto",
                    help="display windows for the PNGs: auto (the scanner's window and bone when the series has "
                    "one, mediastinum and lung otherwise), or presets lung, mediastinum, bone, header (the "
                    "scanner's), or NAME:CENTER:WIDTH in HU, comma-separated")
parser.add_argument("--montage-slices", dest="montage_slices", type=int, default=4,
                    help="slices shown in each montage of original, denoised results and differences (1 or more)")
parser.add_argument("--no-dicom", dest="no_dicom", action="store_true",
                    help="do not write the derived DICOM series")
parser.add_argument("--pngs", action="store_true",
                    help="also write every slice of every window as a PNG of its own (png/WINDOW/); by default "
                    "the slice viewer reads one JPEG strip per window")
parser.add_argument("--npy", action="store_true",
                    help="also write the published result as denoised.npy (float32 HU)")
add_policy_flags(parser)


@reports_missing_input(parser)
@chris_plugin(
    parser=parser,
    title="Denoised CT from global or local SVD",
    category="Imaging",
    min_memory_limit="2Gi",
    min_cpu_limit="1000m",
)
def main(options: Namespace, inputdir: Path, outputdir: Path) -> int:
    return run_stage("svd_render", __version__, options, inputdir, outputdir,
                     lambda stage: render_all(stage, options))


if __name__ == "__main__":
    sys.exit(main())
