"""The tag report's child process: run pfdicom_tagExtract over the current folder.

Run by path, with the interpreter of the tag-report environment (see
tag_report.py), never imported there: that environment has pydicom 2 and no
dcm_anon or ctsvd_common, so this file imports nothing but the standard
library and pfdicom_tagExtract.

    python -I tag_extract_child.py OUTDIR STEM FORMATS

It is started before there is anything to list, so that its imports overlap
the de-identification; it starts walking when the line GO arrives on its
standard input, and ends without doing anything when the input closes first.
"""

import sys

EXIT_IMPORT = 4   # pfdicom_tagExtract is not importable in this interpreter
GO = b"go\n"


def extract(outdir: str, stem: str, formats: str) -> int:
    try:
        from pfdicom_tagExtract.__main__ import parserSA
        from pfdicom_tagExtract.pfdicom_tagExtract import pfdicom_tagExtract
    except ImportError:
        return EXIT_IMPORT
    if sys.stdin.buffer.readline() != GO:
        return 0   # cancelled: nothing was written to list
    args = parserSA.parse_args([
        "--inputDir", ".", "--relativeDir",     # paths relative to the linked view
        "--outputDir", outdir,
        "--outputFileType", formats,
        "--outputFileStem", stem,
        "--verbosity", "0",                     # 2 and up need a terminal
        "--threads", "0",
    ])
    args.str_version = ""
    args.str_desc = "dcm_anon tag report"
    # Its status reflects only the last folder walked; the parent checks
    # instead that every folder got its listing.
    pfdicom_tagExtract(vars(args)).run(timerStart=True)
    return 0


if __name__ == "__main__":
    sys.exit(extract(*sys.argv[1:4]))
