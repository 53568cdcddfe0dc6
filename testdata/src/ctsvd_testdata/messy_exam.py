"""A deliberately messy CT exam, written as real DICOM: a fixture for DICOM-to-volume conversion.

A real exam folder, as a PACS or a CD export hands it over, holds much more
than one clean series. :func:`write_messy_exam` writes such a folder, made of
the synthetic chest of :mod:`ctsvd_testdata.phantom`, and returns a
:class:`MessyExam` that says, file by file, what a correct converter must
make of it: which stacks are volumes (with their exact HU), which files are
passed over and why, and which ones are broken.

Layout under ``outdir`` (file names are never in slice order)::

    folder                            what                                 ground truth
    01-localizer/                     AP scout and a taller lateral one    skipped: localizer
    02-reconstructions/               soft-tissue, lung (implicit VR) and  3 volumes
                                      5 mm recons of one acquisition
    03-exam-summary-screenshot/       RGB secondary capture, SCREEN SAVE   skipped: secondary capture
    04-secondary-capture-burned-in/   grayscale SC, BurnedInAnnotation YES skipped: burned-in annotation
    05-dicomdir-cd/DICOMDIR           a DICOMDIR (pydicom FileSet) ...     skipped: DICOMDIR
    05-dicomdir-cd/PT000000/...       ... of a 2-slice CT series           skipped: too few slices
    06-tilted-gantry-gap/             gantry tilt 15 deg, a slice missing  1 volume
    07-mixed-thickness-one-series/    4 mm ORIGINAL + 7 mm DERIVED ADD     2 volumes
                                      slices, one SeriesInstanceUID
    08-transfer-syntaxes/<syntax>/    one series in six transfer syntaxes  6 volumes
    09-enhanced-ct-multiframe/        Enhanced CT, frames out of order     1 volume
    10-enhanced-ct-one-frame-files/   Enhanced CT, one frame per file      1 volume
    11-malformed-values/              NumberOfFrames "1A" and Rescale-     1 volume, 2 failed
                                      Intercept "-1O24" among good slices
    12-truncated-slice/               a file cut inside its pixel data     1 volume, 1 failed
    13-cr-radiograph/                 CR, MONOCHROME1                      skipped: not CT
    13-mr-series/                     3 MR slices                          skipped: not CT
    14-structured-report/             Basic Text SR                        skipped: not an image
    README.txt                                                             skipped: not DICOM

Every DICOM object carries the made-up PHI of
:class:`~ctsvd_testdata.phantom.DemoIdentity` (also in free text: ImageComments,
the SR, a private tag), so a de-identification can be checked on the whole
tree with :meth:`MessyExam.phi_strings`. UIDs are deterministic, under
:data:`~ctsvd_testdata.phantom.UID_ROOT`; the same seed writes the same bytes.

CT pixel values are the phantom plus a little seeded noise, stored as int16
with RescaleSlope 1 and RescaleIntercept -1024, so the expected HU are exact
(except for the one lossy JPEG baseline series, see
:attr:`ExpectedVolume.tolerance_hu`).

Encoders: RLE, JPEG-LS and JPEG 2000 through pydicom 3's own ``compress``
(pydicom's RLE encoder, pyjpegls, pylibjpeg-openjpeg, all installed with the
suite's decoders); JPEG Lossless SV1 by :mod:`ctsvd_testdata.jpeg_lossless`,
as no pydicom backend encodes it; JPEG baseline with Pillow. No encoder is needed to import this module.
"""

from __future__ import annotations

import copy
import hashlib
import io
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.fileset import FileSet
from pydicom.sequence import Sequence
from pydicom.uid import (ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless,
                         JPEGBaseline8Bit, JPEGLosslessSV1, JPEGLSLossless, RLELossless)

from ctsvd_testdata.dicom import clock, ds_string, quantise
from ctsvd_testdata.jpeg_lossless import encode_jpeg_lossless_sv1
from ctsvd_testdata.phantom import (FOV_MM, PRIVATE_GROUP, UID_ROOT, DemoIdentity, DemoSeries, chest_phantom,
                                    low_dose_noise, slice_dataset)

__all__ = [
    "SKIP_CATEGORIES",
    "FAIL_CATEGORIES",
    "VOLUME_LABELS",
    "MIN_VOLUME_SLICES",
    "ExpectedVolume",
    "MessyExam",
    "write_messy_exam",
]

SKIP_CATEGORIES = ("localizer", "secondary capture", "burned-in annotation", "DICOMDIR",
                   "not an image", "not DICOM", "not CT", "too few slices")
FAIL_CATEGORIES = ("invalid NumberOfFrames", "invalid RescaleIntercept", "truncated")

# The stacks a correct converter makes, in the order of MessyExam.volumes.
VOLUME_LABELS = (
    "recon-soft-tissue", "recon-lung", "recon-5mm",
    "tilted-gap",
    "mixed-4mm", "mixed-7mm-add",
    "ts-explicit-vr-little-endian", "ts-rle-lossless", "ts-jpeg-ls-lossless",
    "ts-jpeg-lossless-sv1", "ts-jpeg2000-lossless", "ts-jpeg-baseline",
    "enhanced-multiframe", "enhanced-one-frame-files",
    "malformed-values", "truncated-slice",
)
# The ground truth assumes a converter needs this many slices for a volume: the
# 2-slice series of the DICOMDIR is "too few slices", the 7 mm ADD stack has 3 or more.
MIN_VOLUME_SLICES = 3
MIN_SLICES = 4            # smallest ``slices`` write_messy_exam accepts

SC_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
BASIC_TEXT_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.11"

SLOPE, INTERCEPT = 1.0, -1024.0
BASELINE_SLOPE = 8.0          # the 8-bit JPEG baseline series: HU = 8 * stored - 1024
BASELINE_QUALITY = 95
# Largest HU difference of the decoded JPEG baseline series from the HU of its 8-bit
# values: at quality 95 the worst pixel (a sharp edge of the phantom) moved by 7 levels
# over seeds 0-5 and sizes 64 and 128, the mean by under one; 10 levels leave room for
# decoders that round differently.
BASELINE_TOLERANCE_HU = 10 * BASELINE_SLOPE
TILT_DEG = 15.0
Z_TOP = -35.0                 # ImagePositionPatient z of the highest slice of a stack
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
ORIGINAL_AXIAL = ("ORIGINAL", "PRIMARY", "AXIAL")

# Attributes an object that is not a classic CT slice takes over from one:
# patient, study, institution, equipment, and the PHI in free text.
_CARRIED = (
    "SpecificCharacterSet", "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName",
    "StudyDescription", "StudyID", "StudyInstanceUID", "PatientName", "PatientID",
    "PatientBirthDate", "PatientSex", "OtherPatientIDs", "PatientAge", "PatientAddress",
    "PatientTelephoneNumbers", "InstitutionName", "InstitutionAddress", "StationName",
    "InstitutionalDepartmentName", "PerformingPhysicianName", "OperatorsName", "Manufacturer",
    "ManufacturerModelName", "DeviceSerialNumber", "SoftwareVersions", "ImageComments",
)


# --------------------------------------------------------------------------- ground truth


@dataclass
class ExpectedVolume:
    """One stack a correct converter must produce, exactly.

    Attributes
    ----------
    label : str
        One of :data:`VOLUME_LABELS`.
    series_uid : str
        SeriesInstanceUID of its files (two volumes share one: ``mixed-4mm``
        and ``mixed-7mm-add``).
    files : list of str
        Paths relative to :attr:`MessyExam.root` (POSIX separators), in order
        along the slice normal; a multi-frame volume has one file.
    hu : ndarray, float32, (slices, rows, cols)
        ``stored * slope + intercept`` (float64, cast to float32), slices in
        order along the normal (row cosines x column cosines).
    lossless : bool
        False only for the JPEG baseline series.
    slice_thickness_mm : float
        SliceThickness as written.
    tilt_deg : float
        Angle between the vector joining successive ImagePositionPatient and
        the slice normal (0 unless the gantry was tilted).
    gantry_detector_tilt_deg : float
        GantryDetectorTilt as written.
    missing_slices : int
        Slices missing from an otherwise even spacing (one gap of twice the
        spacing counts as 1).
    multiframe : bool
        Enhanced CT (functional groups), one or more frames per file.
    transfer_syntax : str
        Transfer syntax UID of every file.
    frames : list of (str, int)
        Where each slice of ``hu`` is stored: relative path and 0-based frame.
    positions_mm : ndarray, float64, (slices, 3)
        ImagePositionPatient of each slice, in ``hu`` order.
    orientation : tuple of float
        ImageOrientationPatient (six values).
    pixel_spacing_mm : tuple of float
        ``(row spacing, column spacing)``.
    slice_spacing_mm : float
        Nominal distance between neighbouring slices along the normal (for
        the tilted stack ``2.5 * cos(tilt)``; a gap is twice that).
    tolerance_hu : float
        Largest difference between decoded HU and ``hu``: 0 when lossless.
        For JPEG baseline ``hu`` holds the HU of the 8-bit values handed to
        the encoder (``8 * stored - 1024``, within 4 HU of the 16-bit series
        of the other transfer syntaxes).
    """

    label: str
    series_uid: str
    files: list[str]
    hu: np.ndarray
    lossless: bool
    slice_thickness_mm: float
    tilt_deg: float
    gantry_detector_tilt_deg: float
    missing_slices: int
    multiframe: bool
    transfer_syntax: str
    frames: list[tuple[str, int]]
    positions_mm: np.ndarray
    orientation: tuple[float, ...]
    pixel_spacing_mm: tuple[float, float]
    slice_spacing_mm: float
    tolerance_hu: float = 0.0


@dataclass
class MessyExam:
    """What :func:`write_messy_exam` wrote: the ground truth of a converter test.

    Attributes
    ----------
    root : Path
        The exam folder.
    volumes : list of ExpectedVolume
        The stacks a correct converter produces, in :data:`VOLUME_LABELS` order.
    skipped : dict
        Relative path -> a category of :data:`SKIP_CATEGORIES`: files that
        are no part of any volume, and why.
    failed : dict
        Relative path -> a category of :data:`FAIL_CATEGORIES`: files of a
        CT series that are broken.
    identity : DemoIdentity
        The made-up identity in every header.
    uids : dict
        Every UID the exam was given (study, series, frame of reference, SOP
        instance, file-set, dimension organisation), by a readable key such
        as ``"series:recon-lung"``.

    Every file under ``root`` is in exactly one of ``volumes`` (their
    ``files``), ``skipped`` and ``failed``.
    """

    root: Path
    volumes: list[ExpectedVolume]
    skipped: dict[str, str]
    failed: dict[str, str]
    identity: DemoIdentity
    uids: dict[str, str] = field(default_factory=dict)

    def volume(self, label: str) -> ExpectedVolume:
        """The expected volume of that label."""
        for v in self.volumes:
            if v.label == label:
                return v
        raise KeyError(label)

    def path(self, relative: str) -> Path:
        """The absolute path of a relative path of the ground truth."""
        return self.root / relative

    def phi_strings(self) -> list[str]:
        """Every made-up identifying value and every original UID, for byte scans.

        The rules (which names, IDs, addresses count) are those of
        :meth:`DemoSeries.phi_strings`, which needs only an identity and the
        UIDs; it is applied here to every UID of the exam.
        """
        study, frame, *others = self.uids.values()
        view = SimpleNamespace(identity=self.identity, uids={
            "study": study, "frame_of_reference": frame, "series": others[0],
            "sop_instances": others[1:]})
        return DemoSeries.phi_strings(view)


# --------------------------------------------------------------------------- encoders


def _jpeg_baseline(frame: np.ndarray) -> bytes:
    """An 8-bit grayscale frame as a baseline JPEG, with Pillow."""
    from PIL import Image   # Pillow is needed for this one series only

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame, np.uint8)).save(
        buf, format="JPEG", quality=BASELINE_QUALITY)
    return buf.getvalue()


def _encode(ds: Dataset, transfer_syntax: str) -> None:
    """Re-encode a native single-frame dataset in place to ``transfer_syntax``."""
    if transfer_syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        ds.file_meta.TransferSyntaxUID = transfer_syntax
        return
    plugin = {RLELossless: "pydicom", JPEGLSLossless: "pyjpegls", JPEG2000Lossless: "pylibjpeg"}
    if transfer_syntax in plugin:
        ds.compress(transfer_syntax, encoding_plugin=plugin[transfer_syntax],
                    generate_instance_uid=False)
        return
    if transfer_syntax == JPEGLosslessSV1:
        frame = encode_jpeg_lossless_sv1(ds.pixel_array)
    elif transfer_syntax == JPEGBaseline8Bit:
        raw = len(ds.PixelData)
        frame = _jpeg_baseline(ds.pixel_array)
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionRatio = f"{raw / len(frame):.2f}"
        ds.LossyImageCompressionMethod = "ISO_10918_1"
    else:
        raise ValueError(f"no encoder for {transfer_syntax}")
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = transfer_syntax


# --------------------------------------------------------------------------- small helpers


def _uid(seed: int, kind: str, key: str) -> str:
    """A deterministic UID under UID_ROOT, in branches of its own (not those of the demo series)."""
    digest = hashlib.sha256(f"ctsvd-messy:{seed}:{kind}:{key}".encode()).hexdigest()
    branch = {"study": 11, "series": 12, "frame_of_reference": 13, "sop": 14, "file_set": 15,
              "dimension_organization": 16}[kind]
    return f"{UID_ROOT}{branch}.{str(int(digest, 16))[:24]}"


def _stable_int(*parts) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "big")


def _item(**attributes) -> Dataset:
    """A sequence item with these attributes."""
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def _hu(stored: np.ndarray, slope: float = SLOPE, intercept: float = INTERCEPT) -> np.ndarray:
    """HU as a reader computes them: float64 ``stored * slope + intercept``, cast to float32."""
    return (stored.astype(np.float64) * slope + intercept).astype(np.float32)


def _axial_positions(origin: float, z: np.ndarray) -> np.ndarray:
    return np.stack([np.full(len(z), origin), np.full(len(z), origin), z], axis=1)


def _normal(orientation) -> np.ndarray:
    o = np.asarray(orientation, np.float64)
    return np.cross(o[:3], o[3:])


def _corrupt(path: Path, tag: int, vr: str, good: bytes, bad: bytes) -> None:
    """Overwrite one explicit-VR element value of a written file, as a faulty writer would.

    ``good`` is the value as written (with its padding), ``bad`` the same
    length; the element is found by its tag, VR and length.
    """
    assert len(good) == len(bad) and len(good) % 2 == 0
    header = struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), len(good))
    data = path.read_bytes()
    assert data.count(header + good) == 1
    path.write_bytes(data.replace(header + good, header + bad))


@dataclass
class _Series:
    """What names one series: its UID key, number, description and kernel."""

    key: str
    uid: str
    number: int
    description: str
    kernel: str = "B30f"


# --------------------------------------------------------------------------- the writer


class _ExamWriter:
    """Writes the items one by one and collects the ground truth."""

    def __init__(self, root: Path, *, size: int, slices: int, seed: int):
        self.root, self.size, self.slices, self.seed = root, size, slices, seed
        self.ident = DemoIdentity()
        self.ps = float(ds_string(FOV_MM / size))
        self.origin = float(ds_string(-(size - 1) / 2 * self.ps))
        self.uids: dict[str, str] = {}
        self.study = self.uid("study", "ct")
        self.frame_of_reference = self.uid("frame_of_reference", "ct")
        self.volumes: list[ExpectedVolume] = []
        self.skipped: dict[str, str] = {}
        self.failed: dict[str, str] = {}
        self._phantoms: dict[tuple[int, float], np.ndarray] = {}
        # A CT slice never written: what other objects carry over (identity, study, equipment).
        self.template = slice_dataset(
            Path("template"), self.ident, self._uids_for(self.study, "", [self.study]), 0,
            rows=1, cols=1, spacing=(2.5, self.ps, self.ps), origin_xy=("0", "0"), z="0",
            instance=1, acq_seconds=0.0, slope="1", intercept="-1024",
            stored=np.zeros((1, 1), np.int16))

    # ---- names, UIDs, pixels

    def uid(self, kind: str, key: str) -> str:
        """The UID of ``kind`` for ``key``, recorded for the ground truth."""
        return self.uids.setdefault(f"{kind}:{key}", _uid(self.seed, kind, key))

    def series(self, key: str, number: int, description: str, kernel: str = "B30f") -> _Series:
        return _Series(key, self.uid("series", key), number, description, kernel)

    def _uids_for(self, study: str, series: str, sops: list[str]) -> dict:
        return {"study": study, "series": series, "frame_of_reference": self.frame_of_reference,
                "sop_instances": sops}

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def phantom(self, n: int, dz: float) -> np.ndarray:
        """The clean chest, ``n`` slices ``dz`` apart (cached)."""
        if (n, dz) not in self._phantoms:
            self._phantoms[n, dz] = chest_phantom(n, self.size, spacing_mm=(dz, self.ps, self.ps),
                                                  seed=self.seed)
        return self._phantoms[n, dz]

    def stored(self, label: str, clean: np.ndarray, sigma_hu: float) -> np.ndarray:
        """int16 stored values of ``clean`` plus noise seeded by the label."""
        noise = low_dose_noise(clean.shape, sigma_hu=sigma_hu, body_mask=clean > -995.0,
                               seed=_stable_int(self.seed, label) % 2**32)
        return quantise(clean + noise, SLOPE, INTERCEPT)

    def shuffle(self, n: int, key: str) -> np.ndarray:
        """A seeded permutation of ``range(n)`` that is never the identity (for n > 1)."""
        perm = np.random.default_rng(_stable_int(self.seed, "order", key)).permutation(n)
        if n > 1 and np.all(perm == np.arange(n)):
            perm = np.roll(perm, 1)
        return perm

    # ---- building datasets

    def ct_datasets(self, series: _Series, stored: np.ndarray, positions: np.ndarray, *,
                    thickness: float, spacing: float | None,
                    orientation=AXIAL, image_type=ORIGINAL_AXIAL, tilt: float = 0.0,
                    first_instance: int = 1, slope: float = SLOPE,
                    intercept: float = INTERCEPT) -> list[FileDataset]:
        """Classic CT slices (phantom's writer, with this series' names and geometry).

        ``stored`` (slices, rows, cols) is int16, or uint8 for an 8-bit
        series; ``positions`` are the ImagePositionPatient, in the same
        order. InstanceNumber runs head to feet from ``first_instance``.
        """
        n, rows, cols = stored.shape
        sops = [self.uid("sop", f"{series.key}:{first_instance + i}") for i in range(n)]
        uids = self._uids_for(self.study, series.uid, sops)
        out = []
        for i in range(n):
            instance = first_instance + n - 1 - i
            ds = slice_dataset(
                Path(f"{series.key}-{i}"), self.ident, uids, i, rows=rows, cols=cols,
                spacing=(thickness, self.ps, self.ps), origin_xy=("0", "0"), z="0",
                instance=instance, acq_seconds=0.1 * (instance - 1), slope=ds_string(slope),
                intercept=ds_string(intercept), stored=stored[i])
            ds.ImageType = list(image_type)
            ds.SeriesDescription = series.description
            ds.SeriesNumber = series.number
            ds.ConvolutionKernel = series.kernel
            ds.ImagePositionPatient = [ds_string(v) for v in positions[i]]
            ds.ImageOrientationPatient = [ds_string(v) for v in orientation]
            ds.SliceLocation = ds_string(positions[i][2])
            ds.GantryDetectorTilt = ds_string(tilt)
            if spacing is None:
                del ds.SpacingBetweenSlices
            else:
                ds.SpacingBetweenSlices = ds_string(spacing)
            if stored.dtype == np.uint8:
                ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
                ds.PixelData = stored[i].tobytes()
                ds["PixelData"].VR = "OB"
            out.append(ds)
        return out

    def new_dataset(self, sop_class: str, series: _Series, key: str, *, modality: str,
                    study: str | None = None, instance: int = 1) -> FileDataset:
        """A dataset of any SOP class with the exam's identity carried over from a CT slice."""
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = self.uid("sop", key)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.SourceApplicationEntityTitle = self.ident.ae_title
        ds = FileDataset(key, {}, file_meta=meta, preamble=b"\0" * 128)
        for keyword in _CARRIED:
            ds[keyword] = copy.deepcopy(self.template[keyword])
        for elem in self.template.group_dataset(PRIVATE_GROUP):
            ds.add(copy.deepcopy(elem))
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = modality
        ds.StudyInstanceUID = study or self.study
        ds.SeriesInstanceUID = series.uid
        ds.SeriesNumber = series.number
        ds.SeriesDescription = series.description
        ds.InstanceNumber = instance
        ds.SeriesDate = ds.ContentDate = self.ident.study_date
        ds.SeriesTime = ds.ContentTime = clock(self.ident.study_time, 600.0)
        return ds

    @staticmethod
    def set_pixels(ds: Dataset, pixels: np.ndarray, photometric: str = "MONOCHROME2",
                   bits_stored: int | None = None) -> None:
        """The Image Pixel module for native ``pixels``.

        ``pixels`` is ([frames,] rows, cols), or (rows, cols, 3) for RGB.
        """
        color = photometric == "RGB"
        ds.Rows, ds.Columns = pixels.shape[-3:-1] if color else pixels.shape[-2:]
        ds.SamplesPerPixel = 3 if color else 1
        ds.PhotometricInterpretation = photometric
        if color:
            ds.PlanarConfiguration = 0
        ds.BitsAllocated = 8 * pixels.dtype.itemsize
        ds.BitsStored = bits_stored or ds.BitsAllocated
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = int(pixels.dtype.kind == "i")
        ds.PixelData = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes()
        ds["PixelData"].VR = "OB" if pixels.dtype.itemsize == 1 else "OW"

    # ---- saving

    def save(self, folder: str, datasets: list[Dataset], *, naming: str = "im",
             transfer_syntax: str = ExplicitVRLittleEndian) -> list[str]:
        """Encode and write ``datasets``, named so that file order is not slice order.

        ``naming``: ``"im"`` (IM-<series>-<shuffled n>.dcm), ``"bare"``
        (I<series><shuffled n>, no extension) or ``"uid"`` (<SOP UID>.dcm).
        Returns the relative paths, in the order of ``datasets``.
        """
        out_dir = self.root / folder
        out_dir.mkdir(parents=True, exist_ok=True)
        perm = self.shuffle(len(datasets), folder + naming + datasets[0].SeriesInstanceUID)
        paths = []
        for i, ds in enumerate(datasets):
            number = int(ds.SeriesNumber)
            name = {"im": f"IM-{number:04d}-{perm[i] + 1:04d}.dcm",
                    "bare": f"I{number:03d}{perm[i] + 1:04d}",
                    "uid": f"{ds.SOPInstanceUID}.dcm"}[naming]
            _encode(ds, transfer_syntax)
            path = out_dir / name
            implicit = transfer_syntax == ImplicitVRLittleEndian
            ds.save_as(path, implicit_vr=implicit, little_endian=True, enforce_file_format=True)
            paths.append(self.rel(path))
        return paths

    def add_volume(self, label: str, series: _Series, files: list[str], stored: np.ndarray,
                   positions: np.ndarray, *, thickness: float, spacing: float,
                   orientation=AXIAL, tilt: float = 0.0, missing: int = 0,
                   transfer_syntax: str = ExplicitVRLittleEndian, multiframe: bool = False,
                   frames: list[tuple[str, int]] | None = None, slope: float = SLOPE,
                   tolerance_hu: float = 0.0) -> None:
        assert label in VOLUME_LABELS and label not in (v.label for v in self.volumes)
        slice_vector = positions[-1] - positions[0]
        angle = math.degrees(math.acos(min(1.0, abs(np.dot(
            slice_vector / np.linalg.norm(slice_vector), _normal(orientation))))))
        self.volumes.append(ExpectedVolume(
            label=label, series_uid=series.uid, files=files, hu=_hu(stored, slope),
            lossless=tolerance_hu == 0.0, slice_thickness_mm=thickness,
            tilt_deg=round(angle, 6), gantry_detector_tilt_deg=tilt, missing_slices=missing,
            multiframe=multiframe, transfer_syntax=str(transfer_syntax),
            frames=frames or [(f, 0) for f in files],
            positions_mm=np.array([[float(ds_string(v)) for v in p] for p in positions]),
            orientation=tuple(float(ds_string(v)) for v in orientation),
            pixel_spacing_mm=(self.ps, self.ps), slice_spacing_mm=spacing,
            tolerance_hu=tolerance_hu))

    def z_positions(self, n: int, dz: float) -> np.ndarray:
        """z of ``n`` slices ``dz`` apart, the highest at Z_TOP, increasing."""
        return Z_TOP - (n - 1 - np.arange(n)) * dz

    # ---- the items

    def localizers(self) -> None:
        """1. Two scouts in one series: AP (size x size) and lateral (1.5 size x size)."""
        n, dz = self.slices, 2.5
        attenuation = np.maximum(self.phantom(n, dz) + 1000.0, 0.0) / 1000.0
        series = self.series("localizer", 1, "Topogram 0.6 T20f")
        z_span = n * dz
        datasets = []
        for i, (axis, rows, orientation, corner) in enumerate((
                (1, self.size, (1, 0, 0, 0, 0, -1), (self.origin, 0.0, Z_TOP)),
                (2, self.size * 3 // 2, (0, 1, 0, 0, 0, -1), (0.0, self.origin, Z_TOP)))):
            path_mm = attenuation.sum(axis=axis) * self.ps          # (slices, size), feet first
            rows_z = np.round(np.linspace(n - 1, 0, rows)).astype(int)   # head at the top
            stored = quantise(path_mm[rows_z][None] * 6.0 - 1024.0, SLOPE, INTERCEPT)
            ds, = self.ct_datasets(series, stored, np.array([corner]), thickness=0.6,
                                   spacing=None, orientation=orientation,
                                   image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
                                   first_instance=i + 1)
            ds.PixelSpacing = [ds_string(round(z_span / rows, 6)), ds_string(self.ps)]
            datasets.append(ds)
        for rel in self.save("01-localizer", datasets):
            self.skipped[rel] = "localizer"

    def reconstructions(self) -> None:
        """2. Soft-tissue, lung (implicit VR) and 5 mm recons of one acquisition, one folder."""
        n = self.slices
        for label, number, description, kernel, dz, sigma, syntax in (
                ("recon-soft-tissue", 3, "CHEST 2.5mm SOFT TISSUE", "B30f", 2.5, 8.0,
                 ExplicitVRLittleEndian),
                ("recon-lung", 4, "CHEST 2.5mm LUNG", "B70f", 2.5, 30.0, ImplicitVRLittleEndian),
                ("recon-5mm", 5, "CHEST 5mm SOFT TISSUE", "B30f", 5.0, 5.0,
                 ExplicitVRLittleEndian)):
            series = self.series(label, number, description, kernel)
            stored = self.stored(label, self.phantom(n, dz), sigma)
            positions = _axial_positions(self.origin, self.z_positions(n, dz))
            datasets = self.ct_datasets(series, stored, positions, thickness=dz, spacing=dz)
            files = self.save("02-reconstructions", datasets, transfer_syntax=syntax)
            self.add_volume(label, series, files, stored, positions, thickness=dz, spacing=dz,
                            transfer_syntax=syntax)

    def screenshot(self) -> None:
        """3. "Exam Summary": an RGB screen save, Secondary Capture, Modality CT."""
        hu = _hu(self.stored("screenshot", self.phantom(self.slices, 2.5), 8.0)[self.slices // 2])
        lung = np.clip((hu + 1350.0) / 1500.0 * 255.0, 0, 255)
        soft = np.clip((hu + 160.0) / 400.0 * 255.0, 0, 255)
        gray = np.concatenate([lung, soft], axis=1).astype(np.uint8)
        rgb = np.repeat(gray[:, :, None], 3, axis=2)
        band = max(2, self.size // 8)
        rgb[:band] = (20, 40, 120)                                    # title bar
        for r in range(band // 4, band - 1, 2):                       # its "text"
            rgb[r, 2:self.size // 2] = (255, 255, 0)
        series = self.series("screenshot", 990, "Exam Summary")
        ds = self.new_dataset(SC_IMAGE_STORAGE, series, "screenshot", modality="CT")
        ds.ImageType = ["DERIVED", "SECONDARY", "SCREEN SAVE"]
        ds.ConversionType = "WSD"
        ds.SecondaryCaptureDeviceManufacturer = "ACME Medical Systems"
        ds.BurnedInAnnotation = "NO"
        self.set_pixels(ds, rgb, "RGB")
        rel, = self.save("03-exam-summary-screenshot", [ds], naming="bare")
        self.skipped[rel] = "secondary capture"

    def burned_in(self) -> None:
        """4. A grayscale SC of a CT slice with text burned in; it keeps the CT geometry."""
        k = self.slices // 2
        stored = self.stored("burned-in", self.phantom(self.slices, 2.5), 8.0)[k:k + 1]
        stored[0, 1:3, 1:self.size // 2] = 2000                       # burned-in text lines
        stored[0, 5:7, 1:self.size // 3] = 2000
        series = self.series("burned-in", 991, "KEY IMAGE WITH ANNOTATION")
        positions = _axial_positions(self.origin, np.array([Z_TOP]))
        ds, = self.ct_datasets(series, stored, positions, thickness=2.5, spacing=None,
                               image_type=("DERIVED", "SECONDARY"))
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SC_IMAGE_STORAGE
        ds.ConversionType = "WSD"
        ds.BurnedInAnnotation = "YES"
        rel, = self.save("04-secondary-capture-burned-in", [ds])
        self.skipped[rel] = "burned-in annotation"

    def dicomdir(self) -> None:
        """5. A CD-style file-set: a DICOMDIR indexing a 2-slice CT series."""
        folder = self.root / "05-dicomdir-cd"
        series = self.series("dicomdir-short", 50, "CHECK 2 SLICES")
        stored = self.stored("dicomdir-short", self.phantom(2, 2.5), 8.0)
        positions = _axial_positions(self.origin, self.z_positions(2, 2.5))
        datasets = self.ct_datasets(series, stored, positions, thickness=2.5, spacing=2.5)
        fs = FileSet()
        fs.ID = "SEGH_CT_CD"
        fs.UID = self.uid("file_set", "cd")
        for i in self.shuffle(len(datasets), "dicomdir"):
            fs.add(datasets[i])
        fs.write(folder)
        for instance in fs:     # FileSet gives resolved paths
            where = folder / Path(instance.path).relative_to(folder.resolve())
            self.skipped[self.rel(where)] = "too few slices"
        self.skipped[self.rel(folder / "DICOMDIR")] = "DICOMDIR"

    def tilted(self) -> None:
        """6. Gantry tilted 15 degrees; the table moves along z; one slice missing."""
        n, dz, t = self.slices, 2.5, math.radians(TILT_DEG)
        gap = n // 2                                   # slot left out: never an end
        slots = [k for k in range(n + 1) if k != gap]
        orientation = (1.0, 0.0, 0.0, 0.0, math.cos(t), math.sin(t))
        half_height = (self.size - 1) / 2 * self.ps   # image centre on the table axis
        z = self.z_positions(n + 1, dz)[slots]
        positions = np.stack([np.full(n, self.origin), np.full(n, -half_height * math.cos(t)),
                              z - half_height * math.sin(t)], axis=1)
        stored = self.stored("tilted-gap", self.phantom(n + 1, dz), 10.0)[slots]
        series = self.series("tilted-gap", 6, "CHEST 2.5mm GANTRY TILT")
        datasets = self.ct_datasets(series, stored, positions, thickness=dz, spacing=None,
                                    orientation=orientation, tilt=TILT_DEG)
        files = self.save("06-tilted-gantry-gap", datasets, naming="bare")
        self.add_volume("tilted-gap", series, files, stored, positions, thickness=dz,
                        spacing=round(dz * math.cos(t), 6), orientation=orientation,
                        tilt=TILT_DEG, missing=1)

    def mixed_thickness(self) -> None:
        """7. One series: 4 mm ORIGINAL slices and 7 mm DERIVED ADD slabs over the same range."""
        n, thin, thick = self.slices, 4.0, 7.0
        series = self.series("mixed-thickness", 7, "CHEST 4mm + 7mm ADD")
        stored = self.stored("mixed-4mm", self.phantom(n, thin), 8.0)
        z = self.z_positions(n, thin)
        m = max(MIN_VOLUME_SLICES, int(thin * (n - 1) // thick))
        z_add = z[0] + (z[-1] - z[0] - thick * (m - 1)) / 2 + thick * np.arange(m)
        # each slab is the mean of the thin stack sampled every mm across it
        hu = _hu(stored).astype(np.float64)
        samples = (z_add[:, None] + np.arange(-3.0, 3.5, 1.0)[None, :] - z[0]) / thin
        samples = np.clip(samples, 0, n - 1)
        lo = np.floor(samples).astype(int)
        hi = np.minimum(lo + 1, n - 1)
        w = (samples - lo)[..., None, None]
        slab = ((1 - w) * hu[lo] + w * hu[hi]).mean(axis=1)
        stored_add = quantise(slab, SLOPE, INTERCEPT)

        pos, pos_add = (_axial_positions(self.origin, v) for v in (z, z_add))
        datasets = self.ct_datasets(series, stored, pos, thickness=thin, spacing=thin)
        datasets += self.ct_datasets(series, stored_add, pos_add, thickness=thick, spacing=thick,
                                     image_type=("DERIVED", "PRIMARY", "AXIAL", "ADD"),
                                     first_instance=n + 1)
        files = self.save("07-mixed-thickness-one-series", datasets, naming="uid")
        self.add_volume("mixed-4mm", series, files[:n], stored, pos, thickness=thin, spacing=thin)
        self.add_volume("mixed-7mm-add", series, files[n:], stored_add, pos_add, thickness=thick,
                        spacing=thick)

    def transfer_syntaxes(self) -> None:
        """8. The same slices in six transfer syntaxes, a series each."""
        n, dz = self.slices, 2.5
        stored = self.stored("transfer-syntax", self.phantom(n, dz), 10.0)
        stored_8bit = np.clip(np.rint((_hu(stored) - INTERCEPT) / BASELINE_SLOPE), 0, 255
                              ).astype(np.uint8)
        positions = _axial_positions(self.origin, self.z_positions(n, dz))
        for number, (label, syntax, naming) in enumerate((
                ("ts-explicit-vr-little-endian", ExplicitVRLittleEndian, "im"),
                ("ts-rle-lossless", RLELossless, "uid"),
                ("ts-jpeg-ls-lossless", JPEGLSLossless, "bare"),
                ("ts-jpeg-lossless-sv1", JPEGLosslessSV1, "im"),
                ("ts-jpeg2000-lossless", JPEG2000Lossless, "uid"),
                ("ts-jpeg-baseline", JPEGBaseline8Bit, "bare")), start=801):
            baseline = syntax == JPEGBaseline8Bit
            series = self.series(label, number, f"CHEST 2.5mm {label[3:].upper()}")
            pixels, slope = (stored_8bit, BASELINE_SLOPE) if baseline else (stored, SLOPE)
            datasets = self.ct_datasets(series, pixels, positions, thickness=dz, spacing=dz,
                                        slope=slope)
            files = self.save(f"08-transfer-syntaxes/{label[3:]}", datasets, naming=naming,
                              transfer_syntax=syntax)
            self.add_volume(label, series, files, pixels, positions, thickness=dz, spacing=dz,
                            transfer_syntax=syntax, slope=slope,
                            tolerance_hu=BASELINE_TOLERANCE_HU if baseline else 0.0)

    def enhanced_dataset(self, series: _Series, key: str, stored: np.ndarray,
                         positions: np.ndarray, stack_numbers: list[int], *, dz: float,
                         instance: int) -> FileDataset:
        """An Enhanced CT image of these frames; rescale only in the functional groups.

        ``stored`` (frames, rows, cols) in the order the frames are stored,
        ``positions`` and ``stack_numbers`` (InStackPositionNumber) likewise.
        """
        ds = self.new_dataset(ENHANCED_CT_IMAGE_STORAGE, series, key, modality="CT",
                              instance=instance)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
        ds.PixelPresentation = "MONOCHROME"
        ds.VolumetricProperties = "VOLUME"
        ds.VolumeBasedCalculationTechnique = "NONE"
        ds.BodyPartExamined = "CHEST"
        ds.PatientPosition = "HFS"
        ds.FrameOfReferenceUID = self.frame_of_reference
        ds.PositionReferenceIndicator = ""
        ds.AcquisitionNumber = 1
        frame_time = self.ident.study_date + clock(self.ident.study_time, 180.0)
        ds.AcquisitionDateTime = frame_time
        ds.ContentQualification = "PRODUCT"
        ds.BurnedInAnnotation = "NO"
        ds.RecognizableVisualFeatures = "NO"
        ds.LossyImageCompression = "00"
        ds.PresentationLUTShape = "IDENTITY"
        ds.NumberOfFrames = len(stored)
        self.set_pixels(ds, stored)

        dim_uid = self.uid("dimension_organization", series.key)
        ds.DimensionOrganizationType = "3D"
        ds.DimensionOrganizationSequence = Sequence([_item(DimensionOrganizationUID=dim_uid)])
        ds.DimensionIndexSequence = Sequence([
            _item(DimensionOrganizationUID=dim_uid, DimensionIndexPointer=0x00209056,
                  FunctionalGroupPointer=0x00209111, DimensionDescriptionLabel="Stack ID"),
            _item(DimensionOrganizationUID=dim_uid, DimensionIndexPointer=0x00209057,
                  FunctionalGroupPointer=0x00209111,
                  DimensionDescriptionLabel="In-Stack Position Number")])
        ds.SharedFunctionalGroupsSequence = Sequence([_item(
            PixelMeasuresSequence=Sequence([_item(
                PixelSpacing=[ds_string(self.ps), ds_string(self.ps)], SliceThickness=ds_string(dz),
                SpacingBetweenSlices=ds_string(dz))]),
            PlaneOrientationSequence=Sequence([_item(
                ImageOrientationPatient=[ds_string(v) for v in AXIAL])]),
            PixelValueTransformationSequence=Sequence([_item(
                RescaleIntercept=ds_string(INTERCEPT), RescaleSlope=ds_string(SLOPE), RescaleType="HU")]),
            CTImageFrameTypeSequence=Sequence([_item(
                FrameType=["ORIGINAL", "PRIMARY", "AXIAL", "NONE"], PixelPresentation="MONOCHROME",
                VolumetricProperties="VOLUME", VolumeBasedCalculationTechnique="NONE")]),
            FrameVOILUTSequence=Sequence([_item(
                WindowCenter="-600", WindowWidth="1500", WindowCenterWidthExplanation="LUNG")]),
            CTAcquisitionTypeSequence=Sequence([_item(AcquisitionType="SPIRAL")]),
            CTReconstructionSequence=Sequence([_item(
                ReconstructionAlgorithm="FILTER_BACK_PROJ", ConvolutionKernel=series.kernel,
                ConvolutionKernelGroup="SOFT_TISSUE",
                ReconstructionDiameter=ds_string(self.size * self.ps))]),
        )])
        ds.PerFrameFunctionalGroupsSequence = Sequence([_item(
            PlanePositionSequence=Sequence([_item(
                ImagePositionPatient=[ds_string(v) for v in positions[f]])]),
            FrameContentSequence=Sequence([_item(
                StackID="1", InStackPositionNumber=stack_numbers[f],
                DimensionIndexValues=[1, stack_numbers[f]], FrameAcquisitionNumber=1,
                FrameAcquisitionDateTime=frame_time, FrameReferenceDateTime=frame_time,
                FrameAcquisitionDuration=500.0)]),
        ) for f in range(len(stored))])
        return ds

    def enhanced_multiframe(self) -> None:
        """9. One Enhanced CT file, its frames stored in a shuffled order."""
        n, dz, label = self.slices, 2.5, "enhanced-multiframe"
        stored = self.stored(label, self.phantom(n, dz), 10.0)
        positions = _axial_positions(self.origin, self.z_positions(n, dz))
        order = self.shuffle(n, label)                 # frame f holds slice order[f]
        series = self.series(label, 9, "CHEST 2.5mm ENHANCED")
        ds = self.enhanced_dataset(series, label, stored[order], positions[order],
                                   [int(k) + 1 for k in order], dz=dz, instance=1)
        rel, = self.save("09-enhanced-ct-multiframe", [ds], naming="uid")
        frame_of_slice = np.argsort(order)
        self.add_volume(label, series, [rel], stored, positions, thickness=dz, spacing=dz,
                        multiframe=True, frames=[(rel, int(f)) for f in frame_of_slice])

    def enhanced_one_frame_files(self) -> None:
        """10. Enhanced CT, one frame per file."""
        n, dz, label = self.slices, 2.5, "enhanced-one-frame-files"
        stored = self.stored(label, self.phantom(n, dz), 10.0)
        positions = _axial_positions(self.origin, self.z_positions(n, dz))
        series = self.series(label, 10, "CHEST 2.5mm ENHANCED 1 FRAME/FILE")
        datasets = [self.enhanced_dataset(series, f"{label}:{k}", stored[k:k + 1],
                                          positions[k:k + 1], [k + 1], dz=dz, instance=n - k)
                    for k in range(n)]
        files = self.save("10-enhanced-ct-one-frame-files", datasets, naming="uid")
        self.add_volume(label, series, files, stored, positions, thickness=dz, spacing=dz,
                        multiframe=True)

    def malformed(self) -> None:
        """11. ``slices`` good slices between two with malformed values (lowest and highest)."""
        n, dz, label = self.slices, 2.5, "malformed-values"
        stored = self.stored(label, self.phantom(n + 2, dz), 10.0)
        positions = _axial_positions(self.origin, self.z_positions(n + 2, dz))
        series = self.series(label, 11, "CHEST 2.5mm")
        datasets = self.ct_datasets(series, stored, positions, thickness=dz, spacing=dz)
        datasets[0].NumberOfFrames = 1
        files = self.save("11-malformed-values", datasets)
        _corrupt(self.path(files[0]), 0x00280008, "IS", b"1 ", b"1A")              # NumberOfFrames
        _corrupt(self.path(files[-1]), 0x00281052, "DS", b"-1024 ", b"-1O24 ")    # letter O
        self.failed[files[0]] = "invalid NumberOfFrames"
        self.failed[files[-1]] = "invalid RescaleIntercept"
        self.add_volume(label, series, files[1:-1], stored[1:-1], positions[1:-1], thickness=dz,
                        spacing=dz)

    def truncated(self) -> None:
        """12. ``slices`` good slices, then a highest one cut inside its pixel data."""
        n, dz, label = self.slices, 2.5, "truncated-slice"
        stored = self.stored(label, self.phantom(n + 1, dz), 10.0)
        positions = _axial_positions(self.origin, self.z_positions(n + 1, dz))
        series = self.series(label, 12, "CHEST 2.5mm")
        datasets = self.ct_datasets(series, stored, positions, thickness=dz, spacing=dz)
        files = self.save("12-truncated-slice", datasets, naming="bare")
        cut = self.path(files[-1])
        data = cut.read_bytes()
        cut.write_bytes(data[:len(data) - stored[-1].nbytes // 2])
        self.failed[files[-1]] = "truncated"
        self.add_volume(label, series, files[:-1], stored[:-1], positions[:-1], thickness=dz,
                        spacing=dz)

    def other_modalities(self) -> None:
        """13. A CR chest radiograph (MONOCHROME1) and three MR slices, each a study of its own."""
        n = self.slices
        clean = self.phantom(n, 2.5)
        path_mm = (np.maximum(clean + 1000.0, 0.0) / 1000.0).sum(axis=1) * self.ps
        rows_z = np.round(np.linspace(n - 1, 0, self.size)).astype(int)
        cr_pixels = np.clip(4095.0 - 12.0 * path_mm[rows_z], 0, 4095).astype(np.uint16)
        series = self.series("cr", 1, "CHEST PA")
        ds = self.new_dataset(CR_IMAGE_STORAGE, series, "cr", modality="CR",
                              study=self.uid("study", "cr"))
        ds.StudyDescription = "XR CHEST PA"
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.BodyPartExamined = "CHEST"
        ds.ViewPosition = "PA"
        ds.PatientOrientation = ["L", "F"]
        ds.ImagerPixelSpacing = ds.PixelSpacing = [ds_string(self.ps), ds_string(self.ps)]
        self.set_pixels(ds, cr_pixels, "MONOCHROME1", bits_stored=12)
        rel, = self.save("13-cr-radiograph", [ds])
        self.skipped[rel] = "not CT"

        series = self.series("mr", 1, "T1 AX 5mm")
        mr_study, mr_frame = self.uid("study", "mr"), self.uid("frame_of_reference", "mr")
        datasets = []
        for k in range(3):
            hu = clean[min(k * (n - 1) // 2, n - 1)]
            signal = np.interp(hu, [-1000, -850, -100, 40, 700], [0, 60, 1800, 700, 250])
            ds = self.new_dataset(MR_IMAGE_STORAGE, series, f"mr:{k}", modality="MR",
                                  study=mr_study, instance=k + 1)
            ds.StudyDescription = "MR CHEST"
            ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
            ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", "NONE", ""
            ds.MRAcquisitionType = "2D"
            ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = "500", "12", 1
            ds.MagneticFieldStrength = "1.5"
            ds.SliceThickness, ds.SpacingBetweenSlices = "5", "5"
            ds.FrameOfReferenceUID = mr_frame
            ds.PositionReferenceIndicator = ""
            ds.ImagePositionPatient = [ds_string(self.origin), ds_string(self.origin), ds_string(Z_TOP - 10 + 5 * k)]
            ds.ImageOrientationPatient = [ds_string(v) for v in AXIAL]
            ds.PixelSpacing = [ds_string(self.ps), ds_string(self.ps)]
            self.set_pixels(ds, np.rint(signal).astype(np.uint16), bits_stored=12)
            datasets.append(ds)
        for rel in self.save("13-mr-series", datasets):
            self.skipped[rel] = "not CT"

    def non_images(self) -> None:
        """14. A Basic Text SR (free text with PHI) and a README.txt."""
        ident = self.ident
        series = self.series("sr", 999, "CT CHEST REPORT")
        ds = self.new_dataset(BASIC_TEXT_SR_STORAGE, series, "sr", modality="SR")
        ds.ValueType = "CONTAINER"
        ds.ConceptNameCodeSequence = Sequence([_item(
            CodeValue="18748-4", CodingSchemeDesignator="LN",
            CodeMeaning="Diagnostic Imaging Report")])
        ds.ContinuityOfContent = "SEPARATE"
        ds.CompletionFlag = "COMPLETE"
        ds.VerificationFlag = "UNVERIFIED"
        ds.ReferencedPerformedProcedureStepSequence = Sequence([])
        ds.PerformedProcedureCodeSequence = Sequence([])
        ds.ContentSequence = Sequence([_item(
            RelationshipType="CONTAINS", ValueType="TEXT",
            ConceptNameCodeSequence=Sequence([_item(
                CodeValue="121073", CodingSchemeDesignator="DCM", CodeMeaning="Impression")]),
            TextValue=(f"Low-dose chest CT of {ident.patient_display_name} ({ident.patient_id}), "
                       f"referred by {ident.referring_physician}: stable right upper lobe "
                       f"nodule. Read at {ident.institution}."))])
        rel, = self.save("14-structured-report", [ds], naming="bare")
        self.skipped[rel] = "not an image"

        readme = self.root / "README.txt"
        readme.write_text(
            "Synthetic messy CT exam written by ctsvd_testdata.messy_exam for tests.\n"
            "Every identity in the DICOM headers is made up. This file is not DICOM.\n")
        self.skipped[self.rel(readme)] = "not DICOM"

    def path(self, rel: str) -> Path:
        return self.root / rel


def write_messy_exam(outdir: Path, *, size: int = 64, slices: int = 8, seed: int = 0) -> MessyExam:
    """Write the messy CT exam described in the module docstring.

    Parameters
    ----------
    outdir : Path
        The exam folder; it must not exist or be empty.
    size : int
        In-plane matrix of the CT images (at least 16; field of view 350 mm).
    slices : int
        Slices of every CT volume (at least 4).
    seed : int
        Seeds anatomy, noise, UIDs and file-name shuffles: the same seed
        writes the same bytes.

    Returns
    -------
    MessyExam
        The ground truth: expected volumes, skipped and failed files.

    Raises
    ------
    ValueError
        If ``size`` or ``slices`` is out of range.
    FileExistsError
        If ``outdir`` already holds files.
    """
    if int(slices) != slices or slices < MIN_SLICES or slices > 999:
        raise ValueError(f"slices must be an integer from {MIN_SLICES} to 999")
    if int(size) != size or size < 16 or size > 1024:
        raise ValueError("size must be an integer from 16 to 1024")
    root = Path(outdir)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} already holds files")
    root.mkdir(parents=True, exist_ok=True)

    w = _ExamWriter(root, size=int(size), slices=int(slices), seed=int(seed))
    w.localizers()
    w.reconstructions()
    w.screenshot()
    w.burned_in()
    w.dicomdir()
    w.tilted()
    w.mixed_thickness()
    w.transfer_syntaxes()
    w.enhanced_multiframe()
    w.enhanced_one_frame_files()
    w.malformed()
    w.truncated()
    w.other_modalities()
    w.non_images()

    volumes = sorted(w.volumes, key=lambda v: VOLUME_LABELS.index(v.label))
    return MessyExam(root=root, volumes=volumes, skipped=dict(sorted(w.skipped.items())),
                     failed=dict(sorted(w.failed.items())), identity=w.ident, uids=w.uids)
