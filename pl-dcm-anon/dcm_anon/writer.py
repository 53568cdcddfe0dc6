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
from pydicom.multival import MultiValue
from pydicom.uid import UID
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

_UNDEFINED = 0xFFFFFFFF
# Decoded values of these VRs are plain bytes, written as they are (the pixel data, mostly).
_BYTES_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})
# Decoded binary numbers (image attributes the reader checked, mostly): packed directly.
_NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d"}
# Decoded text that is plain ASCII is the same bytes in every character set DICOM allows.
_ASCII_VRS = frozenset({"CS", "SH", "LO", "DA", "TM", "DT", "UI", "AS", "IS", "DS"})
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
            value = elem.value if elem.length != _UNDEFINED and (implicit or elem.VR) else None
        else:
            value = _encoded(elem)
        if value is not None:
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


def _encoded(elem) -> bytes | None:
    """The value of a decoded element as pydicom would write it, for the simple cases; else None."""
    vr, value = elem.VR, elem.value
    if elem.is_undefined_length:
        return None
    if vr in _BYTES_VRS:
        return value if type(value) is bytes and len(value) % 2 == 0 else None
    values = value if isinstance(value, (list, tuple, MultiValue)) else [] if value is None else [value]
    if vr in _NUMBER_FORMATS:
        if not all(type(v) in (int, float) for v in values):
            return None
        try:
            return struct.pack(f"<{len(values)}{_NUMBER_FORMATS[vr]}", *values)
        except struct.error:
            return None
    if vr in _ASCII_VRS and all(type(v) in (str, UID) for v in values):
        text = "\\".join(values)
        if not text.isascii():
            return None
        data = text.encode("ascii")
        return data + (b"\x00" if vr == "UI" else b" ") if len(data) % 2 else data
    return None
