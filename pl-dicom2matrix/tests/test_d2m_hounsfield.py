"""Stored values to Hounsfield units (dicom2matrix.hounsfield) on values whose answer is known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from dicom2matrix.hounsfield import PixelError, Target, _read_native, _write, convert_file, stored_range, to_hu
from dicom2matrix.scan import NativePixels


def test_slope_one_and_a_whole_intercept_are_exact():
    stored = np.array([[0, 1, 1024, 4095]], dtype=np.int16)
    hu = to_hu(stored, 1.0, -1024.0)
    assert hu.dtype == np.float32 and hu.tolist() == [[-1024.0, -1023.0, 0.0, 3071.0]]


@pytest.mark.parametrize("slope, intercept, stored, expected", [
    (0.5, -2048.0, [0, 1, 4096], [-2048.0, -2047.5, 0.0]),
    (1.0, -1024.5, [0, 1, 2], [-1024.5, -1023.5, -1022.5]),        # a fractional intercept
    (0.1, -1024.0, [3], [np.float32(3 * 0.1 - 1024.0)]),           # taken in float64, then rounded once
    (-1.0, 100.0, [0, 100, 300], [100.0, 0.0, -200.0]),            # a negative slope
])
def test_other_rescales_are_taken_in_float64(slope, intercept, stored, expected):
    hu = to_hu(np.array(stored, dtype=np.uint16), slope, intercept)
    assert hu.dtype == np.float32 and hu.tolist() == [float(v) for v in expected]


@pytest.mark.parametrize("bits, signed, slope, intercept, expected", [
    (12, False, 1.0, -1024.0, (-1024.0, 3071.0)),
    (16, True, 1.0, -1024.0, (-32768.0 - 1024, 32767.0 - 1024)),
    (8, False, -1.0, 0.0, (-255.0, 0.0)),                            # a negative slope swaps the ends
])
def test_stored_range(make_image, bits, signed, slope, intercept, expected):
    image = make_image(bits_stored=bits, signed=signed, slope=slope, intercept=intercept)
    assert stored_range(image) == expected


@pytest.fixture
def volume(tmp_path):
    """A float32 volume of two 2 × 3 slices, and where its array starts in the file."""
    path = tmp_path / "volume.npy"
    np.lib.format.open_memmap(path, mode="w+", dtype="<f4", shape=(2, 2, 3)).flush()
    return str(path), np.load(path, mmap_mode="r").offset


def test_a_slice_lands_in_its_slot_with_padding_replaced(make_image, volume):
    path, offset = volume
    image = make_image(rows=2, cols=3, slope=1.0, intercept=-1024.0, padding=(0, 0))
    stored = np.array([[0, 1024, 2048], [0, 100, 0]], dtype=np.int16)
    outcome = _write(image, Target(path, offset, 1, padding_hu=-1000.0), stored)
    assert (outcome.slot, outcome.padded, outcome.minimum, outcome.maximum) == (1, 3, -1000.0, 1024.0)
    written = np.load(path)
    assert written[1].tolist() == [[-1000.0, 0.0, 1024.0], [-1000.0, -924.0, -1000.0]]
    assert written[0].tolist() == [[0.0] * 3] * 2          # the other slot is untouched


def test_a_padding_range_covers_every_stored_value_in_it(make_image, volume):
    path, offset = volume
    image = make_image(rows=2, cols=3, slope=1.0, intercept=0.0, padding=(-2000, -1500))
    stored = np.array([[-2001, -2000, -1750], [-1500, -1499, 0]], dtype=np.int16)
    outcome = _write(image, Target(path, offset, 0, padding_hu=-1024.0), stored)
    assert outcome.padded == 3
    assert np.load(path)[0].tolist() == [[-2001.0, -1024.0, -1024.0], [-1024.0, -1499.0, 0.0]]


def test_monochrome1_outside_hu_is_inverted_within_its_range(make_image, volume):
    path, offset = volume
    image = make_image(rows=2, cols=3, slope=1.0, intercept=0.0, modality="CR", photometric="MONOCHROME1")
    stored = np.array([[0, 55, 255], [100, 200, 255]], dtype=np.uint8)
    _write(image, Target(path, offset, 0, padding_hu=-1024.0, invert=(0.0, 255.0)), stored)
    assert np.load(path)[0].tolist() == [[255.0, 200.0, 0.0], [155.0, 55.0, 0.0]]


def test_a_frame_of_the_wrong_shape_fails(make_image, volume):
    path, offset = volume
    with pytest.raises(PixelError, match=r"^expected one frame of 2×3, found pixel data of shape \(3, 2\)$"):
        _write(make_image(rows=2, cols=3), Target(path, offset, 0, padding_hu=-1024.0), np.zeros((3, 2), np.int16))


def native_file(tmp_path, raw: bytes, dtype: str, bits_stored: int, make_image, rows=2, cols=2):
    path = tmp_path / "pixels.raw"
    path.write_bytes(b"\x00" * 16 + raw)
    signed = "i" in dtype
    return str(path), make_image(rows=rows, cols=cols, bits_stored=bits_stored, signed=signed,
                                 native=NativePixels(16, dtype, bits_stored, signed))


@pytest.mark.parametrize("values, dtype, bits_stored, expected", [
    # signed 12 of 16 bits: sign-extended from bit 11, whatever lies above it
    ([0x0FFF, 0x0800, 0x07FF, 0xF001], "<i2", 12, [[-1, -2048], [2047, 1]]),
    # unsigned 12 of 16 bits: the bits above BitsStored are not part of the value
    ([0x0FFF, 0xF001, 0x8000, 0x0123], "<u2", 12, [[4095, 1], [0, 0x123]]),
    # all 16 bits stored, signed: two's complement as it stands
    ([0xF001, 0x7FFF, 0x8000, 0x0000], "<i2", 16, [[-4095, 32767], [-32768, 0]]),
    # big endian
    ([0x0102, 0x0201, 0x0000, 0xFFFF], ">u2", 16, [[0x0102, 0x0201], [0, 0xFFFF]]),
])
def test_native_values_follow_pixel_representation_and_bits_stored(tmp_path, make_image, values, dtype,
                                                                   bits_stored, expected):
    raw = np.array(values, dtype=np.dtype(dtype.replace("i", "u"))).tobytes()
    path, image = native_file(tmp_path, raw, dtype, bits_stored, make_image)
    assert _read_native(path, image).tolist() == expected


def test_eight_bit_signed_values(tmp_path, make_image):
    path, image = native_file(tmp_path, bytes([0xFF, 0x80, 0x7F, 0x00]), "|i1", 8, make_image)
    assert _read_native(path, image).tolist() == [[-1, -128], [127, 0]]


def test_a_file_cut_after_its_scan_fails_its_slice(tmp_path, make_image, volume):
    path, image = native_file(tmp_path, bytes(6), "<u2", 16, make_image)
    with pytest.raises(PixelError, match=r"^truncated pixel data \(6 of 8 bytes\)$"):
        _read_native(path, image)
    out, offset = volume
    wider = make_image(rows=2, cols=3, bits_stored=16, signed=False, native=image.native)
    [outcome] = convert_file((path, [(wider, Target(out, offset, 1, padding_hu=-1024.0))]))
    assert (outcome.slot, outcome.failure) == (1, "truncated pixel data (6 of 12 bytes)")
