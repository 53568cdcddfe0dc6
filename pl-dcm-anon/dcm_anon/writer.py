"""Writing a de-identified file, fast where the bytes can be copied.

Most of a de-identified CT slice is kept exactly as read: its elements are
still pydicom "raw" elements, bytes that were never decoded. pydicom writes
each of them through a per-element buffer; here a raw element of a little
endian dataset whose encoding does not change is written directly (its
header, then its bytes), and everything else (decoded or changed elements,
sequences, undefined lengths) by pydicom's own element writer. The output
is byte for byte what ``Dataset.save_as(enforce_file_format=True)`` writes
(a test holds the two against each other); other encodings use
``save_as`` itself.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from pydicom.dataset import FileDataset
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.uid import UID
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

_UNDEFINED = 0xFFFFFFFF
# Decoded values of these VRs are plain bytes, written as they are (the pixel data, mostly).
_BYTES_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})
_SHORT = struct.Struct("<HH2sH")         # tag, VR, 2-byte length
_LONG = struct.Struct("<HH2sHL")         # tag, VR, reserved, 4-byte length
_IMPLICIT = struct.Struct("<HHL")         # tag, 4-byte length


def write_part10(ds: FileDataset, fp: BinaryIO) -> None:
    """Write ``ds`` as a DICOM Part 10 file to the open binary file ``fp``."""
    syntax = UID(ds.file_meta.TransferSyntaxUID)
    implicit = syntax.is_implicit_VR
    if (not syntax.is_little_endian or syntax.is_deflated or ds.original_encoding != (implicit, True)
            or ds.original_character_set != ds._character_set):
        ds.save_as(fp, enforce_file_format=True)   # pydicom re-encodes; nothing to copy
        return
    out = DicomFileLike(fp)
    out.is_little_endian, out.is_implicit_VR = True, implicit
    out.write(ds.preamble or b"\x00" * 128)
    out.write(b"DICM")
    write_file_meta_info(out, ds.file_meta, enforce_standard=True)
    encoding = ds.get("SpecificCharacterSet", "iso8859")
    for tag in sorted(ds.keys()):
        if tag.element == 0 and tag.group > 6:
            continue                               # retired group lengths: pydicom skips them too
        elem = ds.get_item(tag)
        if elem.is_raw:
            copy = elem.value is not None and elem.length != _UNDEFINED and (implicit or elem.VR)
        else:
            copy = (elem.VR in _BYTES_VRS and type(elem.value) is bytes and len(elem.value) % 2 == 0
                    and not elem.is_undefined_length)
        if copy:
            value = elem.value
            if implicit:
                fp.write(_IMPLICIT.pack(tag.group, tag.element, len(value)))
            elif elem.VR in EXPLICIT_VR_LENGTH_32:
                fp.write(_LONG.pack(tag.group, tag.element, elem.VR.encode(), 0, len(value)))
            elif len(value) <= 0xFFFF:
                fp.write(_SHORT.pack(tag.group, tag.element, elem.VR.encode(), len(value)))
            else:
                write_data_element(out, elem, encoding)   # pydicom's rule for an over-long value
                continue
            fp.write(value)
        else:
            write_data_element(out, elem, encoding)
