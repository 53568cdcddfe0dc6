"""Reading the DICOM files of an input tree, with a one-line reason for every failure.

Two kinds of failure are told apart, because users treat them differently:

* :class:`NotDicom`: the file is something else (a README, a PNG, a JSON
  sidecar). It is passed over and noted; it is not an error.
* :class:`BadDicom`: the file is DICOM but cannot be used (truncated,
  corrupt, pixel data shorter than the image needs). That is an error.

Reasons are composed here from facts we checked, never copied from a
library's exception text, which may quote header values, and so PHI.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileDataset

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
    """Every regular file below ``root``, sorted; hidden files and folders are left out."""
    root = Path(root)
    return sorted(
        p for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _has_dicm_prefix(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(_PREAMBLE + 4)
    return len(head) == _PREAMBLE + 4 and head[_PREAMBLE:] == b"DICM"


def _looks_like_raw_dataset(ds: Dataset) -> bool:
    """A file without the Part 10 preamble still counts if it holds SOP identity."""
    try:
        return bool(str(ds.SOPClassUID).startswith("1.2.840.10008.") and ds.SOPInstanceUID)
    except Exception:
        return False


def read(path: Path, *, pixels: bool = True) -> FileDataset:
    """Read one file as DICOM, or raise :class:`NotDicom` or :class:`BadDicom`.

    With ``pixels`` the pixel data is read too and checked for truncation.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise NotDicom("not a DICOM file (empty)")
    if not _has_dicm_prefix(path):
        try:
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=not pixels)
        except Exception:
            raise NotDicom("not a DICOM file (no DICM prefix)") from None
        if not _looks_like_raw_dataset(ds):
            raise NotDicom("not a DICOM file (no DICM prefix)")
        if "TransferSyntaxUID" not in ds.file_meta:
            # A bare dataset: its encoding is what pydicom detected while reading it.
            ds.file_meta.TransferSyntaxUID = (
                pydicom.uid.ImplicitVRLittleEndian if ds.is_implicit_VR else
                pydicom.uid.ExplicitVRLittleEndian if ds.is_little_endian else pydicom.uid.ExplicitVRBigEndian)
    else:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=not pixels)
        except Exception as e:  # pydicom raises many types for a cut or corrupt file
            raise BadDicom(f"unreadable DICOM, truncated or corrupt ({type(e).__name__})") from None
    if str(ds.file_meta.get("MediaStorageSOPClassUID", "")) == MEDIA_DIRECTORY:
        raise NotDicom("DICOMDIR: a media directory, not an image")
    if "TransferSyntaxUID" not in ds.file_meta:
        raise BadDicom("unreadable DICOM, truncated or corrupt (no transfer syntax)")
    if "SOPInstanceUID" not in ds:
        raise BadDicom("unreadable DICOM, truncated or corrupt (no SOPInstanceUID)")
    if pixels and "PixelData" in ds:
        check_pixel_data(ds)
    return ds


def expected_pixel_bytes(ds: Dataset) -> int:
    """Bytes of native (uncompressed) pixel data the image attributes call for."""
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    bits = int(ds.BitsAllocated)
    n = int(ds.Rows) * int(ds.Columns) * int(getattr(ds, "SamplesPerPixel", 1)) * frames
    return (n * bits + 7) // 8


def check_pixel_data(ds: Dataset) -> None:
    """Raise :class:`BadDicom` when native pixel data is shorter than the image."""
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        return  # decoded (and so checked) where the pixels are needed
    try:
        need = expected_pixel_bytes(ds)
    except (AttributeError, TypeError, ValueError):
        raise BadDicom("image attributes (Rows, Columns, BitsAllocated) missing or invalid") from None
    have = len(ds.PixelData)
    if have < need:
        raise BadDicom(f"truncated pixel data ({have} of {need} bytes)")
