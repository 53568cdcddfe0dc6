"""The one truncated-pixel check (ctsvd_common.dicom.image), on cases whose answer is known by hand."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from ctsvd_common.dicom import BadDicom, quiet_pydicom, read
from ctsvd_common.dicom.header import read_header
from ctsvd_common.dicom.image import check_pixel_length, expected_length


# What the header reader must keep for the pixel check.
IMAGE_PIXEL = {"Rows", "Columns", "BitsAllocated", "SamplesPerPixel", "PhotometricInterpretation", "NumberOfFrames"}


@pytest.fixture(autouse=True)
def _quiet():
    quiet_pydicom()


def image(rows=4, cols=5, bits=8, **attrs) -> Dataset:
    ds = Dataset()
    ds.Rows, ds.Columns, ds.BitsAllocated = rows, cols, bits
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    return ds


@pytest.mark.parametrize("ds, length", [
    # 4 × 5 pixels of 16 bits, one sample
    (image(bits=16, SamplesPerPixel=1, PhotometricInterpretation="MONOCHROME2"), 4 * 5 * 2),
    # three frames
    (image(bits=16, SamplesPerPixel=1, PhotometricInterpretation="MONOCHROME2", NumberOfFrames=3), 4 * 5 * 2 * 3),
    # 1 bit, packed eight to a byte: 20 bits take 3 bytes, not 20 // 8 = 2
    (image(bits=1, SamplesPerPixel=1, PhotometricInterpretation="MONOCHROME2"), 3),
    # 1 bit over 3 frames: 60 bits, 8 bytes (frames are not padded to a byte each)
    (image(bits=1, SamplesPerPixel=1, PhotometricInterpretation="MONOCHROME2", NumberOfFrames=3), 8),
    # three samples per pixel
    (image(SamplesPerPixel=3, PhotometricInterpretation="RGB"), 4 * 5 * 3),
    # YBR_FULL_422: two Y per Cb Cr pair, so two samples' worth per pixel, not three
    (image(SamplesPerPixel=3, PhotometricInterpretation="YBR_FULL_422"), 4 * 5 * 2),
    # absent or empty optional attributes take their defaults: one sample, one frame
    (image(bits=16), 4 * 5 * 2),
    (image(bits=16, SamplesPerPixel=None, PhotometricInterpretation="", NumberOfFrames=None), 4 * 5 * 2),
])
def test_expected_length(ds, length):
    assert expected_length(ds) == length


def test_the_bundled_ybr_full_422_file_is_whole_and_counted_at_two_samples():
    path = Path(get_testdata_file("SC_ybr_full_422_uncompressed.dcm"))
    ds = read(path)
    assert ds.PhotometricInterpretation == "YBR_FULL_422" and ds.SamplesPerPixel == 3
    assert expected_length(ds) == ds.Rows * ds.Columns * 2 * int(ds.get("NumberOfFrames") or 1)


def test_one_byte_short_is_truncated():
    ds = image(SamplesPerPixel=3, PhotometricInterpretation="YBR_FULL_422")
    check_pixel_length(ds, 40)
    with pytest.raises(BadDicom, match=r"^truncated pixel data \(39 of 40 bytes\)$"):
        check_pixel_length(ds, 39)


def write(path: Path, ds: Dataset, pixels: bytes, sop_class=SecondaryCaptureImageStorage) -> Path:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = ds.BitsAllocated, ds.BitsAllocated - 1, 0
    ds.PixelData = pixels
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("ds, pixels, cut, reason", [
    # An RGB image cut by 10 bytes: a count of one sample per pixel (20 bytes) would find nothing missing.
    (image(SamplesPerPixel=3, PhotometricInterpretation="RGB", PlanarConfiguration=0), bytes(60), 10,
     "truncated pixel data (50 of 60 bytes)"),
    # YBR_FULL_422 cut by 2 bytes: 38 of its 40.
    (image(SamplesPerPixel=3, PhotometricInterpretation="YBR_FULL_422", PlanarConfiguration=0), bytes(40), 2,
     "truncated pixel data (38 of 40 bytes)"),
    # 1 bit, 4 × 5 in 3 bytes (written padded to 4), cut to 2.
    (image(bits=1, SamplesPerPixel=1, PhotometricInterpretation="MONOCHROME2"), bytes(4), 2,
     "truncated pixel data (2 of 3 bytes)"),
])
def test_truncated_files_are_found_by_a_whole_read_and_by_the_header_reader(tmp_path, ds, pixels, cut, reason):
    path = write(tmp_path / "image.dcm", ds, pixels)
    read(path)                                   # whole: passes both
    read_header(path, IMAGE_PIXEL).native_pixels()
    data = path.read_bytes()
    # The element still says it is whole; only the image attributes can tell it is short.
    short = pydicom.dcmread(path)
    short.PixelData = pixels[:len(pixels) - cut]
    short.save_as(path, enforce_file_format=True)
    with pytest.raises(BadDicom, match=f"^{re.escape(reason)}$"):
        read(path)
    header = read_header(path, IMAGE_PIXEL)
    with pytest.raises(BadDicom, match=f"^{re.escape(reason)}$"):
        header.native_pixels()
    # A file cut inside the pixel data element is named by the walk, from the element's own length.
    path.write_bytes(data[:-cut])
    with pytest.raises(BadDicom, match=r"^truncated pixel data \("):
        read(path, pixels=False)


def test_a_ct_slice_cut_short_gives_its_byte_counts(tmp_path):
    ds = image(rows=8, cols=8, bits=16, SamplesPerPixel=1, PhotometricInterpretation="MONOCHROME2")
    path = write(tmp_path / "ct.dcm", ds, np.zeros((8, 8), "<u2").tobytes(), CTImageStorage)
    path.write_bytes(path.read_bytes()[:-28])
    with pytest.raises(BadDicom, match=r"^truncated pixel data \(100 of 128 bytes\)$"):
        read(path)
    with pytest.raises(BadDicom, match=r"^truncated pixel data \(100 of 128 bytes\)$"):
        read_header(path, IMAGE_PIXEL).native_pixels()
