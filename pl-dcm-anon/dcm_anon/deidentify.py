"""Apply the profile to one dataset, its sequences and its file meta information."""

from __future__ import annotations

from typing import Iterable

import pydicom
from pydicom.datadict import get_entry
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

from dcm_anon import __version__
from dcm_anon.profile import (DUMMY, KEEP, MAP_UID, MAP_UIDS_INSIDE, PROFILE_CODE, REMOVE, ZERO,
                              Profile, RetainOption)
from dcm_anon.uids import Pseudonyms

PROFILE_NAME = "DICOM PS3.15 E.1 Basic Application Level Confidentiality Profile"

PATIENT_ID = Tag(0x0010, 0x0020)
PATIENT_NAME = Tag(0x0010, 0x0010)
# Padding after the dataset: meaningless, and it may carry leftover bytes.
TRAILING_PADDING = Tag(0xFFFC, 0xFFFC)

DUMMY_TEXT = "ANONYMIZED"   # fits every text VR, CS and AE included (max 16 chars)
_DUMMY_BY_VR: dict[str, object] = {
    "DA": "19000101", "TM": "000000", "DT": "19000101000000", "AS": "000Y",
    "IS": "0", "DS": "0",
    "US": 0, "SS": 0, "UL": 0, "SL": 0, "UV": 0, "SV": 0, "FL": 0.0, "FD": 0.0, "AT": 0,
    "US or SS": 0, "US or OW": 0, "US or SS or OW": 0,
    "OB": b"\x00\x00", "OW": b"\x00\x00", "OF": b"\x00\x00\x00\x00", "OD": b"\x00" * 8,
    "OL": b"\x00\x00\x00\x00", "OV": b"\x00" * 8, "UN": b"\x00\x00", "OB or OW": b"\x00\x00",
}

# Only these file meta elements are kept; the rest (source, sending and
# receiving AE titles and addresses, private information) can identify sites.
_FILE_META_KEPT = ("FileMetaInformationVersion", "MediaStorageSOPClassUID", "TransferSyntaxUID")


def _known_public(tag: BaseTag) -> bool:
    """Is ``tag`` in pydicom's dictionary, repeating groups (60xx...) included?"""
    try:
        get_entry(tag)
        return True
    except KeyError:
        return False


# UIDs that name a type (a SOP class, a transfer syntax, a coding scheme), not
# an instance: they identify nobody and mapping them would break their meaning.
_TYPE_UID_WORDS = ("ClassUID", "SOPClasses", "TransferSyntaxUID", "CodingSchemeUID", "ContextUID",
                   "ContextGroupExtensionCreatorUID", "MappingResourceUID")


def _names_a_type(tag: BaseTag) -> bool:
    try:
        keyword = get_entry(tag)[4]
    except KeyError:
        return False
    return any(word in keyword for word in _TYPE_UID_WORDS)


class Deidentifier:
    """Applies the chosen profile to datasets, with one UID mapping for the whole run."""

    def __init__(self, profile: Profile, pseudonyms: Pseudonyms, options: Iterable[RetainOption]):
        self.profile = profile
        self.pseudonyms = pseudonyms
        self.options = tuple(options)
        self.keep_dates = any(o.dest == "keep_dates" for o in self.options)
        self.keep_uids = any(o.dest == "keep_uids" for o in self.options)

    # -- the whole file ---------------------------------------------------

    def apply(self, ds: FileDataset) -> None:
        """De-identify ``ds`` in place: body, file meta, preamble and the de-identification record."""
        self._dataset(ds)
        self._file_meta(ds)
        ds.preamble = b"\x00" * 128   # it may hold a TIFF header, with PHI in it
        self._record(ds)

    def _file_meta(self, ds: FileDataset) -> None:
        old = ds.file_meta
        meta = FileMetaDataset()
        for keyword in _FILE_META_KEPT:
            if keyword in old:
                setattr(meta, keyword, getattr(old, keyword))
        if "MediaStorageSOPClassUID" not in meta and "SOPClassUID" in ds:
            meta.MediaStorageSOPClassUID = ds.SOPClassUID
        # The body's SOPInstanceUID is already mapped (or kept with --keep-uids).
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = "PYDICOM " + pydicom.__version__
        ds.file_meta = meta

    def _record(self, ds: Dataset) -> None:
        """Say in the file what was done to it (PS3.15 E.1.1)."""
        ds.PatientIdentityRemoved = "YES"
        # LO allows 64 characters per value, so the method is several values.
        ds.DeidentificationMethod = [PROFILE_NAME, f"dcm_anon {__version__}",
                                     *(o.meaning for o in self.options)]
        codes = Sequence()
        for value, meaning in [PROFILE_CODE, *((o.code, o.meaning) for o in self.options)]:
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            codes.append(item)
        ds.DeidentificationMethodCodeSequence = codes
        if not self.keep_dates:
            ds.LongitudinalTemporalInformationModified = "REMOVED"
        elif ds.get("LongitudinalTemporalInformationModified", "") not in ("MODIFIED", "REMOVED"):
            # What an earlier de-identifier did to the dates stays on record.
            ds.LongitudinalTemporalInformationModified = "UNMODIFIED"

    # -- one dataset level --------------------------------------------------

    def _dataset(self, ds: Dataset) -> None:
        pseudonym = self.patient_pseudonym(ds) if PATIENT_ID in ds or PATIENT_NAME in ds else None
        for tag in list(ds.keys()):
            tag = Tag(tag)
            if (tag.is_private or tag.element == 0x0000 or tag.group in (0x0000, 0x0002)
                    or tag == TRAILING_PADDING):
                # Private data cannot be judged; group lengths would be stale;
                # command (0000) and file meta (0002) elements do not belong in
                # the dataset (the file meta is rebuilt on its own).
                del ds[tag]
                continue
            if tag in (PATIENT_ID, PATIENT_NAME):
                ds[tag].value = pseudonym
                continue
            elem = ds[tag]
            action = self.profile.action(tag)
            if action is None:
                if elem.VR == "UN" or not _known_public(tag):
                    del ds[tag]        # not in the dictionary: we cannot judge it
                    continue
                action = KEEP
                # The table lists only some instance UIDs (not e.g. Target or
                # Volume Frame of Reference UID); an original UID kept anywhere
                # would link the output back to the source, so all are mapped.
                if elem.VR == "UI" and not self.keep_uids and not _names_a_type(tag):
                    action = MAP_UID
            self._act(ds, elem, action)

    def patient_pseudonym(self, ds: Dataset) -> str:
        """One pseudonym per distinct PatientID at this level (the name stands in when there is no ID)."""
        source = str(ds.get(PATIENT_ID).value or "").strip() if PATIENT_ID in ds else ""
        if not source and PATIENT_NAME in ds:
            source = str(ds[PATIENT_NAME].value or "").strip()
        return self.pseudonyms.patient(source)

    def _act(self, ds: Dataset, elem, action: str) -> None:
        vr = elem.VR
        if action == REMOVE:
            del ds[elem.tag]
        elif action == ZERO:
            elem.value = Sequence() if vr == "SQ" else None
        elif action == DUMMY:
            if vr == "SQ":
                # No meaningful dummy items exist; an empty sequence keeps the
                # attribute present without carrying anything.
                elem.value = Sequence()
            elif vr == "UI":
                self._map_uids(elem)
            elif not elem.is_empty:
                # An empty value hides nothing and was valid in the input; a
                # dummy would only invent content (an "ANONYMIZED" contrast agent).
                elem.value = _DUMMY_BY_VR.get(vr, DUMMY_TEXT)
        elif action in (MAP_UID, MAP_UIDS_INSIDE):
            if vr == "UI":
                self._map_uids(elem)
            elif vr == "SQ":
                # X/Z/U*: keep the sequence; every instance UID inside is mapped
                # by the table (Referenced SOP Instance UID) or the rule above.
                self._items(elem)
            else:
                del ds[elem.tag]   # not a UID after all: remove rather than guess
        elif action == KEEP:
            if vr == "SQ":
                self._items(elem)
        else:  # pragma: no cover - the profile only yields the actions above
            raise ValueError(f"unknown action {action!r}")

    def _items(self, elem) -> None:
        for item in elem.value or ():
            self._dataset(item)

    def _map_uids(self, elem) -> None:
        value = elem.value
        if value is None or value == "":
            return
        if isinstance(value, (MultiValue, list, tuple)):
            elem.value = [self.pseudonyms.uid(v) for v in value]
        else:
            elem.value = self.pseudonyms.uid(value)


def burned_in_annotation(ds: Dataset) -> bool:
    """Does the file say its pixels carry burned-in text (which we do not clean)?"""
    return str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES"

