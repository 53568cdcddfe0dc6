"""Pass 1: what each input file holds, read once from its header.

Every file becomes a :class:`FileScan`: the images it holds (one per frame,
with everything the plan needs), the pixel-less header of each image to pass
forward, or the reason the file is skipped or failed. Pixels are not read
here; pass 2 (:mod:`dicom2matrix.hounsfield`) reads them once, straight into
the volume. Scans run in worker processes, so results are plain values.

Classic single-frame images keep their own header bytes: everything in the
file before the pixel data, which is a valid pixel-less DICOM file as it
stands and costs no second parse. A frame of an Enhanced (or legacy
converted) multi-frame image gets a classic CT header of its own, built from
the shared and per-frame functional groups.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID

from ctsvd_common.dicom import BadDicom, NotDicom
from ctsvd_common.dicom.header import Header, read_header as read_dicom_header
from ctsvd_common.dicom.image import invalid_image_attribute
from ctsvd_common.dicom.values import BadValue, code, integer, number, numbers, text, words

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
CT_SOP_CLASSES = {CT_IMAGE_STORAGE, "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2"}
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"   # and its multi-frame family .7.x
_NATIVE_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
# Direction cosines are unit vectors at right angles (PS3.3 C.7.6.2.1.1); this much rounding is allowed.
COSINE_TOLERANCE = 1e-2
# Hounsfield units end well within this; a rescale beyond it is an error in the header, not a tissue.
MAX_ABS_HU = 1e6
FLOAT32_MAX = 3.4e38


@dataclass(frozen=True)
class NativePixels:
    """Where an uncompressed single frame lies in its file, and how to read it."""

    offset: int          # first byte of the pixel values
    dtype: str           # numpy dtype of the stored values, byte order included
    bits_stored: int
    signed: bool


@dataclass
class Image:
    """One 2-D image (a classic file, or one frame of a multi-frame file)."""

    file: str
    frame: int | None                     # 0-based frame inside a multi-frame file
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    modality: str
    series_number: str
    description: str
    image_type: tuple[str, ...]
    stack_id: str
    instance_number: int | None
    patient_identity_removed: bool
    rows: int
    cols: int
    orientation: tuple[float, ...] | None
    position: tuple[float, float, float] | None
    pixel_spacing: tuple[float, float] | None
    thickness: float | None
    gantry_tilt: float | None
    slope: float
    intercept: float
    rescale_type: str
    photometric: str
    bits_stored: int
    signed: bool
    padding: tuple[int, int] | None
    window: tuple[float, float] | None
    transfer_syntax: str
    native: NativePixels | None           # None: decode with pydicom
    # Known from the header alone (truncated pixel data): the slice takes its
    # place in the plan, fails there and leaves a recorded gap.
    pixel_failure: str | None = None

    @property
    def multiframe(self) -> bool:
        return self.frame is not None


@dataclass
class FileScan:
    images: list[Image] = field(default_factory=list)
    headers: list[bytes] = field(default_factory=list)   # one per image
    skip: str | None = None
    fail: str | None = None


class Skip(Exception):
    """The file is passed over on purpose; the message says why."""


def scan_file(path: str, any_modality: bool = False) -> FileScan:
    """Read one file's header and say what it holds; never raises for a bad file."""
    try:
        return _scan(Path(path), any_modality)
    except Skip as e:
        return FileScan(skip=str(e))
    except NotDicom as e:
        return FileScan(skip=str(e))
    except (BadDicom, BadValue) as e:
        return FileScan(fail=str(e))
    except OSError as e:
        return FileScan(fail=f"cannot read the file ({type(e).__name__})")
    except Exception as e:  # a file that trips pydicom or us: contained to this file
        return FileScan(fail=f"unexpected error while reading the header ({type(e).__name__})")


# Every attribute pass 1 reads: the lean reader keeps these and skips the rest.
HEADER_KEYWORDS = {
    "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
    "FrameOfReferenceUID", "Modality", "SeriesNumber", "SeriesDescription", "InstanceNumber", "ImageType",
    "PatientIdentityRemoved", "BurnedInAnnotation", "SamplesPerPixel", "PhotometricInterpretation",
    "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "NumberOfFrames",
    "PixelPaddingValue", "PixelPaddingRangeLimit", "WindowCenter", "WindowWidth", "GantryDetectorTilt",
    "ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "SliceThickness",
    "RescaleSlope", "RescaleIntercept", "RescaleType", "ModalityLUTSequence",
}


def read_header(path: Path) -> Header:
    """Read the header of one file, once; :class:`Skip`, ``NotDicom`` or ``BadDicom`` if it is none."""
    if path.name.upper() == "DICOMDIR":
        raise Skip("DICOMDIR: a media directory, not an image")
    return read_dicom_header(path, HEADER_KEYWORDS)


def _scan(path: Path, any_modality: bool) -> FileScan:
    header = read_header(path)
    try:
        scan = _classify(path, header, any_modality)
    except (BadValue, BadDicom) as e:
        placed = _placeholder(path, header, str(e))
        if placed is None:
            raise
        return FileScan(images=[placed], headers=[b""])
    for image in scan.images:
        if (why := geometry_problem(image)) is not None:
            raise Skip(why)
        if (why := rescale_problem(image)) is not None:
            raise BadValue(why)
    return scan


def geometry_problem(image: Image) -> str | None:
    """Why the image's geometry cannot be right, or None. Nothing is made up in its place."""
    if image.pixel_spacing is not None and min(image.pixel_spacing) <= 0:
        return "PixelSpacing is zero or negative: the pixels have no size, so the volume would have none"
    if image.thickness is not None and image.thickness < 0:
        return "SliceThickness is negative"
    if image.orientation is not None:
        row, col = image.orientation[:3], image.orientation[3:]
        norms = [math.sqrt(sum(v * v for v in vector)) for vector in (row, col)]
        dot = sum(a * b for a, b in zip(row, col))
        if any(abs(n - 1) > COSINE_TOLERANCE for n in norms) or abs(dot) > COSINE_TOLERANCE:
            return ("ImageOrientationPatient is degenerate: its row and column directions are not unit vectors "
                    "at right angles (zero, parallel or skewed), so the slices cannot be placed in space")
    return None


def rescale_problem(image: Image) -> str | None:
    """Why RescaleSlope and RescaleIntercept cannot be right for the stored values, or None."""
    bits = image.bits_stored or 16
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if image.signed else (0, 2 ** bits - 1)
    ends = [lo * image.slope + image.intercept, hi * image.slope + image.intercept]
    if not all(math.isfinite(v) and abs(v) < FLOAT32_MAX for v in ends):
        return "RescaleSlope and RescaleIntercept take the stored values beyond what a float32 volume holds"
    is_ct = image.modality == "CT" or image.sop_class_uid in CT_SOP_CLASSES
    if is_ct and bits <= 16 and max(map(abs, ends)) > MAX_ABS_HU:
        return (f"RescaleSlope and RescaleIntercept give values beyond ±{MAX_ABS_HU:,.0f} HU: "
                f"not Hounsfield units")
    return None


def _placeholder(path: Path, header: Header, reason: str) -> Image | None:
    """A broken CT slice whose geometry is still readable, to take its place in its stack
    and fail there, so the manifest records the gap it leaves; None if even that is unreadable."""
    ds = header.ds
    if not (code(ds, "Modality").upper() == "CT" or code(ds, "SOPClassUID") in CT_SOP_CLASSES):
        return None
    try:
        geometry = _classic_geometry(ds, rescale=False)
        common = _common(ds, path, code(ds.file_meta, "TransferSyntaxUID"), code(ds, "PhotometricInterpretation"))
    except (BadValue, BadDicom, TypeError):
        return None
    if common["rows"] is None or common["cols"] is None or "LOCALIZER" in geometry["image_type"]:
        return None
    return Image(frame=None, **common, **geometry, native=None, pixel_failure=reason)


def _classify(path: Path, header: Header, any_modality: bool) -> FileScan:
    ds = header.ds
    sop_class = code(ds, "SOPClassUID")
    if not code(ds, "SOPInstanceUID"):
        raise BadDicom("no SOPInstanceUID: not a usable DICOM object")
    if not header.stops_at_pixel_data():
        raise Skip(f"not an image ({_sop_name(sop_class)})")
    if code(ds, "BurnedInAnnotation").upper() == "YES":
        raise Skip("burned-in annotation: the pixels carry text, not an acquired slice")
    if sop_class.startswith(SECONDARY_CAPTURE):
        raise Skip("secondary capture (a screenshot or picture), not an acquired slice")
    modality = code(ds, "Modality").upper()
    if not (modality == "CT" or sop_class in CT_SOP_CLASSES or any_modality):
        raise Skip(f"modality {modality or 'unknown'} is not CT, so it has no Hounsfield units "
                   f"(--any-modality converts it)")
    samples = integer(ds, "SamplesPerPixel", 1)
    photometric = code(ds, "PhotometricInterpretation").upper()
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise Skip(f"colour image ({photometric or f'{samples} samples per pixel'}), not a grayscale slice")
    if "ModalityLUTSequence" in ds:
        raise Skip("non-linear Modality LUT Sequence: not supported")
    frames = check_image_attributes(ds)

    ts = code(ds.file_meta, "TransferSyntaxUID") or _bare_syntax(ds)
    common = _common(ds, path, ts, photometric)
    if frames == 1 and "PerFrameFunctionalGroupsSequence" not in ds and "SharedFunctionalGroupsSequence" not in ds:
        if "LOCALIZER" in words(ds, "ImageType"):
            raise Skip("localizer (scout) image")
        native, failure = _native_or_failure(header, ts)
        image = Image(frame=None, **common, **_classic_geometry(ds), native=native, pixel_failure=failure)
        prefix = header.prefix if header.prefix is not None else _serialise(_without_pixels(ds))
        return FileScan(images=[image], headers=[prefix])
    return _scan_frames(header, frames, common, ts)


def check_image_attributes(ds: Dataset) -> int:
    """Check the Image Pixel attributes a volume needs; return the number of frames."""
    if integer(ds, "BitsAllocated") == 1:
        raise Skip("a 1-bit image (a mask or an overlay), not a slice")
    bad = invalid_image_attribute(ds)
    if bad:
        raise BadValue(bad)
    if integer(ds, "BitsAllocated") not in (8, 16, 32):
        raise BadValue("BitsAllocated is not 8, 16 or 32: not supported for a volume")
    return integer(ds, "NumberOfFrames", 1)


def _common(ds: Dataset, path: Path, ts: str, photometric: str) -> dict:
    bits_stored = integer(ds, "BitsStored") or integer(ds, "BitsAllocated")
    signed = integer(ds, "PixelRepresentation", 0) == 1
    padding = None
    if "PixelPaddingValue" in ds:
        low = integer(ds, "PixelPaddingValue")
        high = integer(ds, "PixelPaddingRangeLimit", low)
        padding = (min(low, high), max(low, high))
    return dict(
        file=str(path), study_uid=code(ds, "StudyInstanceUID"), series_uid=code(ds, "SeriesInstanceUID"),
        frame_of_reference_uid=code(ds, "FrameOfReferenceUID"), sop_class_uid=code(ds, "SOPClassUID"),
        sop_instance_uid=code(ds, "SOPInstanceUID"), modality=code(ds, "Modality").upper(),
        series_number=code(ds, "SeriesNumber"), description=text(ds, "SeriesDescription"),
        patient_identity_removed=code(ds, "PatientIdentityRemoved").upper() == "YES",
        rows=integer(ds, "Rows"), cols=integer(ds, "Columns"), photometric=photometric,
        bits_stored=bits_stored, signed=signed, padding=padding, window=_window(ds), transfer_syntax=ts,
        gantry_tilt=number(ds, "GantryDetectorTilt"),
    )


def _classic_geometry(ds: Dataset, rescale: bool = True) -> dict:
    return dict(
        image_type=words(ds, "ImageType"), stack_id="", instance_number=integer(ds, "InstanceNumber"),
        orientation=_tuple(numbers(ds, "ImageOrientationPatient", 6)),
        position=_tuple(numbers(ds, "ImagePositionPatient", 3)),
        pixel_spacing=_tuple(numbers(ds, "PixelSpacing", 2)),
        thickness=number(ds, "SliceThickness"),
        slope=number(ds, "RescaleSlope", 1.0) if rescale else 1.0,
        intercept=number(ds, "RescaleIntercept", 0.0) if rescale else 0.0,
        rescale_type=code(ds, "RescaleType").upper(),
    )


def _tuple(values):
    return tuple(values) if values is not None else None


def _window(ds: Dataset) -> tuple[float, float] | None:
    try:
        center, width = numbers(ds, "WindowCenter"), numbers(ds, "WindowWidth")
    except BadValue:
        return None   # a display hint only: never a reason to fail a slice
    return (center[0], width[0]) if center and width else None


def _bare_syntax(ds: Dataset) -> str:
    is_implicit, little = ds.original_encoding
    if is_implicit:
        return pydicom.uid.ImplicitVRLittleEndian
    return pydicom.uid.ExplicitVRLittleEndian if little else pydicom.uid.ExplicitVRBigEndian


def _native_or_failure(header: Header, ts: str) -> tuple[NativePixels | None, str | None]:
    try:
        return _native(header, ts), None
    except BadDicom as e:
        return None, str(e)


def _native(header: Header, ts: str) -> NativePixels | None:
    """Where the stored values of an uncompressed frame lie; None when pydicom must decode.

    Native pixel data is checked for truncation here (``Header.native_pixels``), from its length alone.
    """
    if ts not in _NATIVE_SYNTAXES:
        return None
    start = header.native_pixels()
    ds = header.ds
    bits = integer(ds, "BitsAllocated")
    if bits not in (8, 16, 32) or integer(ds, "NumberOfFrames", 1) != 1:
        return None
    signed = integer(ds, "PixelRepresentation", 0) == 1
    endian = "<" if ds.original_encoding[1] is not False else ">"
    dtype = f"{endian}{'i' if signed else 'u'}{bits // 8}"
    return NativePixels(start, dtype, integer(ds, "BitsStored") or bits, signed)


# --------------------------------------------------------------------------- multi-frame


def _group(ds_items: list, name: str):
    """The first item of functional group ``name``: per-frame first, then shared."""
    for item in ds_items:
        if item is not None and name in item:
            seq = item[name].value
            if seq:
                return seq[0]
    return None


def _scan_frames(header: Header, frames: int, common: dict, ts: str) -> FileScan:
    """One image per frame of an Enhanced or legacy-converted multi-frame image."""
    ds = header.ds
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is None and shared is None:
        raise Skip(f"multi-frame image ({frames} frames) without functional groups: "
                   f"its frames have no position of their own")
    if per_frame is not None and len(per_frame) != frames:
        raise BadValue(f"PerFrameFunctionalGroupsSequence has {len(per_frame)} items for {frames} frames")
    native, failure = _native_or_failure(header, ts)   # checks every frame's length; kept for one frame
    base = _frame_base(ds)
    top_type = words(ds, "ImageType")
    scan = FileScan()
    for f in range(frames):
        items = [per_frame[f] if per_frame is not None else None, shared]
        measures = _group(items, "PixelMeasuresSequence")
        plane = _group(items, "PlanePositionSequence")
        orient = _group(items, "PlaneOrientationSequence")
        value = _group(items, "PixelValueTransformationSequence")
        content = _group(items, "FrameContentSequence")
        frame_type = next((words(g, "FrameType") for g in
                           (_group(items, "CTImageFrameTypeSequence"), _group(items, "MRImageFrameTypeSequence"))
                           if g is not None and "FrameType" in g), top_type)
        if "LOCALIZER" in frame_type:
            continue
        src = value if value is not None else ds
        details = _group(items, "CTAcquisitionDetailsSequence")   # where Enhanced CT says its tilt
        tilt = number(details, "GantryDetectorTilt") if details is not None else None
        image = Image(
            frame=f, **{**common, "gantry_tilt": common["gantry_tilt"] if tilt is None else tilt},
            image_type=frame_type,
            stack_id=code(content, "StackID") if content is not None else "",
            instance_number=integer(content, "InStackPositionNumber") if content is not None else f + 1,
            orientation=_tuple(numbers(orient, "ImageOrientationPatient", 6)) if orient is not None else None,
            position=_tuple(numbers(plane, "ImagePositionPatient", 3)) if plane is not None else None,
            pixel_spacing=_tuple(numbers(measures, "PixelSpacing", 2)) if measures is not None else None,
            thickness=number(measures, "SliceThickness") if measures is not None else None,
            slope=number(src, "RescaleSlope", 1.0), intercept=number(src, "RescaleIntercept", 0.0),
            rescale_type=code(src, "RescaleType").upper(), native=native, pixel_failure=failure,
        )
        scan.images.append(image)
        scan.headers.append(_frame_header(base, image))
    if not scan.images:
        raise Skip("localizer (scout) frames only")
    return scan


_FRAME_DROPPED = ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence", "NumberOfFrames",
                  "FrameIncrementPointer", "DimensionIndexSequence", "DimensionOrganizationSequence")


def _frame_base(ds: Dataset) -> Dataset:
    base = _without_pixels(ds)
    for keyword in _FRAME_DROPPED:
        if keyword in base:
            del base[keyword]
    return base


def _frame_header(base: Dataset, image: Image) -> bytes:
    """A classic CT header for one frame, so later stages can write a slice of it."""
    ds = Dataset(base)   # shallow: the elements of ``base`` are shared, only ours are new
    ds.file_meta = FileMetaDataset(base.file_meta)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    ds.ImageType = list(image.image_type) or ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceNumber = image.frame + 1
    for keyword, value in (("ImagePositionPatient", image.position), ("ImageOrientationPatient", image.orientation),
                           ("PixelSpacing", image.pixel_spacing)):
        if value is not None:
            setattr(ds, keyword, [f"{v:.10g}" for v in value])
    if image.thickness is not None:
        ds.SliceThickness = f"{image.thickness:.10g}"
    ds.RescaleSlope, ds.RescaleIntercept = f"{image.slope:.10g}", f"{image.intercept:.10g}"
    ds.RescaleType = image.rescale_type or "HU"
    return _serialise(ds)


def _without_pixels(ds: Dataset) -> Dataset:
    out = Dataset(ds)
    out.file_meta = FileMetaDataset(ds.file_meta) if hasattr(ds, "file_meta") else FileMetaDataset()
    for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if keyword in out:
            del out[keyword]
    return out


def _serialise(ds: Dataset) -> bytes:
    meta = ds.file_meta
    if "TransferSyntaxUID" not in meta or meta.TransferSyntaxUID.is_compressed or meta.TransferSyntaxUID.is_deflated:
        # The header alone is never compressed: say so, or readers would look for fragments.
        meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", meta.get("MediaStorageSOPClassUID"))
    meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", meta.get("MediaStorageSOPInstanceUID"))
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _sop_name(uid: str) -> str:
    name = UID(uid).name if uid else ""
    return name if name and name != uid else "unknown SOP class"
