"""Writing a de-identified file, fast where the bytes can be copied.

Most of a de-identified CT slice is kept exactly as read: its elements are
still pydicom "raw" elements, bytes that were never decoded. pydicom writes
each of them through a per-element buffer; here a raw element of a little
endian dataset whose encoding does not change is written directly (its
header, then its bytes), and so are the simple decoded values (numbers,
ASCII text and names, bytes), sequences made of such elements, and the
file meta information (pydicom's writer for it cost a third of the whole
file's). Anything else (an element of undefined length, a value that needs
its character set, an ambiguous VR) goes through pydicom's own element
writer. The output is byte for byte what
``Dataset.save_as(enforce_file_format=True)`` writes (a test holds the two
against each other); other encodings use ``save_as`` itself.
"""
from __future__ import annotations

import struct
from typing import BinaryIO, Iterator

from pydicom.dataset import FileDataset, FileMetaDataset, validate_file_meta
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.multival import MultiValue
from pydicom.uid import UID
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR, PersonName

_UNDEFINED = 0xFFFFFFFF
# Decoded values of these VRs are plain bytes, written as they are (the pixel data, mostly).
_BYTES_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})
# Decoded binary numbers (image attributes the reader checked, mostly): packed directly.
_NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d"}
# Decoded text that is plain ASCII is the same bytes in every character set DICOM allows
# (so are person names of one component group, that is without "=").
_ASCII_VRS = frozenset({"CS", "SH", "LO", "DA", "TM", "DT", "UI", "AS", "IS", "DS"})
_SHORT = struct.Struct("<HH2sH")         # tag, VR, 2-byte length
_LONG = struct.Struct("<HH2sHL")         # tag, VR, reserved, 4-byte length
_TAG_LENGTH = struct.Struct("<HHL")      # tag, 4-byte length: implicit VR, items and delimiters
_META_GROUP_LENGTH = 0x00020000
_KNOWN_VRS = frozenset(vr.value for vr in VR)


class InvalidVR(Exception):
    """An element read from the input carries no valid value representation (a corrupt file).
    Written as it is, it would make a file that pydicom cannot read back."""

    def __init__(self, tag: int):
        super().__init__(f"({tag >> 16:04X},{tag & 0xFFFF:04X})")


_ITEM_UNDEFINED = _TAG_LENGTH.pack(0xFFFE, 0xE000, _UNDEFINED)
_ITEM_END = _TAG_LENGTH.pack(0xFFFE, 0xE00D, 0)
_SEQUENCE_END = _TAG_LENGTH.pack(0xFFFE, 0xE0DD, 0)


def write_part10(ds: FileDataset, fp: BinaryIO) -> None:
    """Write ``ds`` as a DICOM Part 10 file to the open binary file ``fp``; :class:`InvalidVR` first
    if an element could not be read back."""
    check_vrs(ds)
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
    meta = _file_meta(ds.file_meta)
    if meta is None:
        write_file_meta_info(out, ds.file_meta, enforce_standard=True)
    else:
        fp.write(meta)
    encoding = ds.get("SpecificCharacterSet", "iso8859")
    for tag, elem in _elements(ds):
        data = _element(tag, elem, implicit, raw=True)
        if data is None:
            write_data_element(out, elem, encoding)   # pydicom's rules for the rest
        else:
            fp.write(data[0])
            fp.write(data[1])   # not joined: the pixel data is most of the file


def check_vrs(ds, top: bool = True) -> None:
    """Raise :class:`InvalidVR` for the first element in a sequence item, at any depth, whose VR is none
    of the standard's. Top-level elements were checked as the file was read
    (``ctsvd_common.dicom.elements.check_complete``)."""
    for elem in ds.values():   # as stored: raw elements stay raw
        if not top and elem.VR is not None and elem.VR not in _KNOWN_VRS:
            raise InvalidVR(elem.tag)
        if elem.VR == "SQ" and not elem.is_raw:
            for item in elem.value or ():
                check_vrs(item, top=False)


def _elements(ds) -> Iterator[tuple[int, object]]:
    """The elements to write, in tag order (ints sort in C; tags compare in Python)."""
    for tag in sorted(ds.keys(), key=int):
        if tag.element == 0 and tag.group > 6:
            continue                               # retired group lengths: pydicom skips them too
        yield tag, ds.get_item(tag)


def _element(tag: int, elem, implicit: bool, raw: bool) -> tuple[bytes, bytes] | None:
    """One element as pydicom writes it (header, value), for the cases handled here; else None.

    ``raw``: raw elements may be copied (their encoding is the output's).
    """
    if elem.is_raw:
        value = elem.value if raw and elem.length != _UNDEFINED and (implicit or elem.VR) else None
    elif elem.VR == "SQ":
        return _sequence(tag, elem, implicit)
    else:
        value = _encoded(elem)
    header = None if value is None else _header(tag, elem.VR, len(value), implicit)
    return None if header is None else (header, value)


def _sequence(tag: int, elem, implicit: bool) -> tuple[bytes, bytes] | None:
    """A sequence as ``write_data_element`` writes it: items of defined length (unless read as
    undefined), the sequence's own length as it was read; None if any element inside is not handled here."""
    parts = []
    for item in elem.value or ():
        # pydicom decodes (and re-encodes) the raw elements of an item read in another encoding.
        raw = item.original_encoding == (implicit, True) and item.original_character_set == item._character_set
        body = []
        for item_tag, item_elem in _elements(item):
            data = _element(item_tag, item_elem, implicit, raw)
            if data is None:
                return None
            body += data
        body = b"".join(body)
        if getattr(item, "is_undefined_length_sequence_item", False):
            parts += (_ITEM_UNDEFINED, body, _ITEM_END)
        else:
            parts += (_TAG_LENGTH.pack(0xFFFE, 0xE000, len(body)), body)
    value = b"".join(parts)
    if elem.is_undefined_length:
        return _header(tag, "SQ", _UNDEFINED, implicit), value + _SEQUENCE_END
    return _header(tag, "SQ", len(value), implicit), value


def _header(tag: int, vr: str | None, length: int, implicit: bool) -> bytes | None:
    """Tag, VR and length as pydicom writes them; None for a value too long for its VR's short length."""
    group, element = tag >> 16, tag & 0xFFFF
    if implicit:
        return _TAG_LENGTH.pack(group, element, length)
    if vr in EXPLICIT_VR_LENGTH_32:
        return _LONG.pack(group, element, vr.encode(), 0, length)
    if length <= 0xFFFF:
        return _SHORT.pack(group, element, vr.encode(), length)
    return None


def _file_meta(meta: FileMetaDataset) -> bytes | None:
    """The file meta information as ``write_file_meta_info(enforce_standard=True)`` writes it, or None.

    Like it, this completes ``meta`` first (version, implementation UID and
    name when missing) and sets its group length. None when an element is
    not one of the simple cases of :func:`_encoded`.
    """
    validate_file_meta(meta, enforce_standard=True)
    parts = []
    for tag, elem in _elements(meta):
        if tag == _META_GROUP_LENGTH:
            continue
        data = _element(tag, elem, implicit=False, raw=False)
        if data is None:
            return None
        parts += data
    body = b"".join(parts)
    meta.FileMetaInformationGroupLength = len(body)
    return _SHORT.pack(2, 0, b"UL", 4) + struct.pack("<L", len(body)) + body


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
    if (vr in _ASCII_VRS and all(type(v) in (str, UID) for v in values)
            or vr == "PN" and all(type(v) is PersonName and "=" not in str(v) for v in values)):
        text = "\\".join(map(str, values))
        if not text.isascii():
            return None
        data = text.encode("ascii")
        return data + (b"\x00" if vr == "UI" else b" ") if len(data) % 2 else data
    return None
