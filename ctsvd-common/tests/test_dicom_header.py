"""The lean header reader (ctsvd_common.dicom.header) finds what pydicom finds, and where the pixels start."""

from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from ctsvd_common.dicom import BadDicom, NotDicom
from ctsvd_common.dicom import values
from ctsvd_common.dicom.header import _lean_header, read_header

TEST_FILES = Path(get_testdata_file("CT_small.dcm")).parent
# What a converter reads from every header, and how.
READ_AS = {
    **dict.fromkeys(["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
                     "RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth"], values.numbers),
    **dict.fromkeys(["Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation", "SamplesPerPixel",
                     "InstanceNumber", "NumberOfFrames", "SeriesNumber"], values.integer),
    **dict.fromkeys(["SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "Modality", "PhotometricInterpretation",
                     "SpecificCharacterSet"], values.code),
    "SeriesDescription": values.text,
}


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm", "JPEG2000.dcm",
                                  "MR_small_jp2klossless.dcm"])
def test_the_lean_reader_finds_what_pydicom_finds(name):
    path = TEST_FILES / name
    header = read_header(path, set(READ_AS))
    assert header is not None
    with open(path, "rb") as f:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        offset = f.tell()
    assert header.offset == offset and header.prefix == path.read_bytes()[:offset]
    for keyword, value in READ_AS.items():
        assert value(header.ds, keyword) == value(ds, keyword), keyword
    assert header.ds.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID


@pytest.mark.parametrize("name", ["MR_small_bigendian.dcm", "image_dfl.dcm", "no_meta.dcm"])
def test_the_lean_walk_leaves_other_encodings_to_pydicom(name):
    assert _lean_header(TEST_FILES / name, {"Rows"}) is None


@pytest.mark.parametrize("name", ["MR_small_bigendian.dcm", "image_dfl.dcm", "MR_small_implicit.dcm"])
def test_every_header_knows_where_its_pixels_start(name):
    path = TEST_FILES / name
    header = read_header(path, {"Rows"})
    assert int(header.ds.Rows) > 0 and header.size == path.stat().st_size
    data = path.read_bytes()
    if name == "image_dfl.dcm":          # deflated: no offset into the file, no reusable prefix
        assert header.prefix is None
    else:
        assert header.after[:4] in (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10")   # the Pixel Data tag
        assert header.prefix == (data[:header.offset] if data[128:132] == b"DICM" else None)


def test_a_bare_file_without_identity_is_not_dicom():
    with pytest.raises(NotDicom):
        read_header(TEST_FILES / "no_meta.dcm", {"Rows"})


def test_the_lean_reader_finds_a_cut_header(tmp_path):
    data = (TEST_FILES / "CT_small.dcm").read_bytes()
    with open(TEST_FILES / "CT_small.dcm", "rb") as f:
        pydicom.dcmread(f, stop_before_pixels=True)
        offset = f.tell()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:offset // 2])
    with pytest.raises(BadDicom, match="^truncated"):
        read_header(cut, {"Rows"})
