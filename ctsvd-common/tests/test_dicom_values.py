"""The raw-value accessors (ctsvd_common.dicom.values) agree with pydicom's own reading."""

from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from ctsvd_common.dicom import values
from ctsvd_common.dicom.values import BadValue

TEST_FILES = Path(get_testdata_file("CT_small.dcm")).parent
NUMBERS = ["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "RescaleSlope",
           "RescaleIntercept", "WindowCenter", "WindowWidth"]
INTEGERS = ["Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation", "SamplesPerPixel",
            "InstanceNumber", "NumberOfFrames", "SeriesNumber"]
CODES = ["SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "Modality", "PhotometricInterpretation"]
FILES = ["CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "JPEG2000.dcm",
         "rtdose.dcm", "liver_1frame.dcm", "emri_small.dcm" if (TEST_FILES / "emri_small.dcm").exists() else "SC_rgb.dcm"]


def converted(ds, keyword):
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    return list(value) if isinstance(value, pydicom.multival.MultiValue) else [value]


@pytest.mark.parametrize("name", [f for f in FILES if (TEST_FILES / f).exists()])
def test_raw_accessors_equal_pydicoms_values(name):
    ds = pydicom.dcmread(TEST_FILES / name, stop_before_pixels=True)
    raw = pydicom.dcmread(TEST_FILES / name, stop_before_pixels=True)   # untouched: elements still raw
    for keyword in NUMBERS:
        expected = converted(ds, keyword)
        assert values.numbers(raw, keyword) == (None if expected is None else [float(v) for v in expected]), keyword
    for keyword in INTEGERS:
        expected = converted(ds, keyword)
        assert values.integer(raw, keyword) == (None if expected is None else int(expected[0])), keyword
    for keyword in CODES:
        assert values.code(raw, keyword) == str(ds.get(keyword, "") or "").strip(), keyword
    assert values.words(raw, "ImageType") == tuple(str(v).upper() for v in (converted(ds, "ImageType") or []))


@pytest.mark.parametrize("raw_value, keyword, reason", [
    (b"1A", "NumberOfFrames", "NumberOfFrames is not a valid integer"),
    (b"-1O24", "RescaleIntercept", "RescaleIntercept is not a valid number"),
    (b"inf ", "RescaleSlope", "RescaleSlope is not a valid number"),
    (b"1\\2", "ImagePositionPatient", "ImagePositionPatient should hold 3 numbers, it holds 2"),
])
def test_bad_values_name_their_attribute_never_the_value(raw_value, keyword, reason):
    from pydicom.dataelem import RawDataElement
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    tag = tag_for_keyword(keyword)
    ds = pydicom.Dataset({tag: RawDataElement(pydicom.tag.Tag(tag), dictionary_VR(tag), len(raw_value), raw_value,
                                              0, False, True)})
    with pytest.raises(BadValue) as caught:
        (values.integer if keyword == "NumberOfFrames" else
         lambda d, k: values.numbers(d, k, 3 if k == "ImagePositionPatient" else None))(ds, keyword)
    assert str(caught.value) == reason
