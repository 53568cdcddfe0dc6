"""The walk over a file's raw element stream: every length checked against the bytes really there.

It stays, beside pydicom's reader, for one reason: pydicom reads a file cut
inside a sequence without a word and simply returns fewer elements (a
defined-length sequence whose bytes run out is parsed as far as they go),
so such a file would pass as a shorter whole one. :func:`check_complete`
walks the elements once more and finds the cut. The tests hold it to
pydicom: on a file pydicom reads whole, the walk finds the same elements;
on one cut inside a sequence, pydicom reads without error and the walk
raises. Nothing is decoded, and pixel data is mapped, not read.
"""

from __future__ import annotations

import contextlib
import mmap
import struct
import zlib
from pathlib import Path
from typing import Iterator

from pydicom.datadict import DicomDictionary, keyword_for_tag
from pydicom.dataset import FileDataset
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR

from ctsvd_common.dicom.image import truncated
from ctsvd_common.dicom.inputs import PREAMBLE, BadDicom


def check_complete(path: Path, ds: FileDataset) -> None:
    """Raise :class:`BadDicom` unless the file ``ds`` was read from parses to its end.

    Every element's value must lie within the file, defined-length sequences
    and items must end where their lengths say, undefined-length ones must be
    closed by their delimiters, and encapsulated pixel data must be whole
    fragments closed by a sequence delimiter. Nothing is decoded.
    """
    walk_file(path, little=ds.original_encoding[1] is not False, deflated=is_deflated(ds))


def walk_file(path: Path, little: bool, deflated: bool) -> None:
    """Walk a file's file meta and data set, in the encoding given; raise :class:`BadDicom` with the reason."""
    with mapped(path) as buf:
        walk = ElementWalk(buf, little=True)
        start = walk.file_meta(PREAMBLE + 4 if buf[PREAMBLE:PREAMBLE + 4] == b"DICM" else 0)
        if deflated:
            walk = ElementWalk(_inflate(buf, start), little=True)
            start = 0
        elif not little:
            walk = ElementWalk(buf, little=False)
        walk.top_level(start)


def element_header(raw: bytes, little: bool, implicit: bool) -> tuple[int, int, int]:
    """The tag, header size and value length of the element whose header ``raw`` holds (12 bytes)."""
    order = "<" if little else ">"
    group, elem = struct.unpack_from(order + "HH", raw)
    tag = group << 16 | elem
    if implicit:
        return tag, 8, struct.unpack_from(order + "L", raw, 4)[0]
    if raw[4:6] in _LONG_VRS:
        return tag, 12, struct.unpack_from(order + "L", raw, 8)[0]
    return tag, 8, struct.unpack_from(order + "H", raw, 6)[0]


@contextlib.contextmanager
def mapped(path: Path) -> Iterator[bytes | mmap.mmap]:
    """The file's bytes, mapped rather than read: the pixel data need not be touched."""
    with open(path, "rb") as f:
        try:
            m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):   # a file system without mmap
            yield f.read()
            return
        with m:
            yield m


def is_deflated(ds: FileDataset) -> bool:
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


UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
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


class ElementWalk:
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
                if (group2_only and group != 2) or tag == PIXEL_DATA:
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
        if length == UNDEFINED:
            return tag, self._undefined_length(tag, vr, pos, end)
        stop = pos + length
        if stop > end:
            self._overrun(stop, end, _Cut(tag, self.size - pos, length))
        if vr == b"SQ" or (vr is None and tag in _SQ_TAGS):
            self._items(pos, stop, implicit=vr is None)
        return tag, stop

    def _undefined_length(self, tag: int, vr: bytes | None, pos: int, end: int) -> int:
        if tag == PIXEL_DATA:
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
            if length == UNDEFINED:
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
            if tag != _ITEM or length == UNDEFINED:
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
        if cut.tag == PIXEL_DATA and name == "PixelData":
            return truncated(cut.have, cut.length)
        return f"truncated: the file ends inside {name}"


def _tag_name(tag: int) -> str:
    """A tag's keyword, or (gggg,eeee) for a private or unknown one."""
    return keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
