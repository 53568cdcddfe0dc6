"""The tag report's child process: run pfdicom_tagExtract over the current folder.

Run by path, with the interpreter of the tag-report environment (see
tag_report.py), never imported there: that environment has pydicom 2 and no
dcm_anon or ctsvd_common, so this file imports nothing but the standard
library and pfdicom_tagExtract.

    python -I tag_extract_child.py OUTDIR STEM FORMATS

It is started before there is anything to list, so that its imports (and
the making of the extractor, whose logger reads source files to name its
callers) overlap dcm_anon's own start-up; it starts walking when the line GO
arrives on its standard input, and ends without doing anything when the
input closes first. What is left after GO takes about 10 ms for one folder.
"""

import os
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


# Imported by pydicom 2 only if they are there, for its pixel decoders.
_ABSENT = ("numpy", "PIL")


def _stand_ins() -> None:
    """Empty modules for what pfdicom_tagExtract 3.1.0 imports but the listing never uses.

    matplotlib/pylab draw the images of its --imageFile output, faker makes the
    fake names of pfdicom's anonymising mode, pudb is a debugger: none is asked
    for here, and importing them is 70 % of the child's start-up (about 0.7 s of
    CPU that would otherwise compete with the de-identification). Were the
    listing ever to use one, it would fail loudly and the tag report with it.
    numpy and Pillow are made to look not installed: pydicom 2 then leaves
    out its pixel decoders, which a listing of the header never calls
    (another 0.07 s of CPU).
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
    for name in _ABSENT:
        sys.modules[name] = None   # "import numpy" raises ImportError, as when it is not installed


def extract(outdir: str, stem: str, formats: str) -> int:
    _stand_ins()
    try:
        from pfdicom_tagExtract.__main__ import parserSA
        from pfdicom_tagExtract.pfdicom_tagExtract import pfdicom_tagExtract
    except ImportError:
        return EXIT_IMPORT
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
    # Made before the files are there: it only takes the settings (the walk is in run()).
    extractor = pfdicom_tagExtract(vars(args))
    if sys.stdin.buffer.readline() != GO:
        return 0   # cancelled: nothing was written to list
    # Its status reflects only the last folder walked; the parent checks
    # instead that every folder got its listing.
    extractor.run(timerStart=True)
    return 0


if __name__ == "__main__":
    code = extract(*sys.argv[1:4])
    # Ended without the interpreter's teardown (25 ms, while dcm_anon waits):
    # pfdicom_tagExtract writes and closes each listing file with "with open".
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
