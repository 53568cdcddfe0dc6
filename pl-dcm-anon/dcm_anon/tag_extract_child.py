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
import types

EXIT_IMPORT = 4   # pfdicom_tagExtract is not importable in this interpreter
GO = b"go\n"


class _Unused:
    """Stands in for a class that is created at import time but never used by the listing."""

    def __init__(self, *args, **kwargs):
        pass

    @staticmethod
    def seed(*args, **kwargs):
        pass


def _stand_ins() -> None:
    """Empty modules for what pfdicom_tagExtract 3.1.0 imports but the listing never uses.

    matplotlib/pylab draw the images of its --imageFile output, faker makes the
    fake names of pfdicom's anonymising mode, pudb is a debugger: none is asked
    for here, and importing them is 70 % of the child's start-up (about 0.7 s of
    CPU that would otherwise compete with the de-identification). Were the
    listing ever to use one, it would fail loudly and the tag report with it.
    """
    def stub(name: str, **attributes) -> types.ModuleType:
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        sys.modules[name] = module
        return module

    stub("matplotlib", use=lambda *args, **kwargs: None).cm = stub("matplotlib.cm")
    stub("pylab")
    stub("pudb")
    stub("faker", Faker=_Unused)


def extract(outdir: str, stem: str, formats: str) -> int:
    _stand_ins()
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
