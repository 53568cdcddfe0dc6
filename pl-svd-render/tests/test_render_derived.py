"""The derived DICOM series (svd_render.derived), written on known headers and read back with pydicom."""

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from svd_render.derived import SERIES_NUMBER_OFFSET, stored_values, write_series

STUDY, SOURCE_SERIES = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"


def source_header(i: int, slope: float = 0.5, intercept: float = -1024.0, bits: int = 12,
                  signed: bool = False) -> Dataset:
    """Slice ``i`` of a source CT series, pixel-less as pl-dicom2matrix passes it on."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = f"{SOURCE_SERIES}.{i + 1}"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY, SOURCE_SERIES
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 3, i + 1
    ds.SeriesDescription = "chest"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImagePositionPatient = [-100.0, -120.5, -40.0 + 2.5 * i]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing, ds.SliceThickness = [0.75, 0.8], 2.5
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits, bits - 1
    ds.PixelRepresentation = int(signed)
    return ds


def hu_volume(slices: int = 3, slope: float = 0.5) -> np.ndarray:
    """HU values on the rescale's grid, so that they survive storage exactly."""
    rng = np.random.default_rng(0)
    return (rng.integers(-1000, 1500, size=(slices, 4, 6)) * slope).astype(np.float32)


def write_and_read(tmp_path, headers, volume, description="SVD denoised global r3/8 chest",
                   derivation="Truncated SVD of the series: rank 3 of 8 components"):
    paths = write_series(tmp_path, headers, volume, description, derivation)
    assert [p.name for p in paths] == [f"{i + 1:04d}.dcm" for i in range(len(volume))]
    return [pydicom.dcmread(p) for p in paths]   # no force=True: each is a Part 10 file


def test_the_derived_series_has_new_consistent_uids_and_references_its_source(tmp_path):
    volume = hu_volume()
    written = write_and_read(tmp_path, [source_header(i) for i in range(3)], volume)
    series_uids = {ds.SeriesInstanceUID for ds in written}
    assert len(series_uids) == 1 and SOURCE_SERIES not in series_uids
    sops = [ds.SOPInstanceUID for ds in written]
    assert len(set(sops)) == 3
    for i, ds in enumerate(written):
        for uid in (ds.SeriesInstanceUID, ds.SOPInstanceUID):
            assert UID(uid).is_valid and not uid.startswith(SOURCE_SERIES)
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID == CTImageStorage
        assert ds.StudyInstanceUID == STUDY     # the same study: it sits beside its source
        (ref,) = ds.SourceImageSequence
        assert ref.ReferencedSOPClassUID == CTImageStorage
        assert ref.ReferencedSOPInstanceUID == f"{SOURCE_SERIES}.{i + 1}"
    # Each run makes a series of its own.
    again = write_and_read(tmp_path, [source_header(i) for i in range(3)], volume)
    assert again[0].SeriesInstanceUID not in series_uids and not {ds.SOPInstanceUID for ds in again} & set(sops)


def test_the_derived_image_attributes(tmp_path):
    written = write_and_read(tmp_path, [source_header(i) for i in range(3)], hu_volume(),
                             description="d" * 70, derivation="x" * 1100)
    for ds in written:
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]   # the source's third value kept
        assert ds.SeriesDescription == "d" * 64 and ds.DerivationDescription == "x" * 1024   # their VRs' limits
        assert ds.SeriesNumber == 3 + SERIES_NUMBER_OFFSET
        assert ds.BurnedInAnnotation == "NO"
        assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.SamplesPerPixel == 1
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    header = source_header(0)
    del header.SeriesNumber, header.ImageType
    (ds,) = write_and_read(tmp_path, [header], hu_volume(1))
    assert ds.SeriesNumber == SERIES_NUMBER_OFFSET and list(ds.ImageType) == ["DERIVED", "SECONDARY"]


def test_the_geometry_is_the_sources(tmp_path):
    headers = [source_header(i) for i in range(3)]
    written = write_and_read(tmp_path, [source_header(i) for i in range(3)], hu_volume())   # changes its headers
    for source, ds in zip(headers, written):
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
                        "InstanceNumber", "RescaleSlope", "RescaleIntercept"):
            assert ds[keyword].value == source[keyword].value, keyword
        assert (ds.Rows, ds.Columns) == (4, 6)


@pytest.mark.parametrize("slope, intercept, bits, signed", [(0.5, -1024.0, 12, False), (1.0, 0.0, 16, True)])
def test_pixels_round_trip_through_the_sources_rescale(tmp_path, slope, intercept, bits, signed):
    volume = hu_volume(slope=slope)
    headers = [source_header(i, slope, intercept, bits, signed) for i in range(3)]
    written = write_and_read(tmp_path, headers, volume)
    for hu, ds in zip(volume, written):
        assert ds.pixel_array.dtype == (np.int16 if signed else np.uint16)
        assert (ds.BitsStored, ds.PixelRepresentation) == (bits, int(signed))
        np.testing.assert_array_equal(ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept), hu)


def test_stored_values_round_to_the_nearest_step_and_clip_to_the_bit_depth():
    header = source_header(0, slope=0.5, intercept=-1024.0, bits=12)
    hu = np.array([[-1024.0, -1023.8, -1023.6, 0.0], [1023.5, -2000.0, 5000.0, 523.25]], np.float32)
    values, bits = stored_values(hu, header)
    assert bits == 12 and values.dtype == np.uint16
    # (HU + 1024) / 0.5, rounded half to even; below 0 and above 4095 (12 bits) clipped.
    np.testing.assert_array_equal(values, [[0, 0, 1, 2048], [4095, 0, 4095, 3094]])
    signed = source_header(0, slope=1.0, intercept=0.0, bits=16, signed=True)
    values, bits = stored_values(np.array([-40000.0, -1000.0, 40000.0], np.float32), signed)
    assert bits == 16 and values.dtype == np.int16 and values.tolist() == [-32768, -1000, 32767]
