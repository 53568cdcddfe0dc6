"""The shipped profile table, action resolution and the UID/pseudonym mapping."""

from __future__ import annotations

import re
from importlib import resources

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dcm_anon.deidentify import Deidentifier
from dcm_anon.profile import (DUMMY, KEEP, MAP_UID, MAP_UIDS_INSIDE, REMOVE, RETAIN_OPTIONS, ZERO,
                              Profile, load_profile, load_table, resolve_row)
from dcm_anon.uids import Pseudonyms

from ctsvd_testdata.shared import data_dir


def test_table_ships_with_the_package_and_its_license():
    rows = load_table()
    assert len(rows) == 621
    data = resources.files("dcm_anon").joinpath("data")
    license_text = data.joinpath("LICENSE.txt").read_text()
    assert "Copyright (c) 2017 Innolitics, LLC." in license_text
    assert "Permission is hereby granted, free of charge" in license_text
    source = data.joinpath("SOURCE.md").read_text()
    assert "innolitics/dicom-standard" in source and "7f4749d" in source and "MIT" in source


@pytest.mark.skipif(data_dir("dicom-standard") is None, reason="shared data not available")
def test_shipped_table_is_an_unchanged_copy():
    shared = data_dir("dicom-standard") / "confidentiality_profile_attributes.json"
    shipped = resources.files("dcm_anon").joinpath("data", "confidentiality_profile_attributes.json")
    assert shipped.read_bytes() == shared.read_bytes()


def test_every_basic_action_resolves():
    actions = {resolve_row(r, ()) for r in load_table()}
    assert actions <= {REMOVE, ZERO, DUMMY, KEEP, MAP_UID, MAP_UIDS_INSIDE}


@pytest.mark.parametrize("tag, action", [
    (0x00100010, ZERO),            # Patient's Name (Z; replaced by the pseudonym elsewhere)
    (0x00080020, ZERO),            # Study Date
    (0x00080050, ZERO),            # Accession Number
    (0x00080080, DUMMY),           # Institution Name X/Z/D
    (0x00081010, DUMMY),           # Station Name X/Z/D
    (0x00080021, DUMMY),           # Series Date X/D
    (0x00180010, DUMMY),           # Contrast/Bolus Agent Z/D
    (0x00080022, ZERO),            # Acquisition Date X/Z
    (0x00204000, REMOVE),          # Image Comments X
    (0x00080018, MAP_UID),         # SOP Instance UID
    (0x00020003, MAP_UID),         # Media Storage SOP Instance UID
    (0x00081140, MAP_UIDS_INSIDE),  # Referenced Image Sequence X/Z/U*
    (0x50001234, REMOVE),          # Curve Data (50xx,xxxx)
    (0x501E0010, REMOVE),
    (0x60003000, REMOVE),          # Overlay Data (60xx,3000)
    (0x60024000, REMOVE),          # Overlay Comments (60xx,4000)
    (0x60000010, None),            # Overlay Rows: not listed
    (0x00280030, None),            # Pixel Spacing: not listed, kept
    (0x00200032, None),            # Image Position (Patient)
])
def test_basic_profile_actions(tag, action):
    assert load_profile().action(tag) == action


@pytest.mark.parametrize("column, tag, kept", [
    ("rtnLongFullDatesOpt", 0x00080020, True),    # Study Date
    ("rtnUIDsOpt", 0x00080018, True),
    ("rtnUIDsOpt", 0x00081140, True),
    ("rtnDevIdOpt", 0x00081010, True),            # Station Name
    ("rtnDevIdOpt", 0x00080055, False),           # Station AE Title: C, we do not clean
    ("rtnPatCharsOpt", 0x00101010, True),         # Patient's Age
    ("rtnPatCharsOpt", 0x00102110, False),        # Allergies: C
    ("rtnInstIdOpt", 0x00080080, True),           # Institution Name
    ("rtnInstIdOpt", 0x00100010, False),          # an option never keeps the name
])
def test_option_columns(column, tag, kept):
    profile = load_profile([column])
    assert (profile.action(tag) == KEEP) is kept
    if not kept:
        assert profile.action(tag) == load_profile().action(tag)


def test_options_cover_every_option_column_but_pixels_graphics_and_structured_content():
    columns = {key for row in load_table() for key in row if key.startswith(("rtn", "clean"))}
    # Clean Pixel Data, Clean Recognizable Visual Features, Clean Graphics and Clean
    # Structured Content are not offered: dcm_anon never looks inside pixels or SR trees.
    assert columns - {o.column for o in RETAIN_OPTIONS} == {"cleanGraphOpt", "cleanStructContOpt"}
    assert {o.code for o in RETAIN_OPTIONS} == {"113105", "113106", "113107", "113108", "113109", "113110",
                                                "113111", "113112"}


def test_unknown_action_is_refused():
    with pytest.raises(ValueError, match="unknown action"):
        Profile([{"tag": "(0010,0010)", "basicProfile": "Q"}])


def test_uid_mapping_form_and_consistency():
    p = Pseudonyms.for_run()
    old = "1.3.6.1.4.1.99999.58310.10.1"
    new = p.uid(old)
    assert re.fullmatch(r"2\.25\.(0|[1-9][0-9]*)", new) and len(new) <= 64
    assert int(new[5:]) < 2 ** 128
    assert p.uid(old) == new and p.uid(old + " ") == new
    assert p.uid("1.3.6.1.4.1.99999.58310.10.2") != new
    assert p.uid("1.2.840.10008.5.1.4.1.1.2") == "1.2.840.10008.5.1.4.1.1.2"
    assert p.uid("") == ""


def test_keyed_mapping_is_reproducible_and_random_is_not():
    a, b = Pseudonyms.for_run("site-secret"), Pseudonyms.for_run("site-secret")
    assert a.uid("1.2.3.4") == b.uid("1.2.3.4")
    assert a.patient("MRN-1") == b.patient("MRN-1")
    assert re.fullmatch(r"ANON-[0-9A-F]{20}", a.patient("MRN-1"))
    assert Pseudonyms.for_run().uid("1.2.3.4") != Pseudonyms.for_run().uid("1.2.3.4")
    assert Pseudonyms.for_run("other").uid("1.2.3.4") != a.uid("1.2.3.4")


def _deidentify(ds: Dataset, *columns: str) -> Dataset:
    options = [o for o in RETAIN_OPTIONS if o.column in columns]
    Deidentifier(load_profile(columns), Pseudonyms.for_run("k"), options).body(ds)
    return ds


def test_dummy_values_per_vr_and_empty_values_stay_empty():
    ds = Dataset()
    ds.InstitutionName = "SAINT ELSEWHERE"          # LO, X/Z/D
    ds.SeriesDate = "20240229"                       # DA, X/D
    ds.SeriesTime = "101010"                         # TM, X/D
    ds.AcquisitionDateTime = "20240229101010"        # DT, X/Z/D
    ds.ContrastBolusAgent = ""                       # Z/D but already empty
    ds.InstitutionCodeSequence = Sequence([Dataset()])
    ds.InstitutionCodeSequence[0].CodeMeaning = "SAINT ELSEWHERE"
    _deidentify(ds)
    assert ds.InstitutionName == "ANONYMIZED"
    assert ds.SeriesDate == "19000101" and ds.SeriesTime == "000000"
    assert ds.AcquisitionDateTime == "19000101000000"
    assert ds.ContrastBolusAgent == ""
    assert len(ds.InstitutionCodeSequence) == 0


def test_nested_and_unknown_and_private_elements():
    ds = Dataset()
    item = Dataset()
    item.PatientName = "DOE^JANE"                    # nested: still replaced
    item.StudyDate = "20240229"
    item.add_new(0x00291010, "LO", "private")       # private inside a kept sequence
    ds.CTDIPhantomTypeCodeSequence = Sequence([item])   # not in the table, allow-listed: kept, recursed
    ds.AnatomicRegionSequence = Sequence([Dataset()])   # public, neither in the table nor allow-listed
    ds.AnatomicRegionSequence[0].CodeMeaning = "x"
    ds.add_new(0x00311000, "LO", "odd group")       # private
    ds.add_new(0x00090010, "LO", "ACME")             # private creator
    ds.add_new(0x00080000, "UL", 0)                  # group length
    ds.add_new(0x00231000, "LO", "x")                # private
    ds.add_new(0x00110010, "LO", "y")
    ds.add_new(0x0008FF01, "UN", b"??")              # public but unknown to the dictionary
    ds.add_new(0x00001000, "UI", "1.2.3.4")          # a command element (Affected SOP Instance UID)
    ds.add_new(0xFFFCFFFC, "OB", b"DOE^JANE")        # trailing padding
    _deidentify(ds)
    assert list(ds.keys()) == [0x00189346]
    nested = ds.CTDIPhantomTypeCodeSequence[0]
    assert str(nested.PatientName).startswith("ANON-") and nested["StudyDate"].is_empty
    assert 0x00291010 not in nested


def test_uids_inside_referenced_image_sequence_are_all_mapped():
    ds = Dataset()
    ref = Dataset()
    ref.ReferencedSOPInstanceUID = "1.2.3.4.5"
    ref.SOPInstanceUIDOfConcatenationSource = "1.2.3.4.6"   # an instance UID the table omits
    ref.ReferencedSOPClassUID = "1.2.3.99"                  # a class DICOM does not define: mapped
    ds.ReferencedImageSequence = Sequence([ref])
    ds.TargetFrameOfReferenceUID = "1.2.3.4.7"              # omitted by the table, not allow-listed
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"             # DICOM's own: kept
    _deidentify(ds)
    out = ds.ReferencedImageSequence[0]
    assert out.ReferencedSOPClassUID.startswith("2.25.")
    assert out.ReferencedSOPInstanceUID.startswith("2.25.")
    assert "SOPInstanceUIDOfConcatenationSource" not in out and "TargetFrameOfReferenceUID" not in ds
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"

    kept = Dataset()
    kept.ReferencedImageSequence = Sequence([Dataset()])
    kept.ReferencedImageSequence[0].ReferencedSOPInstanceUID = "1.2.3.4.5"
    kept.FrameOfReferenceUID = "1.2.3.4.7"
    _deidentify(kept, "rtnUIDsOpt")
    assert kept.ReferencedImageSequence[0].ReferencedSOPInstanceUID == "1.2.3.4.5"
    assert kept.FrameOfReferenceUID == "1.2.3.4.7"
