"""Reading a file's header once, fast, and where its pixel data starts: :func:`read_header`.

A converter reading thousands of slices wants some thirty attributes of
each, and where its native pixel values lie, without parsing the rest.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Iterator

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID

from ctsvd_common.dicom.elements import PIXEL_DATA, UNDEFINED, ElementWalk, element_header, is_deflated, mapped
from ctsvd_common.dicom.image import check_pixel_length
from ctsvd_common.dicom.inputs import MEDIA_DIRECTORY, PREAMBLE, NotDicom, has_dicm_prefix
from ctsvd_common.dicom.reader import read_bare, read_part10

_FUNCTIONAL_GROUPS = {0x52009229, 0x52009230}   # Shared and PerFrame FunctionalGroupsSequence


class Header:
    """What one read of a file's header found, and where the pixels start.

    ``ds``: the header (from the lean walk, only the wanted attributes, as
    pydicom raw elements converted only when read); ``size``: bytes in the
    file; ``offset``: where the element after the header starts (the pixel
    data, if any); ``after``: its first 12 bytes (tag, VR and length);
    ``prefix``: the file's bytes before it, when they are a valid pixel-less
    Part-10 file as they stand, else None.
    """

    def __init__(self, ds: Dataset, size: int, offset: int, after: bytes, prefix: bytes | None):
        self.ds, self.size, self.offset, self.after, self.prefix = ds, size, offset, after, prefix

    def stops_at_pixel_data(self) -> bool:
        """Is the element where the header ends the Pixel Data (not Float Pixel Data, not the end)?"""
        if len(self.after) < 8:
            return False
        if self.ds.file_meta.get("TransferSyntaxUID", UID("")).is_deflated:
            return True   # the stream is compressed: pydicom itself will find out
        group, element = struct.unpack("<HH" if self._little else ">HH", self.after[:4])
        return (group << 16 | element) == PIXEL_DATA

    def native_pixels(self) -> int:
        """Where the values of native (uncompressed) pixel data start in the file.

        The header must hold the Image Pixel attributes (Rows, Columns,
        BitsAllocated, SamplesPerPixel, PhotometricInterpretation,
        NumberOfFrames), checked first. Raises :class:`~ctsvd_common.dicom.inputs.BadDicom` when the file
        holds fewer bytes of them than the image attributes call for.
        """
        _, header_size, length = element_header(self.after, self._little, implicit=self.ds.original_encoding[0])
        start = self.offset + header_size
        check_pixel_length(self.ds, min(length if length != UNDEFINED else 0, max(self.size - start, 0)))
        return start

    @property
    def _little(self) -> bool:
        return self.ds.original_encoding[1] is not False


def read_header(path: Path, keywords: Iterator[str] | set[str]) -> Header:
    """Read a file's header, up to its pixel data, once; or raise ``NotDicom`` / ``BadDicom``.

    A little-endian Part-10 file is walked element by element and only
    ``keywords`` are kept (about twice as fast as pydicom's parse, which
    converts and keeps every element); every element on the way is checked
    as :func:`~ctsvd_common.dicom.elements.check_complete` checks it.
    Everything else (no preamble, deflated, big endian, multi-frame
    functional groups) is read by pydicom in full, with the same reasons as
    :func:`~ctsvd_common.dicom.reader.read`.
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
        part10 = has_dicm_prefix(path)
        ds = read_part10(path, False, f) if part10 else read_bare(path, False, f)
        offset = f.tell()
        after = f.read(12)
        prefix = None
        if part10 and not is_deflated(ds):
            f.seek(0)
            prefix = f.read(offset)
    return Header(ds, size, offset, after, prefix)


def _lean_header(path: Path, keywords: Iterator[str] | set[str]) -> Header | None:
    """The walk of :func:`read_header`, or None where it does not apply."""
    wanted = {tag for k in keywords if (tag := pydicom.datadict.tag_for_keyword(k)) is not None}
    with mapped(Path(path)) as buf:
        if len(buf) < PREAMBLE + 4 or buf[PREAMBLE:PREAMBLE + 4] != b"DICM":
            return None
        walk = ElementWalk(buf, little=True)
        meta, start = walk.collect(PREAMBLE + 4, wanted | {0x00020010, 0x00020002}, implicit=False,
                                   group2_only=True)
        syntax = pydicom.uid.UID(_text(meta.get(0x00020010)))
        # Native little endian, and every compressed syntax (its data set is explicit VR little endian).
        if not syntax.is_transfer_syntax or syntax.is_deflated or not syntax.is_little_endian:
            return None
        found, offset = walk.collect(start, wanted | _FUNCTIONAL_GROUPS, implicit=syntax.is_implicit_VR)
        if _FUNCTIONAL_GROUPS & found.keys():
            return None
        ds = Dataset(found)
        ds.file_meta = FileMetaDataset(meta)
        ds.set_original_encoding(syntax.is_implicit_VR, True, ds._character_set)
        return Header(ds, len(buf), offset, bytes(buf[offset:offset + 12]), bytes(buf[:offset]))


def _text(elem) -> str:
    return elem.value.decode("ascii", "replace").strip(" \0") if elem is not None else ""
