"""Test data for dcm_anon: a small CT series full of made-up PHI, written with pydicom.

(A uniquely named module rather than conftest.py, so that tests of several
plugins can run in one pytest session.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO_ROOT / ".." / "shared" / "data"

UID_ROOT = "1.3.6.1.4.1.99999.58310."
PATIENT_NAME = "DOE^JANE^QUINCY"
PATIENT_ID = "MRN-58310-7Q"
BIRTH_DATE = "19610314"
STUDY_DATE = "20240229"
INSTITUTION = "SAINT ELSEWHERE GENERAL HOSPITAL"
REFERRING = "HOUSE^GREGORY"
OPERATOR = "CHASE^ROBERT"
STATION = "ELSEWHERE-CT3"
ACCESSION = "ACC-99123456"
SOURCE_AE = "ELSEWHERE_PACS"
PRIVATE_CREATOR = "ACME_PRIVATE 1.0"

# Every string that must not survive de-identification.
PHI_STRINGS = [PATIENT_NAME, "DOE^JANE", PATIENT_ID, BIRTH_DATE, INSTITUTION, "ELSEWHERE",
               REFERRING, OPERATOR, STATION, ACCESSION, SOURCE_AE, PRIVATE_CREATOR, "QUINCY"]

# Relative paths of the four slices: nested, plus one at the top level.
LAYOUT = ["case01/ct/slice-001.dcm", "case01/ct/slice-002.dcm",
          "case01/ct/part2/slice-003.dcm", "slice-004.dcm"]

GEOMETRY = ["Rows", "Columns", "PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient",
            "SliceThickness", "SliceLocation", "RescaleIntercept", "RescaleSlope", "RescaleType",
            "WindowCenter", "WindowWidth", "BitsAllocated", "BitsStored", "HighBit",
            "PixelRepresentation", "PhotometricInterpretation", "SamplesPerPixel", "Modality",
            "InstanceNumber", "KVP", "ConvolutionKernel"]


@dataclass
class Series:
    root: Path
    files: list[Path]                      # absolute input paths, in LAYOUT order
    study_uid: str
    series_uid: str
    frame_uid: str
    sop_uids: list[str]
    pixels: list[bytes] = field(default_factory=list)

    @property
    def original_uids(self) -> list[str]:
        return [self.study_uid, self.series_uid, self.frame_uid, *self.sop_uids]


def ct_slice(i: int, sop_uids: list[str], study_uid: str, series_uid: str, frame_uid: str,
             *, implicit: bool = False) -> FileDataset:
    """One 32x32 int16 CT slice with made-up PHI in every corner a real scanner puts it."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uids[i]
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID_ROOT + "999"
    meta.SourceApplicationEntityTitle = SOURCE_AE
    # A preamble with content (some systems put a TIFF header there).
    preamble = (b"II*\x00" + PATIENT_NAME.encode() + b"\x00" * 128)[:128]
    ds = FileDataset("slice", {}, file_meta=meta, preamble=preamble)
    ds.is_little_endian = True
    ds.is_implicit_VR = implicit
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uids[i]
    ds.StudyDate = STUDY_DATE
    ds.SeriesDate = STUDY_DATE
    ds.ContentDate = STUDY_DATE
    ds.StudyTime = "141516"
    ds.AccessionNumber = ACCESSION
    ds.Modality = "CT"
    ds.Manufacturer = "ACME"
    ds.InstitutionName = INSTITUTION
    ds.InstitutionAddress = "1 ELSEWHERE ROAD, BOSTON"
    ds.ReferringPhysicianName = REFERRING
    ds.StationName = STATION
    ds.StudyDescription = "CT CHEST " + PATIENT_NAME
    ds.OperatorsName = OPERATOR
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = BIRTH_DATE
    ds.PatientSex = "F"
    ds.PatientAge = "063Y"
    ds.SliceThickness = "2.5"
    ds.KVP = "120"
    ds.ConvolutionKernel = "STANDARD"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "S58310"
    ds.SeriesNumber = "2"
    ds.InstanceNumber = str(i + 1)
    ds.ImagePositionPatient = ["-100.0", "-100.0", f"{-50.0 + 2.5 * i:.1f}"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = frame_uid
    ds.SliceLocation = f"{-50.0 + 2.5 * i:.1f}"
    ds.ImageComments = f"patient {PATIENT_NAME} moved during scan"
    ref = Dataset()
    ref.ReferencedSOPClassUID = CTImageStorage
    ref.ReferencedSOPInstanceUID = sop_uids[(i + 1) % len(sop_uids)]
    ds.ReferencedImageSequence = Sequence([ref])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 32
    ds.Columns = 32
    ds.PixelSpacing = ["0.7", "0.7"]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    block = ds.private_block(0x0009, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", PATIENT_NAME)
    block.add_new(0x02, "LO", PATIENT_ID)
    rng = np.random.default_rng(i)
    ds.PixelData = rng.integers(-1024, 2000, size=(32, 32), dtype=np.int16).tobytes()
    return ds


def write_series(root: Path, layout: list[str] = LAYOUT) -> Series:
    """Write the test series under ``root``; the last slice is Implicit VR Little Endian."""
    study, series, frame = UID_ROOT + "1", UID_ROOT + "2", UID_ROOT + "3"
    sop_uids = [f"{UID_ROOT}10.{i + 1}" for i in range(len(layout))]
    files, pixels = [], []
    for i, rel in enumerate(layout):
        ds = ct_slice(i, sop_uids, study, series, frame, implicit=(i == len(layout) - 1))
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, write_like_original=False)
        files.append(path)
        pixels.append(bytes(ds.PixelData))
    return Series(root, files, study, series, frame, sop_uids, pixels)


def output_dicoms(outdir: Path) -> list[Path]:
    return sorted(p for p in outdir.rglob("*.dcm") if "tag-report" not in p.relative_to(outdir).parts)
