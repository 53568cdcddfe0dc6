"""Reading DICOM files (ctsvd_common.dicom): verdicts on pydicom's own test files, and files we write
and then cut or spoil."""

from __future__ import annotations

import io
import struct
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import data_element_generator
from pydicom.pixels.utils import get_expected_length
from pydicom.sequence import Sequence
from pydicom.uid import (CTImageStorage, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian,
                         ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid)

from ctsvd_common.dicom import BadDicom, NotDicom, input_files, quiet_pydicom, read
from ctsvd_common.dicom.elements import check_complete
from ctsvd_common.dicom.image import check_pixel_data, expected_length, invalid_image_attribute

TEST_FILES = Path(get_testdata_file("CT_small.dcm")).parent
BUNDLED = input_files(TEST_FILES)


@pytest.fixture(autouse=True)
def _quiet():
    quiet_pydicom()


def verdict(path: Path) -> tuple[str, str]:
    try:
        read(path)
    except (NotDicom, BadDicom) as e:
        return type(e).__name__, str(e)
    return "ok", ""


# -- pydicom's own test files ---------------------------------------------------

@pytest.mark.parametrize("name, expected", [
    ("CT_small.dcm", ("ok", "")),
    ("MR_small_bigendian.dcm", ("ok", "")),
    ("ExplVR_BigEndNoMeta.dcm", ("ok", "")),                  # no preamble, no file meta
    ("image_dfl.dcm", ("ok", "")),                            # deflated data set
    ("rtplan.dcm", ("ok", "")),                               # implicit VR, defined-length sequences
    ("waveform_ecg.dcm", ("ok", "")),                         # undefined-length sequences
    ("liver_expb_1frame.dcm", ("ok", "")),
    ("JPEG2000-embedded-sequence-delimiter.dcm", ("ok", "")),  # delimiter bytes inside a fragment
    ("SC_rgb_rle_2frame.dcm", ("ok", "")),
    ("SC_ybr_full_422_uncompressed.dcm", ("ok", "")),         # 4:2:2: two samples per pixel
    ("badVR.dcm", ("BadDicom", "NumberOfFrames is not a valid integer")),
    ("rtplan_truncated.dcm", ("BadDicom", "truncated: the file ends inside BeamSequence")),
    ("MR_truncated.dcm", ("BadDicom", "truncated pixel data (8130 of 8192 bytes)")),
    ("README.txt", ("NotDicom", "not a DICOM file (no DICM prefix)")),
    ("dicomdirtests/DICOMDIR", ("NotDicom", "DICOMDIR: a media directory, not an image")),
])
def test_verdicts_on_pydicom_test_files(name, expected):
    assert verdict(TEST_FILES / name) == expected


def test_every_bundled_file_gets_a_one_line_verdict():
    verdicts = {p.relative_to(TEST_FILES).as_posix(): verdict(p) for p in BUNDLED}
    assert len(verdicts) > 150
    for kind, reason in verdicts.values():
        assert kind == "ok" or (reason and "\n" not in reason)
    read_ok = [name for name, (kind, _) in verdicts.items() if kind == "ok"]
    assert len(read_ok) > 100


def test_every_readable_bundled_file_parses_to_its_end():
    # pydicom reads rtplan_truncated.dcm without a word; only the walk tells.
    ds = pydicom.dcmread(TEST_FILES / "rtplan_truncated.dcm")
    assert len(ds) == 32
    with pytest.raises(BadDicom):
        check_complete(TEST_FILES / "rtplan_truncated.dcm", ds)
    for path in BUNDLED:
        if verdict(path)[0] == "ok":
            check_complete(path, read(path, pixels=False))


def test_expected_length_is_pydicoms_count():
    checked = 0
    for path in BUNDLED:
        if verdict(path)[0] != "ok":
            continue
        ds = read(path, pixels=False)
        if "Rows" in ds and "PhotometricInterpretation" in ds and "SamplesPerPixel" in ds:
            assert expected_length(ds) == get_expected_length(ds), path.name
            checked += 1
    assert checked > 80


def test_reasons_never_quote_values():
    ds = pydicom.dcmread(TEST_FILES / "badVR.dcm")
    assert ds.NumberOfFrames == "1A"
    reason = invalid_image_attribute(ds)
    assert reason == "NumberOfFrames is not a valid integer" and "1A" not in reason


# -- files we write, then cut ---------------------------------------------------

def _item(**attrs) -> Dataset:
    item = Dataset()
    for keyword, value in attrs.items():
        setattr(item, keyword, value)
    return item


def write_ct(path: Path, syntax=ExplicitVRLittleEndian, size: int = 8, frames: int = 1) -> Path:
    """A small CT image with nested sequences and a private sequence, in transfer syntax ``syntax``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.PatientName = "DOE^JANE"
    ds.ReferencedImageSequence = Sequence([
        _item(ReferencedSOPClassUID=CTImageStorage, ReferencedSOPInstanceUID=generate_uid(),
              PurposeOfReferenceCodeSequence=Sequence([_item(CodeValue="121311", CodingSchemeDesignator="DCM")])),
        _item(ReferencedSOPClassUID=CTImageStorage, ReferencedSOPInstanceUID=generate_uid()),
    ])
    block = ds.private_block(0x0029, "CTSVD TEST", create=True)
    block.add_new(0x10, "SQ", Sequence([_item(SeriesDescription="private")]))
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = np.arange(size * size * frames, dtype=np.int16).tobytes()
    ds.save_as(path, enforce_file_format=True, little_endian=syntax != ExplicitVRBigEndian,
               implicit_vr=syntax == ImplicitVRLittleEndian)
    return path


def top_level_ends(path: Path) -> set[int]:
    """Offsets at which a top-level element of the data set ends, as pydicom itself reads them."""
    data = path.read_bytes()
    implicit, little = pydicom.dcmread(path).original_encoding
    start = _dataset_start(data)
    fp = io.BytesIO(data)
    fp.seek(start)
    ends = {start}
    for _ in data_element_generator(fp, implicit, little):
        ends.add(fp.tell())
    return ends


def _dataset_start(data: bytes) -> int:
    """After the preamble, "DICM" and the file meta group (its group length says how long)."""
    (meta_length,) = struct.unpack_from("<L", data, 132 + 8)
    return 132 + 12 + meta_length


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian])
def test_every_cut_inside_an_element_is_found(tmp_path, syntax):
    whole = write_ct(tmp_path / "whole.dcm", syntax)
    data = whole.read_bytes()
    boundaries = top_level_ends(whole)
    cut = tmp_path / "cut.dcm"
    for n in range(_dataset_start(data), len(data)):
        cut.write_bytes(data[:n])
        kind, reason = verdict(cut)
        if n in boundaries:
            continue   # a file cut between two elements looks like a shorter whole file
        assert kind == "BadDicom" and reason.startswith("truncated"), (n, reason)


def test_reasons_name_the_cut_element(tmp_path):
    whole = write_ct(tmp_path / "whole.dcm").read_bytes()
    ds = pydicom.dcmread(tmp_path / "whole.dcm")
    cut = tmp_path / "cut.dcm"
    for keyword, reason in [("ReferencedImageSequence", "truncated: the file ends inside ReferencedImageSequence"),
                            ("PatientName", "truncated: the file ends inside PatientName")]:
        elem = ds[keyword]
        offset = _value_offset(whole, elem.tag)
        cut.write_bytes(whole[:offset + 3])
        assert verdict(cut) == ("BadDicom", reason)
    cut.write_bytes(whole[:-100])
    assert verdict(cut) == ("BadDicom", "truncated pixel data (28 of 128 bytes)")
    # Cut inside the private sequence: named by its tag, as it has no keyword.
    offset = _value_offset(whole, 0x00291010)
    cut.write_bytes(whole[:offset + 20])
    assert verdict(cut) == ("BadDicom", "truncated: the file ends inside (0029,1010)")


def _value_offset(data: bytes, tag: int) -> int:
    """Where the value of the explicit VR little endian element ``tag`` starts."""
    pos = data.index(struct.pack("<HH", tag >> 16, tag & 0xFFFF), 132)
    return pos + (12 if data[pos + 4:pos + 6] in (b"SQ", b"OB", b"OW", b"UN", b"UT") else 8)


def test_a_cut_element_header_at_the_end(tmp_path):
    """pydicom drops up to 7 bytes at the end of a file without a word."""
    path = write_ct(tmp_path / "ct.dcm")
    path.write_bytes(path.read_bytes() + b"\xfc\xff\xfc")   # the start of Data Set Trailing Padding
    assert verdict(path) == ("BadDicom", "truncated: the file ends inside an element header")


def test_header_only_reading_finds_cut_pixel_data(tmp_path):
    path = write_ct(tmp_path / "ct.dcm")
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(BadDicom, match=r"^truncated pixel data \(127 of 128 bytes\)$"):
        read(path, pixels=False)


def test_sequences_that_contradict_their_lengths_are_corrupt(tmp_path):
    path = write_ct(tmp_path / "ct.dcm")
    data = bytearray(path.read_bytes())
    ds = pydicom.dcmread(path)
    assert not ds.ReferencedImageSequence.is_undefined_length
    # The first item claims 2 bytes more than it holds: it now ends inside its neighbour.
    item = data.index(b"\xfe\xff\x00\xe0", _value_offset(data, 0x00081140))
    (length,) = struct.unpack_from("<L", data, item + 4)
    struct.pack_into("<L", data, item + 4, length + 2)
    path.write_bytes(bytes(data))
    kind, reason = verdict(path)
    assert kind == "BadDicom" and reason.startswith("corrupt: ") and reason.endswith("in ReferencedImageSequence")


def test_undefined_length_sequences_need_their_delimiters(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("waveform_ecg.dcm"))
    assert ds["AcquisitionContextSequence"].is_undefined_length
    data = Path(get_testdata_file("waveform_ecg.dcm")).read_bytes()
    # Remove the sequence delimiter of the first undefined-length sequence: the
    # next element is read as if it belonged to the sequence.
    first = data.index(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
    spoiled = tmp_path / "spoiled.dcm"
    spoiled.write_bytes(data[:first] + data[first + 8:])
    kind, reason = verdict(spoiled)
    assert kind == "BadDicom" and reason.startswith("corrupt: ") and "AcquisitionContextSequence" in reason


# -- encapsulated pixel data ------------------------------------------------------

def test_encapsulated_pixel_data_needs_whole_fragments_and_its_delimiter(tmp_path):
    data = Path(get_testdata_file("JPEG2000.dcm")).read_bytes()
    assert data.endswith(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
    pixel = data.index(b"\xe0\x7f\x10\x00")
    cut = tmp_path / "cut.dcm"
    # Without the delimiter, with part of it, inside the fragment, inside the offset table.
    for end in (len(data) - 8, len(data) - 4, (pixel + len(data)) // 2, pixel + 20):
        cut.write_bytes(data[:end])
        assert verdict(cut) == ("BadDicom", "truncated: the file ends inside PixelData"), end
    # A fragment whose item tag is spoiled.
    first_item = data.index(b"\xfe\xff\x00\xe0", pixel)
    second_item = first_item + 8 + struct.unpack_from("<L", data, first_item + 4)[0]
    spoiled = bytearray(data)
    spoiled[second_item:second_item + 4] = b"\x00\x00\x00\x00"
    cut.write_bytes(bytes(spoiled))
    assert verdict(cut) == ("BadDicom", "corrupt: the encapsulated pixel data holds something "
                                        "other than fragments, in PixelData")


# -- deflated -------------------------------------------------------------------

def test_a_cut_deflated_file_is_bad(tmp_path):
    data = Path(get_testdata_file("image_dfl.dcm")).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:-50])
    kind, reason = verdict(cut)
    assert kind == "BadDicom" and "truncated" in reason


def test_a_deflated_file_we_write_is_whole(tmp_path):
    path = write_ct(tmp_path / "ct.dcm", DeflatedExplicitVRLittleEndian)
    assert verdict(path) == ("ok", "")


# -- image attributes, one by one ------------------------------------------------

def _patched(tmp_path: Path, keyword: str, vr: bytes, raw: bytes, frames: int = 1) -> Path:
    """The test CT with ``keyword``'s value bytes replaced by ``raw``, space-padded to the old length."""
    path = write_ct(tmp_path / "ct.dcm", frames=frames)
    data = path.read_bytes()
    tag = pydicom.dcmread(path)[keyword].tag
    pos = data.index(struct.pack("<HH", tag.group, tag.element) + vr)
    (length,) = struct.unpack_from("<H", data, pos + 6)
    value = raw.ljust(length, b" ")
    assert len(value) == length
    path.write_bytes(data[:pos + 8] + value + data[pos + 8 + length:])
    return path


@pytest.mark.parametrize("keyword, vr, raw, reason", [
    ("NumberOfFrames", b"IS", b"1A", "NumberOfFrames is not a valid integer"),
    ("NumberOfFrames", b"IS", b"0 ", "NumberOfFrames is not a positive integer"),
    ("Rows", b"US", struct.pack("<H", 0), "Rows is not a positive integer"),
    ("Columns", b"US", struct.pack("<H", 0), "Columns is not a positive integer"),
    ("BitsAllocated", b"US", struct.pack("<H", 12), "BitsAllocated is not 1 or a multiple of 8"),
    ("BitsStored", b"US", struct.pack("<H", 17), "BitsStored is larger than BitsAllocated"),
    ("HighBit", b"US", struct.pack("<H", 16), "HighBit does not fit BitsStored and BitsAllocated"),
    ("PixelRepresentation", b"US", struct.pack("<H", 2), "PixelRepresentation is neither 0 nor 1"),
    ("SamplesPerPixel", b"US", struct.pack("<H", 0), "SamplesPerPixel is not a positive integer"),
    ("RescaleSlope", b"DS", b"0 ", "RescaleSlope is zero"),
    ("RescaleSlope", b"DS", b"x ", "RescaleSlope is not a valid number"),
    ("RescaleIntercept", b"DS", b"NaN ", "RescaleIntercept is not a valid number"),
])
def test_each_image_attribute_is_checked_on_its_own(tmp_path, keyword, vr, raw, reason):
    frames = 2 if keyword == "NumberOfFrames" else 1
    path = _patched(tmp_path, keyword, vr, raw, frames)
    assert invalid_image_attribute(pydicom.dcmread(path)) == reason
    assert verdict(path) == ("BadDicom", reason)
    # Only the pixel check looks at them: a header-only read passes.
    read(path, pixels=False)


def test_missing_attributes_are_named(tmp_path):
    ds = pydicom.dcmread(write_ct(tmp_path / "ct.dcm"))
    assert invalid_image_attribute(ds) is None
    del ds.Columns
    assert invalid_image_attribute(ds) == "Columns is missing"
    ds.Columns = None
    assert invalid_image_attribute(ds) == "Columns is empty"


def test_multi_frame_and_short_native_pixel_data(tmp_path):
    ds = pydicom.dcmread(write_ct(tmp_path / "ct.dcm", frames=3))
    assert expected_length(ds) == 8 * 8 * 2 * 3
    ds.PixelData = ds.PixelData[:-2]
    with pytest.raises(BadDicom, match=r"^truncated pixel data \(382 of 384 bytes\)$"):
        check_pixel_data(ds)


# -- cost ---------------------------------------------------------------------------

def test_the_walk_is_cheap_on_a_ct_slice(tmp_path):
    """One 512² slice with CT_small's header: well under a millisecond (about 0.2 ms measured)."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Rows = ds.Columns = 512
    ds.PixelData = np.zeros((512, 512), "<i2").tobytes()
    path = tmp_path / "ct512.dcm"
    ds.save_as(path, enforce_file_format=True)
    ds = read(path, pixels=False)
    best = float("inf")
    for _ in range(30):
        t0 = time.perf_counter()
        check_complete(path, ds)
        best = min(best, time.perf_counter() - t0)
    assert best < 2e-3
