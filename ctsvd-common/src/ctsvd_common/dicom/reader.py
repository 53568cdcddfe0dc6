"""Reading one whole file as DICOM: :func:`read`, or :class:`NotDicom` / :class:`BadDicom` with the reason.

A file must parse to its end (:func:`ctsvd_common.dicom.elements.check_complete`),
and with its pixels its pixel data must be as long as its image attributes say.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileDataset

from ctsvd_common.dicom.elements import check_complete, walk_file
from ctsvd_common.dicom.image import check_pixel_data
from ctsvd_common.dicom.inputs import MEDIA_DIRECTORY, BadDicom, NotDicom, has_dicm_prefix


def read(path: Path, *, pixels: bool = True) -> FileDataset:
    """Read one file as DICOM, or raise :class:`NotDicom` or :class:`BadDicom`.

    The whole file is always checked to be complete (:func:`check_complete`);
    with ``pixels`` the pixel data is read too and checked against the image
    attributes (:func:`check_pixel_data`).
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise NotDicom("not a DICOM file (empty)")
    ds = read_part10(path, pixels) if has_dicm_prefix(path) else read_bare(path, pixels)
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


def read_part10(path: Path, pixels: bool, source=None) -> FileDataset:
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
    walk_file(path, little, deflated)


def read_bare(path: Path, pixels: bool, source=None) -> FileDataset:
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
