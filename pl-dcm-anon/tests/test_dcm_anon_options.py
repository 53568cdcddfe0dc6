"""The profile options researchers need: modified dates, clean descriptors, safe private
attributes; the de-identification record appended; pseudonyms that never merge patients;
worker processes that change nothing in the output."""

from __future__ import annotations

import datetime as dt
import json
import re
import struct
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from dcm_anon.dates import shift_da, shift_dt
from dcm_anon.safe_private import NUMBER_SIZES, load_allow_list
from dcm_anon.uids import Pseudonyms
from ctsvd_testdata.anon_tree import LAYOUT, OUTPUT_OF, PATIENT_ID, PATIENT_NAME, STUDY_DATE, output_dicoms
from ctsvd_testdata.shared import data_dir

KEY = ["--pseudonym-key", "test key"]
TCIA_CODES = ["113100", "113101", "113104", "113105", "113107", "113108", "113109", "113111"]


def _ct(path: Path, **attrs) -> Path:
    """A tiny but complete CT slice (4x4 pixels) with the given attributes on top."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = attrs.setdefault("SOPInstanceUID", generate_uid())
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\x00" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.Modality = "CT"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = np.arange(16, dtype="<i2").tobytes()
    for keyword, value in attrs.items():
        if isinstance(value, tuple):        # (tag, VR, value): a private element
            ds.add_new(*value)
        else:
            setattr(ds, keyword, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _read_all(outdir: Path) -> list[pydicom.FileDataset]:
    return [pydicom.dcmread(p) for p in output_dicoms(outdir)]


def _day(text: str) -> dt.date:
    return dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))


# -- Retain Longitudinal Temporal Information with Modified Dates ----------------


def _exam(root: Path, patient: str, study_date: str, instance: int) -> Path:
    acquisition = (_day(study_date) + dt.timedelta(days=1)).strftime("%Y%m%d")
    item = Dataset()
    item.ReferencedSOPInstanceUID = generate_uid()
    item.ReferencedSOPClassUID = CTImageStorage
    item.InstanceCreationDate = study_date                      # a date inside a sequence
    return _ct(root / patient / f"{study_date}.dcm", PatientID=patient, PatientName=f"{patient}^TEST",
               StudyDate=study_date, StudyTime="093015", SeriesDate=study_date, ContentDate=acquisition,
               AcquisitionDateTime=acquisition + "101112.5+0100", ContentTime="101112",
               InstanceNumber=instance, ReferencedImageSequence=Sequence([item]))


@pytest.fixture
def two_patients(tmp_path: Path) -> tuple[Path, dict[str, list[str]]]:
    root = tmp_path / "in"
    dates = {"PAT-ALPHA-0001": ["20210304", "20210919"], "PAT-BRAVO-0002": ["20190101", "20200229"]}
    for patient, days in dates.items():
        for i, day in enumerate(days, 1):
            _exam(root, patient, day, i)
    return root, dates


def test_shifted_dates_keep_intervals_within_a_patient_and_differ_across_patients(two_patients, tmp_path, run):
    root, dates = two_patients
    out = tmp_path / "out"
    assert run(root, out, "--no-tag-report", "--shift-dates", *KEY) == 0
    shifts: dict[str, set[int]] = {}
    studies: dict[str, list[dt.date]] = {}
    for ds in _read_all(out):
        original = _day(ds.StudyDate) - dt.timedelta(days=0)
        # Every date of the file moved by the same number of days, nested ones included.
        moved = [_day(ds.StudyDate), _day(ds.SeriesDate), _day(ds.ContentDate) - dt.timedelta(days=1),
                 _day(ds.AcquisitionDateTime) - dt.timedelta(days=1),
                 _day(ds.ReferencedImageSequence[0].InstanceCreationDate)]
        assert len(set(moved)) == 1
        # Times of day and the time part of a date-time are untouched by a whole-day shift.
        assert ds.StudyTime == "093015" and ds.ContentTime == "101112"
        assert ds.AcquisitionDateTime.endswith("101112.5+0100")
        assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
        assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100", "113107"]
        studies.setdefault(str(ds.PatientID), []).append(original)
    originals = {p: sorted(_day(d) for d in days) for p, days in dates.items()}
    assert len(studies) == 2
    for pseudonym, days in studies.items():
        days.sort()
        # Which patient is this? The one whose interval matches: intervals are preserved exactly.
        (patient,) = [p for p, o in originals.items() if o[1] - o[0] == days[1] - days[0]]
        shift = (days[0] - originals[patient][0]).days
        assert -3652 <= shift <= -365
        shifts[patient] = {shift, (days[1] - originals[patient][1]).days}
    assert all(len(s) == 1 for s in shifts.values())                 # one shift per patient
    assert shifts["PAT-ALPHA-0001"] != shifts["PAT-BRAVO-0002"]        # and each patient its own
    for path in output_dicoms(out):
        data = path.read_bytes()
        for days in dates.values():
            for day in days:
                assert day.encode() not in data and day not in str(path)
        # Each file was named after its study date, in a folder named after its patient:
        # output names say neither the real date, nor the shifted one (which would give the shift away).
        assert re.fullmatch(r"series-00[1-4]/0001\.dcm", path.relative_to(out).as_posix())


def test_names_carry_no_input_name_whatever_the_options(two_patients, tmp_path, run):
    root, dates = two_patients
    for flags in (["--keep-dates"], [], ["--shift-dates"], ["--keep-uids"]):
        out = tmp_path / "-".join(["out", *flags])
        assert run(root, out, "--no-tag-report", *flags) == 0
        # Four series (one file each), numbered in input order: PAT-ALPHA's two, then PAT-BRAVO's.
        names = sorted(p.relative_to(out).as_posix() for p in output_dicoms(out))
        assert names == [f"series-00{i}/0001.dcm" for i in range(1, 5)]
        text = (out / "dcm_anon.report.json").read_text()
        assert "PAT-" not in text and not any(d in text for days in dates.values() for d in days)


def test_the_shift_is_reproducible_with_the_key_and_secret_without(two_patients, tmp_path, run):
    root, _ = two_patients
    for name, flags in (("a", KEY), ("b", KEY), ("c", [])):
        assert run(root, tmp_path / name, "--no-tag-report", "--shift-dates", *flags) == 0
    dates = {name: sorted(ds.StudyDate for ds in _read_all(tmp_path / name)) for name in "abc"}
    assert dates["a"] == dates["b"]
    # A random key gives other shifts (equal for all four files only with chance 1/3288 per patient).
    assert dates["c"] != dates["a"]


def test_date_values_that_cannot_be_shifted():
    assert shift_da("20240229", -366) == "20230228"
    assert shift_da("2024.02.29", 1) == "20240301"                 # ACR-NEMA form
    assert shift_da("2024", 1) is None and shift_da("20241340", 1) is None
    assert shift_dt("20240229235959.123456-0500", 1) == "20240301235959.123456-0500"
    assert shift_dt("202402", 1) is None                            # too coarse to move by days
    assert shift_dt("20240229xx", 1) is None


def test_keep_dates_and_shift_dates_exclude_each_other(series, outdir, run):
    assert run(series.root, outdir, "--keep-dates", "--shift-dates") == 2
    assert not output_dicoms(outdir)


# -- the de-identification record ---------------------------------------------


def _tcia_record(ds_attrs: dict, ltim: str) -> dict:
    codes = Sequence()
    for value in TCIA_CODES:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", f"TCIA {value}"
        codes.append(item)
    return {**ds_attrs, "PatientIdentityRemoved": "YES",
            "DeidentificationMethod": "Per DICOM PS 3.15 AnnexE. Details in 0012,0064",
            "DeidentificationMethodCodeSequence": codes, "LongitudinalTemporalInformationModified": ltim}


@pytest.mark.parametrize("flags, ltim_in, ltim_out, added", [
    (["--keep-dates"], "MODIFIED", "MODIFIED", ["113106"]),     # kept dates were already shifted
    (["--keep-dates"], "", "UNMODIFIED", ["113106"]),
    ([], "MODIFIED", "REMOVED", []),
    (["--shift-dates"], "MODIFIED", "MODIFIED", []),             # 113107 already on record
    (["--shift-dates"], "REMOVED", "REMOVED", []),               # shifting dummies restores nothing
    (["--keep-safe-private", "--clean-descriptors"], "MODIFIED", "REMOVED", []),
])
def test_the_record_is_appended_and_tells_the_truth_about_dates(tmp_path, run, flags, ltim_in, ltim_out, added):
    attrs = _tcia_record({"PatientID": "A002304", "StudyDate": "19001231"}, ltim_in)
    if not ltim_in:
        del attrs["LongitudinalTemporalInformationModified"]
    _ct(tmp_path / "in" / "a.dcm", **attrs)
    out = tmp_path / "out"
    assert run(tmp_path / "in", out, "--no-tag-report", *flags) == 0
    (ds,) = _read_all(out)
    codes = [c.CodeValue for c in ds.DeidentificationMethodCodeSequence]
    # The input's eight items first, as they were, then ours; the profile code is not repeated.
    assert codes == [*TCIA_CODES, *added]
    assert [c.CodeMeaning for c in ds.DeidentificationMethodCodeSequence][:8] == [f"TCIA {v}" for v in TCIA_CODES]
    # The earlier method's free text is not kept (the allow-list keeps no free text); its codes are.
    assert "Per DICOM PS 3.15 AnnexE. Details in 0012,0064" not in ds.DeidentificationMethod
    assert "dcm_anon 0.1.0" in ds.DeidentificationMethod
    assert ds.LongitudinalTemporalInformationModified == ltim_out


# -- Retain Safe Private ------------------------------------------------------


def _ge_and_unknown_private(path: Path) -> Path:
    return _ct(path, PatientID="MRN-PRIV-7781", PatientName=PATIENT_NAME,
               p1=(0x00530010, "LO", "GEHC_CT_ADVAPP_001"),
               p2=(0x00531040, "SH", "SS50"),                       # ASiR level: listed, but text
               p3=(0x00531043, "SH", "50"),                          # listed, but text
               p4=(0x00531066, "LO", "JANE QUINCY DOE"),             # same block, not on the list
               p5=(0x00190010, "LO", "GEMS_ACQU_01"),
               p6=(0x00191027, "LO", "DOE^JANE^QUINCY"),             # listed place, wrong VR (DS)
               p6b=(0x00191023, "DS", "39.375"),                     # table speed: listed, a number
               p7=(0x00190011, "LO", "GEMS_PARM_01"),                # GE creator in the wrong group
               p8=(0x00191127, "SH", "0.984:1"),
               p9=(0x00290010, "LO", "ACME_PRIVATE 1.0"),            # unknown creator
               p10=(0x00291010, "LO", PATIENT_ID),
               p11=(0x7005_0010, "LO", "TOSHIBA_MEC_CT3"),
               p12=(0x7005_100B, "SH", "AIDR 3D STD"),               # listed, but text
               p13=(0x0043_0010, "LO", "GEMS_PARM_01"),
               p14=(0x0043_1031, "UN", b"DOE^JANE MRN-PRIV-7781 "),  # listed as DS, stored as UN
               p15=(0x0043_1064, "CS", "MRN-PRIV-7781"))             # listed as CS: text


def _private_elements(ds: Dataset) -> dict[int, object]:
    return {int(e.tag): e.value for e in ds.iterall() if e.tag.is_private}


def _on_the_list(ds: Dataset) -> bool:
    """Every private element of ``ds`` is on the allow-list, or the creator of a block that is."""
    allow = load_allow_list()
    creators = {(e.tag.group, e.tag.element): str(e.value).strip() for e in ds.iterall()
                if e.tag.is_private and 0x10 <= e.tag.element <= 0xFF}
    for e in ds.iterall():
        if not e.tag.is_private or e.tag.element <= 0xFF:
            continue
        creator = creators.get((e.tag.group, e.tag.element >> 8))
        if (creator, e.tag.group, e.tag.element & 0xFF) not in allow:
            return False
    return True


def test_safe_private_keeps_exactly_the_allow_list(tmp_path, run):
    _ge_and_unknown_private(tmp_path / "in" / "a.dcm")
    out, bare = tmp_path / "out", tmp_path / "bare"
    assert run(tmp_path / "in", out, "--no-tag-report", "--keep-safe-private") == 0
    assert run(tmp_path / "in", bare, "--no-tag-report") == 0
    (ds,) = _read_all(out)
    # Only numbers stay: a listed text field (GE's (0043,xx64), Toshiba's filter), a listed
    # number stored as UN (GE's (0043,xx31)) or holding letters is free text, or could be.
    assert _private_elements(ds) == {0x00190010: "GEMS_ACQU_01", 0x00191023: 39.375}
    assert _on_the_list(ds)
    assert "113111" in [c.CodeValue for c in ds.DeidentificationMethodCodeSequence]
    (plain,) = _read_all(bare)
    assert _private_elements(plain) == {}
    data = output_dicoms(out)[0].read_bytes()
    for text in ("JANE QUINCY DOE", "DOE^JANE", PATIENT_ID, "ACME_PRIVATE", "GEMS_PARM_01", "MRN-PRIV-7781",
                 "TOSHIBA", "AIDR", "SS50"):
        assert text.encode() not in data, text


def test_a_listed_number_must_read_as_one():
    from pydicom.dataelem import RawDataElement
    from dcm_anon.safe_private import _is_number

    raw = lambda vr, value: RawDataElement(0x00191023, vr, len(value), value, 0, vr is None, True)
    assert _is_number(raw("DS", b"39.375"), "DS") and _is_number(raw(None, b"-1.5E2\\3 "), "DS")
    assert not _is_number(raw("DS", b"DOE "), "DS") and not _is_number(raw(None, b"JANE"), "DS")
    assert not _is_number(raw("UN", b"12.5"), "DS") and not _is_number(raw("SH", b"12.5"), "DS")
    assert _is_number(raw(None, b"\x01\x00"), "US") and not _is_number(raw(None, b"\x01\x00\x02"), "US")


def test_the_allow_list_names_its_sources():
    text = (Path(__file__).parents[1] / "dcm_anon" / "data" / "safe_private.json").read_text()
    data = json.loads(text)
    allow = load_allow_list()
    numeric = [a for a in data["attributes"] if a["vr"] in NUMBER_SIZES]
    assert len(allow) == len(numeric) >= 20 and all(e.vr in NUMBER_SIZES for e in allow.values())
    vendors = {a["creator"].split("_")[0].split(" ")[0] for a in data["attributes"]}
    assert {"GEMS", "GEHC", "TOSHIBA", "ELSCINT1", "SIEMENS"} <= vendors   # GE, Canon/Toshiba, Philips, Siemens
    for a in data["attributes"]:
        assert a["sources"] and all(s in data["sources"] for s in a["sources"])
        assert a["vr"] in {"DS", "FD", "FL", "SS", "SH", "LO", "CS", "IS", "US", "UL"}


@pytest.mark.skipif(data_dir("covid-19-ny-sbu") is None, reason="shared COVID-19-NY-SBU slices not available")
def test_safe_private_on_real_tcia_slices(tmp_path, run):
    src = data_dir("covid-19-ny-sbu")
    out = tmp_path / "out"
    assert run(src, out, "--no-tag-report", "--keep-safe-private", "--keep-patient-chars", "--shift-dates",
               "--clean-descriptors") == 0
    with_private = 0
    for ds in _read_all(out):
        assert _on_the_list(ds)
        private = _private_elements(ds)
        values = [e for e in ds.iterall() if e.tag.is_private and e.tag.element > 0xFF]
        assert all(e.VR in NUMBER_SIZES for e in values)              # numbers only
        with_private += bool(values)
        assert 0x00131010 not in private                              # CTP's collection name: not safe
        assert ds.PatientAge and ds.PatientSex                         # research data kept with the options
        assert ds.StudyDescription                                     # cleaned, not dropped
        codes = [c.CodeValue for c in ds.DeidentificationMethodCodeSequence]
        assert codes[:8] == TCIA_CODES and ds.LongitudinalTemporalInformationModified == "MODIFIED"
    assert with_private   # GE's numeric reconstruction parameters


# -- Clean Descriptors ------------------------------------------------------------


def test_clean_descriptors_keeps_descriptions_without_identity(series, outdir, run):
    assert run(series.root, outdir, "--no-tag-report", "--clean-descriptors") == 0
    ds = pydicom.dcmread(outdir / OUTPUT_OF[LAYOUT[0]])
    assert ds.StudyDescription == "CT CHEST LOW DOSE"
    assert ds.SeriesDescription == "LUNG 2.5mm LOW DOSE"
    assert ds.ProtocolName == "LDCT LUNG SCREENING"
    # "LDCT screening JANE QUINCY DOE MRN MRN-58310-7Q: follow-up of RUL nodule"
    assert ds.ImageComments == "LDCT screening : follow-up of RUL nodule"
    assert "113105" in [c.CodeValue for c in ds.DeidentificationMethodCodeSequence]


def test_no_phi_in_any_output_byte_with_every_option_that_keeps_more(series, outdir, run, caplog):
    flags = ["--shift-dates", "--clean-descriptors", "--keep-safe-private"]
    assert run(series.root, outdir, *flags) == 0
    forbidden = [*series.phi_strings, STUDY_DATE, *series.original_uids]
    inputs = [p.read_bytes() for p in series.files]
    for text in forbidden:
        assert any(text.encode() in data for data in inputs), f"{text!r} not in the input"
    files = [p for p in outdir.rglob("*") if p.is_file()]
    assert len(output_dicoms(outdir)) == 4 and any("tag-report" in p.parts for p in files)
    for path in files:
        data = path.read_bytes()
        for text in forbidden:
            assert text.encode() not in data, f"{text!r} found in {path.relative_to(outdir)}"
    assert "finished" in caplog.text
    for text in forbidden:
        assert text not in caplog.text


# -- pseudonyms ---------------------------------------------------------------


def test_no_merges_among_100000_patients():
    pseudonyms = Pseudonyms.for_run("a fixed key")
    made = {pseudonyms.patient(f"id:\x00MRN{i:07d}") for i in range(100_000)}
    assert len(made) == 100_000
    assert all(len(p) == len("ANON-") + 20 for p in list(made)[:10])   # 80 bits


def test_patients_without_id_get_pseudonyms_of_their_own(tmp_path, run):
    study = generate_uid()
    _ct(tmp_path / "in" / "named-1.dcm", PatientName="ROE^RICHARD", PatientBirthDate="19700101")
    _ct(tmp_path / "in" / "named-2.dcm", PatientName="ROE^RICHARD", PatientBirthDate="19700101")
    _ct(tmp_path / "in" / "other.dcm", PatientName="POE^PAULA")
    _ct(tmp_path / "in" / "anon-1.dcm", StudyInstanceUID=study)
    _ct(tmp_path / "in" / "anon-2.dcm", StudyInstanceUID=study)
    _ct(tmp_path / "in" / "anon-3.dcm")
    out = tmp_path / "out"
    assert run(tmp_path / "in", out, "--no-tag-report") == 0
    inputs = sorted(p.name for p in (tmp_path / "in").iterdir())
    report = json.loads((out / "dcm_anon.report.json").read_text())
    ids = {inputs[o["input"] - 1]: str(pydicom.dcmread(out / o["path"]).PatientID) for o in report["outputs"]}
    assert ids["named-1.dcm"] == ids["named-2.dcm"]                 # the same person
    assert ids["anon-1.dcm"] == ids["anon-2.dcm"]                   # one study, one patient
    assert len({ids[n] for n in ("named-1.dcm", "other.dcm", "anon-1.dcm", "anon-3.dcm")}) == 4
    assert all(i.startswith("ANON-") for i in ids.values())


# -- worker processes -----------------------------------------------------------


def test_workers_change_nothing_in_the_output(tmp_path, run):
    for i in range(40):
        _ct(tmp_path / "in" / f"p{i % 3}" / f"slice-{i:03d}.dcm", PatientID=f"MRN-{i % 3}",
            PatientName=f"DOE^{i % 3}", StudyDate="20220101", ImageComments=f"MRN-{i % 3}")
    outs = {n: tmp_path / f"out{n}" for n in (1, 2)}
    for n, out in outs.items():
        assert run(tmp_path / "in", out, "--no-tag-report", "--workers", str(n), "--shift-dates", *KEY) == 0
    report = json.loads((outs[2] / "dcm_anon.report.json").read_text())
    assert report["summary"]["workers"] == 2 and report["summary"]["patients"] == 3
    one, two = (sorted(p.relative_to(o) for p in output_dicoms(o)) for o in outs.values())
    assert one == two and len(one) == 40
    for rel in one:
        assert (outs[1] / rel).read_bytes() == (outs[2] / rel).read_bytes()
    assert not list(outs[2].glob(".dcm_anon-*"))                  # no temporary file left behind


def test_public_attributes_stored_as_un_are_kept_with_their_real_vr(tmp_path, run):
    """Some writers store known public attributes with VR UN (pydicom's rtdose_rle_1frame.dcm does):
    the undecoded fast path must still recognise and keep them, as decoding them does."""
    path = _ct(tmp_path / "in" / "a.dcm", PatientID="MRN-UN-1", ImagePositionPatient=[189.4, 199.4, -761.87])
    data = path.read_bytes()
    # Re-encode (0020,0032) DS as (0020,0032) UN: reserved bytes and a 4-byte length.
    at = data.index(b"\x20\x00\x32\x00DS")
    length = struct.unpack("<H", data[at + 6:at + 8])[0]
    path.write_bytes(data[:at] + b"\x20\x00\x32\x00UN\x00\x00" + struct.pack("<L", length) + data[at + 8:])
    assert pydicom.dcmread(path).get_item(0x00200032).VR == "UN"   # really stored as UN
    out = tmp_path / "out"
    assert run(tmp_path / "in", out, "--no-tag-report") == 0
    (ds,) = _read_all(out)
    assert ds["ImagePositionPatient"].VR == "DS" and [float(v) for v in ds.ImagePositionPatient] == \
        [189.4, 199.4, -761.87]
