"""The raw-value accessors and the lean header reader agree with pydicom's own reading."""

from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from ctsvd_common import dicomfiles, dicomvalues
from ctsvd_common.dicomvalues import BadValue

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
        assert dicomvalues.numbers(raw, keyword) == (None if expected is None else [float(v) for v in expected]), keyword
    for keyword in INTEGERS:
        expected = converted(ds, keyword)
        assert dicomvalues.integer(raw, keyword) == (None if expected is None else int(expected[0])), keyword
    for keyword in CODES:
        assert dicomvalues.code(raw, keyword) == str(ds.get(keyword, "") or "").strip(), keyword
    assert dicomvalues.words(raw, "ImageType") == tuple(str(v).upper() for v in (converted(ds, "ImageType") or []))


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
        (dicomvalues.integer if keyword == "NumberOfFrames" else
         lambda d, k: dicomvalues.numbers(d, k, 3 if k == "ImagePositionPatient" else None))(ds, keyword)
    assert str(caught.value) == reason


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm", "JPEG2000.dcm",
                                  "MR_small_jp2klossless.dcm"])
def test_the_lean_reader_finds_what_pydicom_finds(name):
    path = TEST_FILES / name
    keywords = set(NUMBERS + INTEGERS + CODES + ["SpecificCharacterSet", "SeriesDescription"])
    header = dicomfiles.read_header(path, keywords)
    assert header is not None
    with open(path, "rb") as f:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        offset = f.tell()
    assert header.offset == offset and header.prefix == path.read_bytes()[:offset]
    for keyword in NUMBERS:
        assert dicomvalues.numbers(header.ds, keyword) == dicomvalues.numbers(ds, keyword), keyword
    for keyword in INTEGERS:
        assert dicomvalues.integer(header.ds, keyword) == dicomvalues.integer(ds, keyword), keyword
    assert dicomvalues.text(header.ds, "SeriesDescription") == dicomvalues.text(ds, "SeriesDescription")
    assert header.ds.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID


@pytest.mark.parametrize("name", ["MR_small_bigendian.dcm", "image_dfl.dcm", "no_meta.dcm"])
def test_the_lean_walk_leaves_other_encodings_to_pydicom(name):
    assert dicomfiles._lean_header(TEST_FILES / name, {"Rows"}) is None


@pytest.mark.parametrize("name", ["MR_small_bigendian.dcm", "image_dfl.dcm", "MR_small_implicit.dcm"])
def test_every_header_knows_where_its_pixels_start(name):
    path = TEST_FILES / name
    header = dicomfiles.read_header(path, {"Rows"})
    assert int(header.ds.Rows) > 0 and header.size == path.stat().st_size
    data = path.read_bytes()
    if name == "image_dfl.dcm":          # deflated: no offset into the file, no reusable prefix
        assert header.prefix is None
    else:
        assert header.after[:4] in (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10")   # the Pixel Data tag
        assert header.prefix == (data[:header.offset] if data[128:132] == b"DICM" else None)


def test_a_bare_file_without_identity_is_not_dicom():
    with pytest.raises(dicomfiles.NotDicom):
        dicomfiles.read_header(TEST_FILES / "no_meta.dcm", {"Rows"})


def test_the_lean_reader_finds_a_cut_header(tmp_path):
    data = (TEST_FILES / "CT_small.dcm").read_bytes()
    with open(TEST_FILES / "CT_small.dcm", "rb") as f:
        pydicom.dcmread(f, stop_before_pixels=True)
        offset = f.tell()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:offset // 2])
    with pytest.raises(dicomfiles.BadDicom, match="^truncated"):
        dicomfiles.read_header(cut, {"Rows"})
