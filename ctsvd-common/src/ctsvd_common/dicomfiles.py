"""Reading the DICOM files of an input tree, with a one-line reason for every failure.

Two kinds of failure are told apart, because users treat them differently:

* :class:`NotDicom`: the file is something else (a README, a PNG, a JSON
  sidecar, a DICOMDIR). It is passed over and noted; it is not an error.
* :class:`BadDicom`: the file is DICOM but cannot be used (truncated,
  corrupt, nonsense image attributes, pixel data shorter than the image).
  That is an error.

A file must parse to its end: pydicom reads a file cut inside a sequence
without a word and simply returns fewer elements, so :func:`check_complete`
walks the raw element stream once more and checks every length against the
bytes that are really there.

Reasons are composed here from facts we checked, never copied from a
library's exception text, which may quote header values, and so PHI. They
name attributes by keyword or tag, never by value.
"""

from __future__ import annotations

import contextlib
import logging
import os
import mmap
import struct
import warnings
import zlib
from pathlib import Path
from typing import Iterator

import pydicom
from pydicom.datadict import DicomDictionary, keyword_for_tag
from pydicom.dataset import Dataset, FileDataset
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR

from ctsvd_common import dicomvalues, walk
from ctsvd_common.dicomvalues import BadValue

_PREAMBLE = 128
MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"


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


# -- reading one file ---------------------------------------------------------

def read(path: Path, *, pixels: bool = True) -> FileDataset:
    """Read one file as DICOM, or raise :class:`NotDicom` or :class:`BadDicom`.

    The whole file is always checked to be complete (:func:`check_complete`);
    with ``pixels`` the pixel data is read too and checked against the image
    attributes (:func:`check_pixel_data`).
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise NotDicom("not a DICOM file (empty)")
    ds = _read_part10(path, pixels) if _has_dicm_prefix(path) else _read_bare(path, pixels)
    if str(ds.file_meta.get("MediaStorageSOPClassUID", "")) == MEDIA_DIRECTORY:
        raise NotDicom("DICOMDIR: a media directory, not an image")
    if "TransferSyntaxUID" not in ds.file_meta:
        raise BadDicom("no TransferSyntaxUID in the file meta information: not a usable DICOM file")
    check_complete(path, ds)
    if "SOPInstanceUID" not in ds:
        raise BadDicom("no SOPInstanceUID: not a usable DICOM object")
    if pixels and "PixelData" in ds:
        check_pixel_data(ds)
    return ds


def _has_dicm_prefix(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(_PREAMBLE + 4)
    return len(head) == _PREAMBLE + 4 and head[_PREAMBLE:] == b"DICM"


def _read_part10(path: Path, pixels: bool, source=None) -> FileDataset:
    """Read a Part-10 file from ``source`` (its path, or an open file of it)."""
    try:
        return pydicom.dcmread(path if source is None else source, stop_before_pixels=not pixels)
    except Exception as e:  # pydicom raises many types for a cut or corrupt file
        error = type(e).__name__
    _explain_unreadable(path)
    raise BadDicom(f"unreadable DICOM, truncated or corrupt ({error})")


def _explain_unreadable(path: Path) -> None:
    """Raise the walk's more precise reason for a file pydicom could not read, if it finds one."""
    try:
        syntax = pydicom.filereader.read_file_meta_info(path).TransferSyntaxUID
        little, deflated = syntax.is_little_endian, syntax.is_deflated
    except Exception:   # no usable file meta: the walk would only guess the encoding
        return
    _walk_file(path, little, deflated)


def _read_bare(path: Path, pixels: bool, source=None) -> FileDataset:
    """A file without the Part 10 preamble counts if it holds SOP identity."""
    try:
        ds = pydicom.dcmread(path if source is None else source, force=True, stop_before_pixels=not pixels)
    except Exception:
        raise NotDicom("not a DICOM file (no DICM prefix)") from None
    if not _looks_like_raw_dataset(ds):
        raise NotDicom("not a DICOM file (no DICM prefix)")
    if "TransferSyntaxUID" not in ds.file_meta:
        # A bare dataset: its encoding is what pydicom detected while reading it.
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (
            pydicom.uid.ImplicitVRLittleEndian if implicit else
            pydicom.uid.ExplicitVRLittleEndian if little else pydicom.uid.ExplicitVRBigEndian)
    return ds


def _looks_like_raw_dataset(ds: Dataset) -> bool:
    try:
        return bool(str(ds.SOPClassUID).startswith("1.2.840.10008.") and ds.SOPInstanceUID)
    except Exception:
        return False


# -- the image attributes and the pixel data ----------------------------------

def invalid_image_attribute(ds: Dataset) -> str | None:
    """Why the image-pixel attributes of ``ds`` cannot describe an image, or None.

    Each attribute is checked on its own, so the reason names the one that is
    wrong ("NumberOfFrames is not a valid integer"); values are never quoted.
    """
    try:
        for keyword in ("Rows", "Columns"):
            _at_least(ds, keyword, 1, required=True)
        bits = _at_least(ds, "BitsAllocated", 1, required=True)
        if bits != 1 and (bits % 8 or bits > 64):
            raise BadValue("BitsAllocated is not 1 or a multiple of 8")
        stored = _at_least(ds, "BitsStored", 1)
        if stored is not None and stored > bits:
            raise BadValue("BitsStored is larger than BitsAllocated")
        high = _at_least(ds, "HighBit", 0)
        if high is not None and not (stored or 1) - 1 <= high < bits:
            raise BadValue("HighBit does not fit BitsStored and BitsAllocated")
        pixel_representation = _at_least(ds, "PixelRepresentation", 0)
        if pixel_representation is not None and pixel_representation > 1:
            raise BadValue("PixelRepresentation is neither 0 nor 1")
        _at_least(ds, "SamplesPerPixel", 1)
        _at_least(ds, "NumberOfFrames", 1)
        dicomvalues.number(ds, "RescaleIntercept")
        if dicomvalues.number(ds, "RescaleSlope") == 0:
            raise BadValue("RescaleSlope is zero")
    except BadValue as e:
        return str(e)
    return None


def _at_least(ds: Dataset, keyword: str, low: int, required: bool = False) -> int | None:
    if required and keyword not in ds:
        raise BadValue(f"{keyword} is missing")
    value = dicomvalues.integer(ds, keyword)
    if value is None:
        if required:
            raise BadValue(f"{keyword} is empty")
        return None
    if value < low:
        raise BadValue(f"{keyword} is {'negative' if low == 0 else 'not a positive integer'}")
    return value


def expected_pixel_bytes(ds: Dataset) -> int:
    """Bytes of native (uncompressed) pixel data the image attributes call for.

    The same count as ``pydicom.pixels.utils.get_expected_length``: 1-bit
    pixels packed eight to a byte, and YBR_FULL_422 storing two samples per
    pixel, not three (4:2:2 subsampling, PS3.3 C.7.6.3.1.2). Absent optional
    attributes take their defaults (one sample, one frame).
    """
    frames = int(ds.get("NumberOfFrames") or 1)
    samples = int(ds.get("SamplesPerPixel") or 1)
    bits = int(ds.BitsAllocated)
    n = int(ds.Rows) * int(ds.Columns) * samples * frames
    length = (n + 7) // 8 if bits == 1 else n * (bits // 8)
    if str(ds.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
        length = length // 3 * 2
    return length


def check_pixel_data(ds: Dataset) -> None:
    """Raise :class:`BadDicom` when the image attributes are unusable or native pixel data is short.

    Encapsulated (compressed) pixel data is not decoded here: that its
    fragments are whole is checked by :func:`check_complete`.
    """
    reason = invalid_image_attribute(ds)
    if reason:
        raise BadDicom(reason)
    if _encapsulated(ds):
        return
    need = expected_pixel_bytes(ds)
    have = len(ds.PixelData)
    if have < need:
        raise BadDicom(f"truncated pixel data ({have} of {need} bytes)")


def _encapsulated(ds: Dataset) -> bool:
    try:
        return ds.file_meta.TransferSyntaxUID.is_encapsulated
    except (AttributeError, ValueError):  # a private transfer syntax: go by the element's encoding
        return bool(ds["PixelData"].is_undefined_length)


# -- a lean header reader ------------------------------------------------------

class Header:
    """What one read of a file's header found, and where the pixels start.

    ``ds``: the header (from the lean walk, only the wanted attributes, as
    pydicom raw elements converted only when read); ``size``: bytes in the
    file; ``offset``: where the element after the header starts (the pixel
    data, if any); ``after``: its first 12 bytes (tag, VR and length);
    ``prefix``: the file's bytes before it, when they are a valid pixel-less
    Part-10 file as they stand, else None.
    """

    def __init__(self, ds: Dataset, size: int, offset: int, after: bytes, prefix: bytes):
        self.ds, self.size, self.offset, self.after, self.prefix = ds, size, offset, after, prefix


def read_header(path: Path, keywords: Iterator[str] | set[str]) -> Header:
    """Read a file's header, up to its pixel data, once; or raise :class:`NotDicom` / :class:`BadDicom`.

    A little-endian Part-10 file is walked element by element and only
    ``keywords`` are kept (about twice as fast as pydicom's parse, which
    converts and keeps every element: a converter reading thousands of slices
    wants some thirty attributes of each); every element on the way is
    checked as :func:`check_complete` checks it. Everything else (no preamble,
    deflated, big endian, multi-frame functional groups) is read by pydicom
    in full, with the same reasons as :func:`read`.
    """
    path = Path(path)
    header = _lean_header(path, keywords)
    if header is None:
        header = _pydicom_header(path)
    if str(header.ds.file_meta.get("MediaStorageSOPClassUID", "")) == MEDIA_DIRECTORY:
        raise NotDicom("DICOMDIR: a media directory, not an image")
    return header


def _pydicom_header(path: Path) -> Header:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise NotDicom("not a DICOM file (empty)")
        part10 = _has_dicm_prefix(path)
        ds = _read_part10(path, False, f) if part10 else _read_bare(path, False, f)
        offset = f.tell()
        after = f.read(12)
        prefix = None
        if part10 and not _deflated(ds):
            f.seek(0)
            prefix = f.read(offset)
    return Header(ds, size, offset, after, prefix)


def _lean_header(path: Path, keywords: Iterator[str] | set[str]) -> Header | None:
    """The walk of :func:`read_header`, or None where it does not apply."""
    wanted = {tag for k in keywords if (tag := pydicom.datadict.tag_for_keyword(k)) is not None}
    with _mapped(Path(path)) as buf:
        if len(buf) < _PREAMBLE + 4 or buf[_PREAMBLE:_PREAMBLE + 4] != b"DICM":
            return None
        walk = _Walk(buf, little=True)
        meta, start = walk.collect(_PREAMBLE + 4, wanted | {0x00020010, 0x00020002}, implicit=False,
                                   group2_only=True)
        syntax = pydicom.uid.UID(_text(meta.get(0x00020010)))
        # Native little endian, and every compressed syntax (its data set is explicit VR little endian).
        if not syntax.is_transfer_syntax or syntax.is_deflated or not syntax.is_little_endian:
            return None
        found, offset = walk.collect(start, wanted | _FUNCTIONAL_GROUPS, implicit=syntax.is_implicit_VR)
        if _FUNCTIONAL_GROUPS & found.keys():
            return None
        ds = Dataset(found)
        ds.file_meta = pydicom.dataset.FileMetaDataset(meta)
        ds.set_original_encoding(syntax.is_implicit_VR, True, ds._character_set)
        return Header(ds, len(buf), offset, bytes(buf[offset:offset + 12]), bytes(buf[:offset]))


_FUNCTIONAL_GROUPS = {0x52009229, 0x52009230}   # Shared and PerFrame FunctionalGroupsSequence


def _text(elem) -> str:
    return elem.value.decode("ascii", "replace").strip(" \0") if elem is not None else ""


# -- the whole file is there ---------------------------------------------------

def check_complete(path: Path, ds: FileDataset) -> None:
    """Raise :class:`BadDicom` unless the file ``ds`` was read from parses to its end.

    Every element's value must lie within the file, defined-length sequences
    and items must end where their lengths say, undefined-length ones must be
    closed by their delimiters, and encapsulated pixel data must be whole
    fragments closed by a sequence delimiter. Nothing is decoded.
    """
    _walk_file(path, little=ds.original_encoding[1] is not False, deflated=_deflated(ds))


def _walk_file(path: Path, little: bool, deflated: bool) -> None:
    with _mapped(path) as buf:
        walk = _Walk(buf, little=True)
        start = walk.file_meta(_PREAMBLE + 4 if buf[_PREAMBLE:_PREAMBLE + 4] == b"DICM" else 0)
        if deflated:
            walk = _Walk(_inflate(buf, start), little=True)
            start = 0
        elif not little:
            walk = _Walk(buf, little=False)
        walk.top_level(start)


@contextlib.contextmanager
def _mapped(path: Path) -> Iterator[bytes | mmap.mmap]:
    """The file's bytes, mapped rather than read: the pixel data need not be touched."""
    with open(path, "rb") as f:
        try:
            m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):   # a file system without mmap
            yield f.read()
            return
        with m:
            yield m


def _deflated(ds: FileDataset) -> bool:
    try:
        return ds.file_meta.TransferSyntaxUID.is_deflated
    except ValueError:   # not a known transfer syntax: pydicom read it as not deflated
        return False


def _inflate(buf: bytes | mmap.mmap, start: int) -> bytes:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        body = inflater.decompress(buf[start:])
    except zlib.error:
        raise BadDicom("corrupt: the deflated data set cannot be inflated") from None
    if not inflater.eof:
        raise BadDicom("truncated: the deflated data set ends early")
    return body


_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_LONG_VRS = frozenset(vr.encode() for vr in EXPLICIT_VR_LENGTH_32)   # 2 reserved bytes, 4-byte length
_SQ_TAGS = frozenset(tag for tag, entry in DicomDictionary.items() if entry[0] == "SQ")
_KNOWN_VRS = frozenset(vr.value.encode() for vr in VR if len(vr.value) == 2)


class _Cut(Exception):
    """The file ends inside an element. ``tag``, ``have``, ``length``: the innermost one cut in its value."""

    def __init__(self, tag: int | None = None, have: int = 0, length: int = 0):
        super().__init__()
        self.tag, self.have, self.length = tag, have, length


class _Malformed(Exception):
    """The structure contradicts itself; the message says how, in our words."""


class _Walk:
    """One pass over the raw element stream of a buffer, checking lengths and delimiters.

    It reads what pydicom reads: an explicit VR element whose VR is not two
    capital letters is taken as implicit VR (some writers switch inside
    sequences), and an undefined-length UN is an implicit VR sequence
    (PS3.5 6.2.2).
    """

    def __init__(self, buf: bytes | mmap.mmap, little: bool):
        self.buf, self.size = buf, len(buf)
        order = "<" if little else ">"
        self._tag = struct.Struct(order + "HH").unpack_from
        self._tag_length = struct.Struct(order + "HHL").unpack_from
        self._tag_vr_length = struct.Struct(order + "HH2sH").unpack_from
        self._length = struct.Struct(order + "L").unpack_from
        self._sequence_end = struct.pack(order + "HHL", 0xFFFE, 0xE0DD, 0)

    def file_meta(self, pos: int) -> int:
        """Walk the file meta elements (group 0002, explicit VR little endian); where the data set starts."""
        try:
            while pos + 2 <= self.size and self.buf[pos:pos + 2] == b"\x02\x00":
                _, pos = self._element(pos, self.size, implicit=False)
        except _Cut:
            raise BadDicom("truncated: the file ends inside the file meta information") from None
        except _Malformed as e:
            raise BadDicom(f"corrupt: {e}, in the file meta information") from None
        return pos

    def collect(self, pos: int, wanted: set[int], implicit: bool,
                group2_only: bool = False) -> tuple[dict, int]:
        """Walk top-level elements from ``pos`` up to the pixel data (or, with ``group2_only``,
        the end of the file meta); keep the ``wanted`` ones as raw elements. Returns them and
        where the walk stopped."""
        from pydicom.dataelem import RawDataElement
        from pydicom.tag import BaseTag

        found = {}
        if not group2_only and pos < self.size:
            implicit = self._implicit_at(pos)
        try:
            while pos + 8 <= self.size:
                group, elem = self._tag(self.buf, pos)
                tag = group << 16 | elem
                if (group2_only and group != 2) or tag == _PIXEL_DATA:
                    break
                start = pos
                tag, pos = self._element(pos, self.size, implicit)
                if not implicit:
                    self._known_vr(start)
                if tag in wanted:
                    vr = self.buf[start + 4:start + 6]
                    explicit = not implicit and b"AA" <= vr <= b"ZZ"
                    value = start + (12 if explicit and vr in _LONG_VRS else 8)
                    found[tag] = RawDataElement(BaseTag(tag), vr.decode() if explicit else None, pos - value,
                                                bytes(self.buf[value:pos]), value, not explicit, True)
        except _Cut as cut:
            raise BadDicom(self._cut_reason(start, cut)) from None
        except _Malformed as e:
            raise BadDicom(f"corrupt: {e}, in {self._name_at(start)}") from None
        if 0 < self.size - pos < 8:
            raise BadDicom("truncated: the file ends inside an element header")
        return found, pos

    def top_level(self, pos: int) -> None:
        """Walk the data set from ``pos`` to the end of the buffer; raise :class:`BadDicom` with the reason."""
        implicit = self._implicit_at(pos)
        while pos < self.size:
            start = pos
            if self.size - start < 8:   # pydicom ignores these bytes; they are a cut header
                raise BadDicom("truncated: the file ends inside an element header")
            try:
                tag, pos = self._element(pos, self.size, implicit)
                if not implicit:
                    self._known_vr(start)
            except _Cut as cut:
                raise BadDicom(self._cut_reason(start, cut)) from None
            except _Malformed as e:
                raise BadDicom(f"corrupt: {e}, in {self._name_at(start)}") from None
            if tag == _ITEM_END:
                raise BadDicom("corrupt: an item delimiter outside any item")

    def _known_vr(self, pos: int) -> None:
        """A top-level element of an explicit VR data set has one of the standard's VRs: pydicom would
        keep any other two bytes as its VR, and nothing could read the element back."""
        if self.buf[pos:pos + 2] != b"\xfe\xff" and self.buf[pos + 4:pos + 6] not in _KNOWN_VRS:
            raise _Malformed("an element has no valid value representation (VR)")

    def _implicit_at(self, pos: int) -> bool:
        """Explicit VR when the first element's VR is two capital letters, as pydicom decides."""
        vr = self.buf[pos + 4:pos + 6]
        return not (len(vr) == 2 and 0x40 < vr[0] < 0x5B and 0x40 < vr[1] < 0x5B)

    # -- elements, items, fragments ----------------------------------------

    def _need(self, stop: int, end: int) -> None:
        """Bytes up to ``stop`` must exist, and lie within the enclosing item ending at ``end``."""
        if stop > end:
            self._overrun(stop, end)

    def _overrun(self, stop: int, end: int, cut: _Cut | None = None) -> None:
        if stop > self.size:
            raise cut or _Cut()
        raise _Malformed("an element runs past the end of its item")

    def _element(self, pos: int, end: int, implicit: bool) -> tuple[int, int]:
        """Check the element at ``pos``; return its tag and where the next one starts.

        The hot loop of the walk (one call per element), so the header is read inline.
        """
        if pos + 8 > end:
            self._overrun(pos + 8, end)
        vr = None
        if implicit:
            group, elem, length = self._tag_length(self.buf, pos)
            pos += 8
        else:
            group, elem, vr, length = self._tag_vr_length(self.buf, pos)
            if group == 0xFFFE or not b"AA" <= vr <= b"ZZ":
                # Items and delimiters have no VR; other non-letters mean implicit VR here.
                vr = None
                group, elem, length = self._tag_length(self.buf, pos)
                pos += 8
            elif vr in _LONG_VRS:
                if pos + 12 > end:
                    self._overrun(pos + 12, end)
                length = self._length(self.buf, pos + 8)[0]
                pos += 12
            else:
                pos += 8
        tag = group << 16 | elem
        if length == _UNDEFINED:
            return tag, self._undefined_length(tag, vr, pos, end)
        stop = pos + length
        if stop > end:
            self._overrun(stop, end, _Cut(tag, self.size - pos, length))
        if vr == b"SQ" or (vr is None and tag in _SQ_TAGS):
            self._items(pos, stop, implicit=vr is None)
        return tag, stop

    def _undefined_length(self, tag: int, vr: bytes | None, pos: int, end: int) -> int:
        if tag == _PIXEL_DATA:
            return self._fragments(pos, end)
        if vr is None or vr in (b"SQ", b"UN"):
            return self._items(pos, end, implicit=vr != b"SQ", delimited=True)
        # Any other value of undefined length runs to the next sequence delimiter, as pydicom reads it.
        found = self.buf.find(self._sequence_end, pos, end)
        if found < 0:
            raise _Cut() if end >= self.size else _Malformed("a value of undefined length is not closed")
        return found + 8

    def _items(self, pos: int, end: int, implicit: bool, delimited: bool = False) -> int:
        """The items of a sequence: up to ``end`` exactly, or with ``delimited`` up to its delimiter."""
        while delimited or pos < end:
            self._need(pos + 8, end)
            group, elem, length = self._tag_length(self.buf, pos)
            tag, pos = group << 16 | elem, pos + 8
            if tag == _SEQUENCE_END and delimited:
                return pos
            if tag != _ITEM:
                raise _Malformed("a sequence holds something other than items")
            if length == _UNDEFINED:
                pos = self._delimited_item(pos, end, implicit)
            else:
                self._need(pos + length, end)
                self._item(pos, pos + length, implicit)
                pos += length
        return pos

    def _item(self, pos: int, end: int, implicit: bool) -> None:
        """The elements of a defined-length item, which must end exactly at ``end``."""
        while pos < end:
            tag, pos = self._element(pos, end, implicit)
            if tag == _ITEM_END:
                raise _Malformed("an item delimiter inside an item of defined length")

    def _delimited_item(self, pos: int, end: int, implicit: bool) -> int:
        """The elements of an undefined-length item, up to and including its delimiter."""
        tag = None
        while tag != _ITEM_END:
            if pos >= end:
                raise _Cut() if end >= self.size else _Malformed("an item of undefined length is not closed")
            tag, pos = self._element(pos, end, implicit)
        return pos

    def _fragments(self, pos: int, end: int) -> int:
        """Encapsulated pixel data: defined-length items (offset table, fragments) and a sequence delimiter."""
        while True:
            self._need(pos + 8, end)
            group, elem, length = self._tag_length(self.buf, pos)
            tag, pos = group << 16 | elem, pos + 8
            if tag == _SEQUENCE_END:
                return pos
            if tag != _ITEM or length == _UNDEFINED:
                raise _Malformed("the encapsulated pixel data holds something other than fragments")
            self._need(pos + length, end)
            pos += length

    # -- naming what was found, without values ------------------------------

    def _name_at(self, pos: int) -> str:
        if pos + 4 > self.size:
            return "an element header"
        group, elem = self._tag(self.buf, pos)
        return _tag_name(group << 16 | elem)

    def _cut_reason(self, start: int, cut: _Cut) -> str:
        name = self._name_at(start)
        if cut.tag == _PIXEL_DATA and name == "PixelData":
            return f"truncated pixel data ({cut.have} of {cut.length} bytes)"
        return f"truncated: the file ends inside {name}"


def _tag_name(tag: int) -> str:
    """A tag's keyword, or (gggg,eeee) for a private or unknown one."""
    return keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
