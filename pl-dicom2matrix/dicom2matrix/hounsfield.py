"""Pass 2: stored pixel values to Hounsfield units, written straight into the volume.

Each task is one file: its frames are read once, converted with their own
rescale, and written with ``os.pwrite`` at their slot of the ``.npy`` file.
No slice is kept in a list and the volume is never mapped into memory, so a
run's memory does not grow with the number of slices.

Uncompressed frames are read directly from their offset (found in pass 1)
and treated exactly as pydicom does: unsigned values masked to BitsStored,
signed ones sign-extended from it. Everything else goes through pydicom 3's
pixel backends (pylibjpeg, openjpeg, RLE, CharLS), and a decode failure
names the transfer syntax and, when it is the cause, the missing decoder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from pydicom import pixels
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import UID

from ctsvd_common.dicom.image import truncated
from dicom2matrix.scan import Image


@dataclass(frozen=True)
class Target:
    """Where one frame's HU go: a slot of a float32 ``.npy`` file."""

    volume: str          # path of the .npy being written
    data_offset: int     # first byte of the array in that file
    slot: int
    padding_hu: float
    invert: tuple[float, float] | None = None   # MONOCHROME1 outside HU: lo + hi - value


@dataclass
class Outcome:
    volume: str
    slot: int
    minimum: float = 0.0
    maximum: float = 0.0
    padded: int = 0
    failure: str | None = None


class PixelError(Exception):
    """The frame's pixels cannot be decoded or used; the message is our own words."""


def convert_file(task: tuple[str, list[tuple[Image, Target]]]) -> list[Outcome]:
    """Read, convert and write every frame of one file; report each frame's outcome."""
    path, frames = task
    outcomes = []
    try:
        stored_frames = _read_frames(path, [image for image, _ in frames])
    except PixelError as e:
        return [Outcome(t.volume, t.slot, failure=str(e)) for _, t in frames]
    for (image, target), stored in zip(frames, stored_frames):
        try:
            outcomes.append(_write(image, target, stored))
        except PixelError as e:
            outcomes.append(Outcome(target.volume, target.slot, failure=str(e)))
        except OSError as e:
            outcomes.append(Outcome(target.volume, target.slot,
                                    failure=f"cannot write into the volume ({type(e).__name__})"))
    return outcomes


def _read_frames(path: str, images: list[Image]) -> list[np.ndarray]:
    first = images[0]
    if all(i.native is not None for i in images):
        return [_read_native(path, i) for i in images]
    try:
        if first.frame is None:
            return [np.asarray(pixels.pixel_array(path, transfer_syntax_uid=first.transfer_syntax))]
        wanted = {i.frame for i in images}
        found = {f: frame for f, frame in enumerate(pixels.iter_pixels(path)) if f in wanted}
    except Exception as e:  # decoders raise many types; the reason is ours to word
        raise PixelError(decode_failure(first.transfer_syntax, e)) from None
    return [found[i.frame] for i in images]


def decode_failure(transfer_syntax: str, exc: BaseException) -> str:
    uid = UID(transfer_syntax)
    name = f"{uid.name} ({uid})" if uid.name != uid else f"transfer syntax {uid}"
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        return f"cannot decode the pixel data: {name} is not supported by any pixel decoder"
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "a decoder plugin"
        return f"cannot decode the pixel data: no decoder for {name} is installed (needs {missing})"
    return f"cannot decode the pixel data: {name} decoder failed ({type(exc).__name__}): corrupt or unsupported data"


def _read_native(path: str, image: Image) -> np.ndarray:
    native = image.native
    count = image.rows * image.cols
    dtype = np.dtype(native.dtype)
    with open(path, "rb") as f:
        f.seek(native.offset)
        raw = f.read(count * dtype.itemsize)
    if len(raw) < count * dtype.itemsize:   # pass 1 checked the length: the file was cut since
        raise PixelError(truncated(len(raw), count * dtype.itemsize))
    stored = np.frombuffer(raw, dtype=dtype).reshape(image.rows, image.cols)
    bits = dtype.itemsize * 8
    if native.bits_stored < bits:
        shift = bits - native.bits_stored
        stored = stored.astype(dtype.newbyteorder("="))
        if native.signed:   # sign-extend from the highest stored bit, as pydicom does
            stored = (stored << shift) >> shift
        else:               # bits above BitsStored are not part of the value
            stored = stored & ((1 << native.bits_stored) - 1)
    return stored


def _write(image: Image, target: Target, stored: np.ndarray) -> Outcome:
    if stored.shape != (image.rows, image.cols):
        raise PixelError(f"expected one frame of {image.rows}×{image.cols}, found pixel data of shape {stored.shape}")
    hu = to_hu(stored, image.slope, image.intercept)
    padded = 0
    if image.padding is not None:
        low, high = image.padding
        mask = (stored >= low) & (stored <= high)
        padded = int(mask.sum())
        if padded:
            hu[mask] = target.padding_hu
    if target.invert is not None:
        lo, hi = target.invert
        np.subtract(np.float32(lo + hi), hu, out=hu)
    hu = np.ascontiguousarray(hu, dtype="<f4")
    fd = os.open(target.volume, os.O_WRONLY)
    try:
        os.pwrite(fd, memoryview(hu).cast("B"), target.data_offset + target.slot * hu.nbytes)
    finally:
        os.close(fd)
    return Outcome(target.volume, target.slot, float(hu.min()), float(hu.max()), padded)


def to_hu(stored: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """``stored * slope + intercept`` as float32, computed as exactly as pydicom's modality LUT.

    With slope 1 and an integer intercept, float32 arithmetic is exact for
    every 16-bit stored value; otherwise the sum is taken in float64.
    """
    if slope == 1.0 and float(intercept).is_integer() and stored.dtype.itemsize <= 2:
        hu = stored.astype(np.float32)
        hu += np.float32(intercept)
        return hu
    return (stored.astype(np.float64) * slope + intercept).astype(np.float32)


def stored_range(image: Image) -> tuple[float, float]:
    """The HU (or rescaled values) of the smallest and largest storable value."""
    bits = image.bits_stored
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if image.signed else (0, (1 << bits) - 1)
    a, b = lo * image.slope + image.intercept, hi * image.slope + image.intercept
    return min(a, b), max(a, b)
