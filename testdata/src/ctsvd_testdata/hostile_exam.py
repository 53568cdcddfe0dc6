"""A hostile CT exam, written as real DICOM: identity planted wherever an export can hide it.

:func:`write_hostile_exam` writes one small CT series of the synthetic chest
(:mod:`ctsvd_testdata.phantom`) and a few files around it, with one made-up
patient's identity planted in every place a careless export or an unkind
tester has put it:

* headers: attributes PS3.15 Table E.1-1 does not list (a birth date in
  another calendar, StudyUpdateDateTime three sequence levels deep, free
  text in TextValue and CommentsOnTheScheduledProcedureStep, overlay
  descriptions and labels, evaluator and reviewer names, entity IDs),
  made-up public tags of every text VR (at the top level and three
  sequence levels deep), GE private elements stored as UN and as text at
  places a safe-private list names, descriptions that spell the patient's
  name in every way a person writes it (run together, two letters,
  accented and not, Cyrillic, CJK), and person names in three scripts;
* a JPEG COM and an APP1 segment inside one slice's compressed pixel data;
* file and folder names: an ISO date, a date-time file name, the name run
  together, the ID's digits without their prefix, a two-letter name, CJK
  and accented names, the birth date;
* files that fail or are withheld before the patient's name is known: a
  truncated first file, a burned-in screenshot, a text file, and a
  DICOMDIR body stored under the CT SOP class.

:meth:`HostileExam.pieces` lists every value and its pieces a de-identified
output must not contain. Everything is fictitious.
"""

from __future__ import annotations

import copy
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import JPEGLosslessSV1, SecondaryCaptureImageStorage

from ctsvd_testdata.jpeg_lossless import encode_jpeg_lossless_sv1
from ctsvd_testdata.phantom import DemoIdentity, write_demo_series

SURNAME, GIVEN, SHORT = "ZEBRAQUUX", "XAVIERA", "JO"
ID_DIGITS = "847261953"
PATIENT_ID = f"HX-{ID_DIGITS}"
BIRTH_DATE = "19610317"
STUDY_DATE = "20230405"
ACCESSION = "ACC-55120934"
ACCENTED = ("ØSTERGÅRD", "JÖRG")
CYRILLIC = ("ЯСНОГОРСКАЯ", "ИВАНА")
CJK = ("鷲尾", "雅美")
# Every text VR, with a value that fits it (the made-up tags carry one each).
TEXT_VALUES = {
    "AE": SURNAME, "AS": "061Y", "CS": f"{SURNAME} {ID_DIGITS[:6]}", "DA": STUDY_DATE, "DS": ID_DIGITS,
    "DT": STUDY_DATE + "101112", "IS": ID_DIGITS, "LO": f"{GIVEN} {SURNAME} {PATIENT_ID}",
    "LT": f"{GIVEN} {SURNAME} born {BIRTH_DATE}", "PN": f"{SURNAME}^{GIVEN}", "SH": GIVEN,
    "ST": f"{SURNAME} {ACCESSION}", "TM": "101112", "UC": f"{SURNAME}-{ID_DIGITS}",
    "UI": f"1.2.{ID_DIGITS}.{BIRTH_DATE}", "UR": f"https://example.invalid/{SURNAME}/{ID_DIGITS}",
    "UT": f"{GIVEN} {SURNAME} {PATIENT_ID} {STUDY_DATE}",
}
_MADE_UP = 0x0018FF00   # public (even group), unknown to the standard: (0018,FF00) onward


@dataclass
class HostileExam:
    root: Path
    series_files: list[Path]           # the CT series, in order along the normal
    hu: np.ndarray                     # its exact HU (the JPEG slice is lossless)
    planted: dict[str, str] = field(default_factory=dict)   # where → what, for the record

    @staticmethod
    def pieces() -> list[str]:
        """Every value and piece that no output may contain, wherever it is (names, bytes, logs).

        Long enough that finding one is a leak, not chance: the two-letter name is
        checked in names only (see :meth:`name_tokens`).
        """
        return [SURNAME, GIVEN, PATIENT_ID, ID_DIGITS, BIRTH_DATE, "1961-03-17", STUDY_DATE, "2023-04-05",
                ACCESSION, ACCESSION[4:], *ACCENTED, "JOERG", *CYRILLIC, *CJK,
                f"{GIVEN.title()}{SURNAME.title()}", f"{SURNAME}{GIVEN}"]

    @staticmethod
    def name_tokens() -> list[str]:
        """Short pieces that no file or folder name may hold as a word of its own."""
        return [SHORT, "JORG", *CJK]


def _segment(marker: int, body: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(body) + 2) + body


def _made_up(level: int) -> dict[int, tuple[str, object]]:
    """Made-up public tags, one per text VR (a different block for each level)."""
    return {_MADE_UP + 0x20 * level + i: (vr, value) for i, (vr, value) in enumerate(TEXT_VALUES.items())}


def _add_made_up(ds: Dataset, level: int) -> None:
    for tag, (vr, value) in _made_up(level).items():
        ds.add_new(tag, vr, value)


def _deep_item() -> Dataset:
    """Three sequence levels deep: kept sequences down to an item that holds identity."""
    deepest = Dataset()
    deepest.StudyUpdateDateTime = STUDY_DATE + "101112"
    deepest.PatientName = f"{SURNAME}^{GIVEN}"
    deepest.TextValue = f"{GIVEN} {SURNAME} {PATIENT_ID}"
    _add_made_up(deepest, 3)
    deepest.add_new(0x00290010, "LO", "ACME_HOSTILE")
    deepest.add_new(0x00291001, "LO", f"{SURNAME} {PATIENT_ID}")
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "121311", "DCM", "Localizer"
    code.StudyUpdateDateTime = STUDY_DATE + "101112"
    code.PurposeOfReferenceCodeSequence = Sequence([deepest])         # level 3
    source = Dataset()
    source.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    # A real reference (--keep-uids keeps it, by design): no identity in it.
    source.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.10.1188.1"
    source.PurposeOfReferenceCodeSequence = Sequence([code])          # level 2
    _add_made_up(source, 2)
    return source


def _plant_headers(ds: Dataset) -> None:
    """Identity in every place of the Why list of the issue, in one slice's header."""
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = f"{SURNAME}^{GIVEN}^{SHORT}={CJK[0]}^{CJK[1]}"
    ds.OtherPatientNames = "^".join(ACCENTED)
    ds.PatientBirthName = "^".join(CYRILLIC)
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = BIRTH_DATE
    ds.AccessionNumber = ACCESSION
    ds.PatientBirthDateInAlternativeCalendar = f"{BIRTH_DATE} (Gregorian: {SURNAME})"
    ds.TextValue = f"{GIVEN} {SURNAME} {PATIENT_ID} {STUDY_DATE}"
    ds.CommentsOnTheScheduledProcedureStep = f"Call {GIVEN} {SURNAME} on {STUDY_DATE}, MRN {ID_DIGITS}"
    ds.EvaluatorName = f"{SURNAME}^{GIVEN}"
    ds.SecondaryReviewerName = "^".join(ACCENTED)
    ds.DocumentAuthorTrial = "^".join(CYRILLIC)
    ds.LocalNamespaceEntityID = f"{SURNAME}-{ID_DIGITS}"
    ds.UniversalEntityID = f"urn:oid:1.2.{ID_DIGITS}"
    # Descriptions spelling the patient's name as people write it (for --clean-descriptors).
    ds.StudyDescription = f"CT chest {GIVEN.title()}{SURNAME.title()} {SHORT.title()} {''.join(CJK)} Joerg Östergård"
    ds.SeriesDescription = f"LOW DOSE {SURNAME.lower()}{GIVEN.lower()} {CYRILLIC[1].title()} 2023-04-05"
    ds.ProtocolName = f"chest {SHORT}{'CT'} {SURNAME.title()}-{GIVEN.title()}"
    ds.ImageComments = f"pt {ACCENTED[1].title()} {SURNAME} dob 1961-03-17 id {ID_DIGITS}"
    # An overlay, described and labelled with the patient.
    ds.add_new(0x60000010, "US", int(ds.Rows))
    ds.add_new(0x60000011, "US", int(ds.Columns))
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60000022, "LO", f"{SURNAME} {GIVEN}")
    ds.add_new(0x60001500, "LO", f"{ID_DIGITS} {STUDY_DATE}")
    ds.add_new(0x60003000, "OW", bytes((int(ds.Rows) * int(ds.Columns) + 7) // 8 + 1 & ~1))
    _add_made_up(ds, 0)
    # GE's private places a safe-private list names, holding text and UN (the find).
    ds.add_new(0x00430010, "LO", "GEMS_PARM_01")
    ds.add_new(0x00431031, "UN", f"{SURNAME}^{GIVEN} {PATIENT_ID}".encode())
    ds.add_new(0x00431064, "CS", f"{ID_DIGITS}")
    ds.ReferencedImageSequence = Sequence([_deep_item()])             # level 1


def _compress_with_comment(ds: Dataset) -> None:
    """JPEG Lossless SV1, with a COM and an APP1 segment that name the patient."""
    frame = encode_jpeg_lossless_sv1(ds.pixel_array)
    comment = f"{SURNAME}^{GIVEN} MRN {PATIENT_ID} {STUDY_DATE}".encode()
    frame = frame[:2] + _segment(0xFE, comment) + _segment(0xE1, b"Exif\x00\x00" + comment) + frame[2:]
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1


def _names(slices: int, sop_uids: list[str]) -> list[str]:
    """Where each slice goes: names in every format the issue lists."""
    out = []
    for i in range(slices):
        if i < slices // 2:
            out.append(f"{GIVEN.title()}{SURNAME.title()}/2023-04-05_CT/20230405101112_{i:04d}.dcm")
        elif i < slices * 3 // 4:
            out.append(f"{ID_DIGITS}/{SHORT.title()}_{CJK[0]}{CJK[1]}/{ACCENTED[1].title()} "
                       f"{ACCENTED[0].title()} {i}.dcm")
        else:
            out.append(f"{SURNAME}^{GIVEN} {BIRTH_DATE}/{sop_uids[i]}.dcm")
    return out


def write_hostile_exam(outdir: Path, *, slices: int = 12, size: int = 32, seed: int = 0) -> HostileExam:
    """Write the hostile exam into ``outdir`` (created; must not hold files)."""
    outdir = Path(outdir)
    if outdir.exists() and any(outdir.iterdir()):
        raise FileExistsError(f"{outdir} already holds files")
    outdir.mkdir(parents=True, exist_ok=True)
    identity = DemoIdentity(patient_name=f"{SURNAME}^{GIVEN}^{SHORT}", patient_id=PATIENT_ID,
                            birth_date=BIRTH_DATE, study_date=STUDY_DATE, accession_number=ACCESSION)
    with tempfile.TemporaryDirectory() as tmp:
        demo = write_demo_series(Path(tmp), slices=slices, size=size, noise_hu=20.0, seed=seed,
                                 identity=identity)
        names = _names(slices, demo.uids["sop_instances"])
        files = []
        for i, (src, rel) in enumerate(zip(demo.files, names)):
            ds = pydicom.dcmread(src)
            _plant_headers(ds)
            if i == slices - 1:
                _compress_with_comment(ds)
            path = outdir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)
            files.append(path)
        first = pydicom.dcmread(demo.files[0])

    # Sorted first, cut short: it fails before anything says whose it is.
    truncated = outdir / f"000-{SURNAME}-{ID_DIGITS}.dcm"
    data = files[0].read_bytes()
    truncated.write_bytes(data[:len(data) - 300])

    # A screenshot with the name burned in (withheld), a text file, a DICOMDIR body under the CT class.
    folder = outdir / f"{GIVEN.title()}{SURNAME.title()}"
    screenshot = copy.deepcopy(first)
    _plant_headers(screenshot)
    screenshot.SOPClassUID = screenshot.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    screenshot.BurnedInAnnotation = "YES"
    screenshot.save_as(folder / f"screenshot 2023-04-05 {SURNAME}.dcm", enforce_file_format=True)
    (folder / f"notes {SURNAME} {ID_DIGITS}.txt").write_text(
        f"{GIVEN} {SURNAME}, {PATIENT_ID}, born {BIRTH_DATE}, scanned {STUDY_DATE}\n", encoding="utf-8")
    dicomdir = copy.deepcopy(first)
    _plant_headers(dicomdir)
    dicomdir.FileSetID = SURNAME
    record = Dataset()
    record.DirectoryRecordType = "PATIENT"
    record.PatientName, record.PatientID = f"{SURNAME}^{GIVEN}", PATIENT_ID
    record.ReferencedFileID = [SURNAME, ID_DIGITS]
    dicomdir.DirectoryRecordSequence = Sequence([record])
    dicomdir.save_as(outdir / f"DICOMDIR-body {SURNAME}.dcm", enforce_file_format=True)

    order = np.argsort([float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in files])
    return HostileExam(root=outdir, series_files=[files[i] for i in order], hu=demo.hu,
                       planted={"series": ", ".join(names), "truncated": truncated.name})
