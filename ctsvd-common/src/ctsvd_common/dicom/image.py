"""The Image Pixel attributes, and the one check that native pixel data is as long as they say.

Every reader of the suite asks here whether pixel data is truncated
(:func:`check_pixel_length`): a whole read (:func:`check_pixel_data`) and
the lean header reader (from the pixel element's length and the file's
size). The reason is worded once (:func:`truncated`).
"""

from __future__ import annotations

from types import SimpleNamespace

from pydicom.dataset import Dataset
from pydicom.pixels.utils import get_expected_length

from ctsvd_common.dicom import values
from ctsvd_common.dicom.inputs import BadDicom
from ctsvd_common.dicom.values import BadValue


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
        values.number(ds, "RescaleIntercept")
        if values.number(ds, "RescaleSlope") == 0:
            raise BadValue("RescaleSlope is zero")
    except BadValue as e:
        return str(e)
    return None


def _at_least(ds: Dataset, keyword: str, low: int, required: bool = False) -> int | None:
    if required and keyword not in ds:
        raise BadValue(f"{keyword} is missing")
    value = values.integer(ds, keyword)
    if value is None:
        if required:
            raise BadValue(f"{keyword} is empty")
        return None
    if value < low:
        raise BadValue(f"{keyword} is {'negative' if low == 0 else 'not a positive integer'}")
    return value


def expected_length(ds: Dataset) -> int:
    """Bytes of native (uncompressed) pixel data the image attributes of ``ds`` call for.

    The count is pydicom's ``get_expected_length``: 1-bit pixels packed eight
    to a byte, YBR_FULL_422 storing two samples per pixel, not three (4:2:2,
    PS3.3 C.7.6.3.1.2). It is given the attributes as :mod:`.values` reads
    them from the raw bytes: converting them through pydicom would cost more
    than a converter's whole header read; and SamplesPerPixel, NumberOfFrames
    and PhotometricInterpretation, absent or empty, take their defaults (one
    sample, one frame, no subsampling). Check the attributes first
    (:func:`invalid_image_attribute`).
    """
    return get_expected_length(SimpleNamespace(
        Rows=values.integer(ds, "Rows"), Columns=values.integer(ds, "Columns"),
        BitsAllocated=values.integer(ds, "BitsAllocated"),
        SamplesPerPixel=values.integer(ds, "SamplesPerPixel") or 1,
        NumberOfFrames=values.integer(ds, "NumberOfFrames") or 1,
        PhotometricInterpretation=values.code(ds, "PhotometricInterpretation")))


def truncated(have: int, need: int) -> str:
    """The reason for pixel data of ``have`` bytes where ``need`` were due."""
    return f"truncated pixel data ({have} of {need} bytes)"


def check_pixel_length(ds: Dataset, have: int) -> None:
    """Raise :class:`BadDicom` when ``have`` bytes of native pixel data are fewer than ``ds`` calls for."""
    need = expected_length(ds)
    if have < need:
        raise BadDicom(truncated(have, need))


def check_pixel_data(ds: Dataset) -> None:
    """Raise :class:`BadDicom` when the image attributes are unusable or native pixel data is short.

    Encapsulated (compressed) pixel data is not decoded here: that its
    fragments are whole is checked by :func:`ctsvd_common.dicom.elements.check_complete`.
    """
    reason = invalid_image_attribute(ds)
    if reason:
        raise BadDicom(reason)
    if not _encapsulated(ds):
        check_pixel_length(ds, len(ds.PixelData))


def _encapsulated(ds: Dataset) -> bool:
    try:
        return ds.file_meta.TransferSyntaxUID.is_encapsulated
    except (AttributeError, ValueError):  # a private transfer syntax: go by the element's encoding
        return bool(ds["PixelData"].is_undefined_length)
