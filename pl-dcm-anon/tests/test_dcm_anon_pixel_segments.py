"""Comments and application segments inside compressed frames go; the pixels stay exactly."""

from __future__ import annotations

import struct

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate, generate_frames

from dcm_anon.descriptors import Identifying
from dcm_anon.pixel_segments import BadStream, strip_segments

PHI = b"DOE^JANE MRN-58310-7Q 20230405"


def _segment(marker: int, body: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(body) + 2) + body


@pytest.mark.parametrize("name, has_bot", [("JPGExtended.dcm", True), ("MR_small_jpeg_ls_lossless.dcm", False),
                                           ("JPEGLSNearLossless_16.dcm", True), ("SC_rgb_jpeg_dcmtk.dcm", False),
                                           ("SC_rgb_jpeg_app14_dcmd.dcm", True)])
def test_com_and_app_segments_go_and_the_image_decodes_the_same(name, has_bot):
    ds = pydicom.dcmread(get_testdata_file(name))
    expected = ds.pixel_array.copy()
    frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1))))
    planted = [f[:2] + _segment(0xFE, PHI) + _segment(0xE1, b"Exif\x00\x00" + PHI) + f[2:] for f in frames]
    ds.PixelData = encapsulate(planted, has_bot=has_bot)
    assert PHI in ds.PixelData
    stripped = strip_segments(ds.PixelData)
    assert stripped is not None and PHI not in stripped
    ds.PixelData = stripped
    assert np.array_equal(ds.pixel_array, expected)


def test_pixel_data_without_segments_is_left_as_it_is():
    ds = pydicom.dcmread(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"))
    assert strip_segments(ds.PixelData) is None


def test_a_jpeg2000_comment_goes():
    ds = pydicom.dcmread(get_testdata_file("JPEG2000.dcm"))
    expected = ds.pixel_array.copy()
    (frame,) = generate_frames(ds.PixelData, number_of_frames=1)
    ds.PixelData = encapsulate([frame[:2] + _segment(0x64, b"\x00\x01" + PHI) + frame[2:]])
    ds.PixelData = strip_segments(ds.PixelData)
    assert PHI not in ds.PixelData and np.array_equal(ds.pixel_array, expected)


def test_broken_streams_fail_with_a_reason():
    with pytest.raises(BadStream):
        strip_segments(b"\xfe\xff\x00\xe0\x00\x00\x00\x00" + b"\xfe\xff\x00\xe0\x10\x00\x00\x00\xff\xd8\xff")
    with pytest.raises(BadStream):
        strip_segments(b"\x00\x00\x00\x00")


def test_clean_descriptors_reads_names_as_a_person_does():
    own = ["Zebraquux^Xaviera^Jo", "Jörg^Seán=Ли^Иван", "山田^太郎"]
    clean = Identifying(["MRN-58310-7Q", *own], own).clean
    assert clean("LDCT JANE MRN-58310-7Q: follow-up") == "LDCT JANE : follow-up"   # JANE: nobody's here
    for text in ("XavieraZebraquux", "zebraquuxxaviera", "ZEBRAQUUX", "Jo", "Joerg", "JORG",
                 "Sean", "ли", "ИВАН", "山田太郎", "ＸＡＶＩＥＲＡ", "jorg-sean", "58310"):
        assert clean(f"{text} chest CT").strip("- ") == "chest CT", text
    assert clean("JoCT head") == "CT head"
    assert clean("山田太郎さんの胸部CT") == "さんの胸部CT"
    assert clean("JOURNEY chest") == "JOURNEY chest"   # "Jo" counts as a word of its own, not inside others
