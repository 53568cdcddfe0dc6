"""The denoised volume as a derived DICOM series that any viewer opens.

Each slice starts from the de-identified, pixel-less header that
pl-dicom2matrix passed forward, so geometry, patient and study stay those of
the source. It gets a new SeriesInstanceUID (one per series and run), new
SOPInstanceUIDs, ImageType DERIVED\\SECONDARY, a derivation description and a
reference to its source image (PS3.3 C.7.6.1.1.3), and pixels encoded with
the source slice's own rescale, uncompressed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from ctsvd_common import atomic

SERIES_NUMBER_OFFSET = 1000


def _new_uid() -> str:
    return generate_uid(prefix=None)  # 2.25.<uuid4>: unique without a registered root


def stored_values(hu: np.ndarray, header: Dataset) -> tuple[np.ndarray, int]:
    """HU → stored pixel values with the header's own rescale, clipped to its bit depth; and that depth."""
    slope = float(header.get("RescaleSlope", 1) or 1)
    intercept = float(header.get("RescaleIntercept", 0) or 0)
    bits = min(int(header.get("BitsStored", 16) or 16), 16)
    signed = int(header.get("PixelRepresentation", 0) or 0) == 1
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    values = np.clip(np.rint((hu.astype(np.float64) - intercept) / slope), low, high)
    return values.astype(np.int16 if signed else np.uint16), bits


def write_series(out_dir: Path, headers: list[Dataset], volume: np.ndarray, description: str,
                 derivation: str) -> list[Path]:
    """Write one file per slice of ``volume`` into ``out_dir``, each on its header; return their paths.

    The headers are changed in place.
    """
    series_uid = _new_uid()
    written = []
    for i, (ds, hu) in enumerate(zip(headers, volume)):
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = str(ds.SOPClassUID), str(ds.SOPInstanceUID)
        ds.SourceImageSequence = Sequence([ref])
        sop_uid = _new_uid()
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = sop_uid
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        # Uncompressed little endian whatever the source was: set_pixel_data refuses big endian.
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        image_type = [str(v) for v in ds.get("ImageType", [])][2:]
        ds.ImageType = ["DERIVED", "SECONDARY", *image_type]
        ds.SeriesDescription = description[:64]
        ds.DerivationDescription = derivation[:1024]
        ds.SeriesNumber = int(ds.get("SeriesNumber", 0) or 0) + SERIES_NUMBER_OFFSET
        ds.BurnedInAnnotation = "NO"

        pixels, bits = stored_values(hu, ds)
        # The volume is "higher is brighter" (pl-dicom2matrix turns MONOCHROME1), so MONOCHROME2.
        ds.set_pixel_data(pixels, "MONOCHROME2", bits, generate_instance_uid=False)

        path = out_dir / f"{i + 1:04d}.dcm"
        with atomic.atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        written.append(path)
    return written
