"""What an input file is: DICOM, not DICOM (:class:`NotDicom`) or unusable DICOM (:class:`BadDicom`).

Also the input tree's file list, and keeping pydicom from writing header
values into logs.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pydicom

from ctsvd_common import walk

PREAMBLE = 128                                 # bytes before "DICM" in a Part-10 file
MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"       # the SOP class of a DICOMDIR


class NotDicom(Exception):
    """The file is not DICOM."""


class BadDicom(Exception):
    """The file is DICOM but cannot be used."""


def quiet_pydicom() -> None:
    """Stop pydicom from echoing header values in warnings and log lines.

    Its validation warnings quote the offending value ("Invalid value for VR
    PN: 'DOE^JANE'"), which would put PHI into logs.
    """
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    pydicom.config.settings.writing_validation_mode = pydicom.config.WARN
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"pydicom\..*")


def input_files(root: Path) -> list[Path]:
    """Every regular file below ``root``, sorted, as :func:`ctsvd_common.walk.input_tree` finds them;
    a stage uses ``Stage.input_files``, which also reports what was left out."""
    return walk.input_tree(root).files


def has_dicm_prefix(path: Path) -> bool:
    """Does the file start as a Part-10 file: a 128-byte preamble and "DICM"?"""
    with open(path, "rb") as f:
        head = f.read(PREAMBLE + 4)
    return len(head) == PREAMBLE + 4 and head[PREAMBLE:] == b"DICM"
