"""Stored pixel values to Hounsfield units, one slice at a time."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixel_data_handlers.util import apply_modality_lut


class PixelError(Exception):
    """The slice's pixels cannot be decoded or used."""


def padding_mask(ds: Dataset, stored: np.ndarray) -> np.ndarray | None:
    """Pixels that lie outside the reconstructed field of view (PixelPaddingValue, PS3.3 C.7.5.1.1.2).

    Scanners fill them with a value such as −2000 that is no measurement; left
    as they are, they would add a sharp artificial edge that the SVD spends
    components on.
    """
    if "PixelPaddingValue" not in ds:
        return None
    low = int(ds.PixelPaddingValue)
    high = int(ds.get("PixelPaddingRangeLimit", low))
    low, high = min(low, high), max(low, high)
    mask = (stored >= low) & (stored <= high)
    return mask if mask.any() else None


def slice_hu(ds: Dataset, padding_hu: float) -> tuple[np.ndarray, int]:
    """The slice in HU (float32) and how many padding pixels were set to ``padding_hu``."""
    if int(getattr(ds, "SamplesPerPixel", 1)) != 1:
        raise PixelError("not a grayscale image (SamplesPerPixel is not 1)")
    try:
        stored = ds.pixel_array
    except Exception as e:  # handlers raise many types; the reason is ours to word
        syntax = ds.file_meta.TransferSyntaxUID
        raise PixelError(f"cannot decode the pixel data ({syntax.name}, {type(e).__name__})") from None
    if stored.ndim != 2:
        raise PixelError(f"expected one frame, found pixel data of shape {stored.shape}")
    hu = apply_modality_lut(stored, ds).astype(np.float32, copy=False)
    mask = padding_mask(ds, stored)
    if mask is None:
        return hu, 0
    hu = np.where(mask, np.float32(padding_hu), hu)
    return hu, int(mask.sum())
