"""The JPEG Lossless SV1 encoder, decoded back by every pydicom decoder that reads the syntax."""

from __future__ import annotations

import numpy as np
import pydicom
from pydicom.pixels import pixel_array

from ctsvd_testdata.jpeg_lossless import encode_jpeg_lossless_sv1


def test_jpeg_lossless_encoder_round_trips_extreme_values():
    rng = np.random.default_rng(5)
    frames = [rng.integers(-32768, 32768, (17, 23)).astype(np.int16),     # worst case: noise
              np.full((16, 16), -1024, np.int16),                          # one symbol only
              np.array([[-32768, 32767], [0, -1]], np.int16),
              rng.integers(0, 65536, (9, 31)).astype(np.uint16)]
    for frame in frames:
        code = encode_jpeg_lossless_sv1(frame)
        assert code[:2] == b"\xff\xd8" and code[-2:] == b"\xff\xd9"
        ds = pydicom.Dataset()
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGLosslessSV1
        ds.Rows, ds.Columns = frame.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation = 15, int(frame.dtype == np.int16)
        ds.PixelData = pydicom.encaps.encapsulate([code])
        decoder = pydicom.pixels.get_decoder(pydicom.uid.JPEGLosslessSV1)
        for plugin in sorted(decoder.available_plugins):
            assert np.array_equal(pixel_array(ds, decoding_plugin=plugin), frame), plugin
