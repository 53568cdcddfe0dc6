"""Apply the profile to one dataset, its sequences and its file meta information."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterable

import pydicom
from pydicom.datadict import dictionary_VR, get_entry
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom._uid_dict import UID_dictionary
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

from dcm_anon import __version__
from dcm_anon.dates import SHIFTERS, shift_values
from dcm_anon.descriptors import Identifying
from dcm_anon.identity import patient_identity
from dcm_anon.profile import (CLEAN, DUMMY, KEEP, MAP_UID, MAP_UIDS_INSIDE, PROFILE_CODE, REMOVE,
                              SHIFT_DATES, ZERO, Profile, RetainOption)
from dcm_anon.pixel_segments import strip_segments
from dcm_anon.safe_attributes import SAFE_TAGS
from dcm_anon.safe_private import load_allow_list, safe_private_tags
from dcm_anon.uids import Pseudonyms

PROFILE_NAME = "DICOM PS3.15 E.1 Basic Application Level Confidentiality Profile"

PATIENT_ID = 0x00100020
PATIENT_NAME = 0x00100010
PIXEL_DATA = 0x7FE00010
# Padding after the dataset: meaningless, and it may carry leftover bytes.
TRAILING_PADDING = 0xFFFCFFFC
_UNDEFINED = 0xFFFFFFFF

DUMMY_TEXT = "ANONYMIZED"   # fits every text VR, CS and AE included (max 16 chars)
_DUMMY_BY_VR: dict[str, object] = {
    "DA": "19000101", "TM": "000000", "DT": "19000101000000", "AS": "000Y",
    "IS": "0", "DS": "0",
    "US": 0, "SS": 0, "UL": 0, "SL": 0, "UV": 0, "SV": 0, "FL": 0.0, "FD": 0.0, "AT": 0,
    "US or SS": 0, "US or OW": 0, "US or SS or OW": 0,
    "OB": b"\x00\x00", "OW": b"\x00\x00", "OF": b"\x00\x00\x00\x00", "OD": b"\x00" * 8,
    "OL": b"\x00\x00\x00\x00", "OV": b"\x00" * 8, "UN": b"\x00\x00", "OB or OW": b"\x00\x00",
}
_TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC"})   # what Clean Descriptors can clean
_IDENTIFYING_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC", "CS", "AE", "DA", "DT", "TM",
                              "AS", "UR"})

# The patient's own names: their parts count from two letters in Clean Descriptors.
_OWN_NAMES = ("PatientName", "OtherPatientNames", "PatientBirthName")

# Only these file meta elements are kept; the rest (source, sending and
# receiving AE titles and addresses, private information) can identify sites.
_FILE_META_KEPT = ("FileMetaInformationVersion", "MediaStorageSOPClassUID", "TransferSyntaxUID")


# UIDs that name a type (a SOP class, a transfer syntax, a coding scheme), not
# an instance: they identify nobody and mapping them would break their meaning.
_TYPE_UID_WORDS = ("ClassUID", "SOPClasses", "TransferSyntaxUID", "CodingSchemeUID", "ContextUID",
                   "ContextGroupExtensionCreatorUID", "MappingResourceUID")


@functools.lru_cache(maxsize=None)
def _names_a_type(tag: int) -> bool:
    try:
        keyword = get_entry(tag)[4]
    except KeyError:
        return False
    return any(word in keyword for word in _TYPE_UID_WORDS)


def _standard_uids(value) -> bool:
    """Is every UID in ``value`` one that DICOM defines (a SOP class, a transfer syntax...)?"""
    values = value if isinstance(value, (MultiValue, list, tuple)) else [value]
    return all(str(v) in UID_dictionary for v in values if v)


@dataclass
class _File:
    """What the whole file shares while its levels are de-identified."""

    shift_days: int = 0
    identifying: Identifying | None = None


def _vr(raw, tag: BaseTag) -> str | None:
    """The VR of an element without decoding its value (implicit VR: the dictionary's)."""
    vr = raw.VR
    if vr is None:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            return None
    return vr


def _empty(elem) -> bool:
    """Has this element (decoded or not) an empty value?"""
    if elem.is_raw:
        return not elem.value
    return elem.is_empty


def _filled(elem) -> bool:
    """Is this a raw element whose value, decoded, would not be empty (more than padding)?"""
    return elem.is_raw and elem.length != _UNDEFINED and bool(elem.value.strip(b" \x00"))


class Deidentifier:
    """Applies the chosen profile to datasets, with one UID mapping for the whole run.

    Elements the profile keeps are never decoded: they are written back as the
    bytes they were read as, which is most of the speed of a run.
    """

    def __init__(self, profile: Profile, pseudonyms: Pseudonyms, options: Iterable[RetainOption]):
        self.profile = profile
        self.pseudonyms = pseudonyms
        self.options = tuple(options)
        chosen = {o.dest for o in self.options}
        self.keep_dates = "keep_dates" in chosen
        self.shift_dates = "shift_dates" in chosen
        self.keep_uids = "keep_uids" in chosen
        self.clean_descriptors = "clean_descriptors" in chosen
        self.safe_private = load_allow_list() if "keep_safe_private" in chosen else None

    # -- the whole file ---------------------------------------------------

    def apply(self, ds: FileDataset) -> None:
        """De-identify ``ds`` in place: body, file meta, preamble and the de-identification record."""
        previous_ltim = str(ds.get("LongitudinalTemporalInformationModified", "") or "").strip().upper()
        pseudonym = self.patient_pseudonym(ds)
        self.body(ds)
        self._pixel_segments(ds)
        # A file without a patient ID or name still gets the pseudonym of the
        # identity it has (see dcm_anon.identity), so its patient can be followed.
        for tag, vr in ((PATIENT_NAME, "PN"), (PATIENT_ID, "LO")):
            if tag not in ds or ds[tag].is_empty:
                ds.add_new(tag, vr, pseudonym)
        self._file_meta(ds)
        ds.preamble = b"\x00" * 128   # it may hold a TIFF header, with PHI in it
        self._record(ds, previous_ltim)

    def body(self, ds: Dataset) -> None:
        """De-identify the dataset itself, at every level (no file meta, no record)."""
        self._dataset(ds, self._file_context(ds))

    def _file_context(self, ds: Dataset) -> _File:
        context = _File()
        if self.shift_dates:
            context.shift_days = self.pseudonyms.date_shift_days(patient_identity(ds))
        if self.clean_descriptors:
            own = [str(ds.get(k) or "") for k in _OWN_NAMES if k in ds]
            context.identifying = Identifying(self._identifying_values(ds), own)
        return context

    def _identifying_values(self, ds: Dataset) -> list[str]:
        """The text of every element the Basic Profile would not keep, and of every person name.

        Attributes the table does not list are removed too, but for want of a judgement, not
        because they identify: their words ("CHEST" in Body Part Examined) are not taken out.
        """
        values: list[str] = []
        for elem in ds.iterall():
            if elem.VR not in _IDENTIFYING_VRS or elem.tag.is_private:
                continue
            action = self.profile.basic(elem.tag)
            if elem.VR != "PN" and action in (None, KEEP, MAP_UID, MAP_UIDS_INSIDE):
                continue
            if self.profile.action(elem.tag) == CLEAN and elem.VR != "PN":
                continue   # the descriptions themselves are what is cleaned, not what identifies
            value = elem.value
            for item in (value if isinstance(value, (MultiValue, list, tuple)) else [value]):
                values.append(str(item or ""))
        return values

    @staticmethod
    def _pixel_segments(ds: FileDataset) -> None:
        """Compressed frames lose their comment and application segments (dcm_anon.pixel_segments)."""
        if PIXEL_DATA in ds and UID(ds.file_meta.get("TransferSyntaxUID", "")).is_encapsulated:
            elem = ds[PIXEL_DATA]
            stripped = strip_segments(elem.value)
            if stripped is not None:
                elem.value = stripped

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

    def _record(self, ds: Dataset, previous_ltim: str) -> None:
        """Say in the file what was done to it (PS3.15 E.1.1), after the codes earlier de-identifiers left."""
        ds.PatientIdentityRemoved = "YES"
        # LO allows 64 characters per value, so the method is several values. An earlier
        # de-identifier's free text is gone with the body (not on the allow-list); its codes stay.
        ds.DeidentificationMethod = [PROFILE_NAME, f"dcm_anon {__version__}", *(o.meaning for o in self.options)]
        codes = Sequence(ds.get("DeidentificationMethodCodeSequence") or [])
        present = {(str(c.get("CodeValue", "")), str(c.get("CodingSchemeDesignator", ""))) for c in codes}
        for value, meaning in [PROFILE_CODE, *((o.code, o.meaning) for o in self.options)]:
            if (value, "DCM") in present:
                continue   # already on record; a second copy would add nothing
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            codes.append(item)
        ds.DeidentificationMethodCodeSequence = codes
        ds.LongitudinalTemporalInformationModified = self._ltim(previous_ltim)

    def _ltim(self, previous: str) -> str:
        """What the dates now are, given what the input said had been done to them."""
        if self.keep_dates:
            return previous if previous in ("MODIFIED", "REMOVED") else "UNMODIFIED"
        if self.shift_dates:
            return "REMOVED" if previous == "REMOVED" else "MODIFIED"
        return "REMOVED"

    # -- one dataset level --------------------------------------------------

    def _dataset(self, ds: Dataset, context: _File) -> None:
        pseudonym = self.patient_pseudonym(ds) if PATIENT_ID in ds or PATIENT_NAME in ds else None
        safe = safe_private_tags(ds, self.safe_private) if self.safe_private is not None else ()
        # Plain ints: this loop runs for every element of every file, and BaseTag's
        # comparisons and properties are Python code.
        for tag in list(ds.keys()):
            t = int(tag)
            group, element = t >> 16, t & 0xFFFF
            if group & 1:
                if t not in safe:
                    del ds[tag]   # private data cannot be judged unless the allow-list vouches for it
                continue
            if element == 0 or group in (0x0000, 0x0002) or t == TRAILING_PADDING:
                # Group lengths would be stale; command (0000) and file meta
                # (0002) elements do not belong in the dataset (the file meta
                # is rebuilt on its own).
                del ds[tag]
                continue
            if t == PATIENT_ID or t == PATIENT_NAME:
                ds[tag].value = pseudonym
                continue
            vr = _vr(ds.get_item(tag), tag)
            if vr == "UN":
                vr = ds[tag].VR        # decoded: pydicom gives a known public tag its real VR
            action = self.profile.action(t)
            if action is None:
                # Not in the table: kept only when the allow-list vouches for it
                # (dcm_anon.safe_attributes); all else goes, known or not.
                if t not in SAFE_TAGS or vr is None or vr == "UN":
                    del ds[tag]
                    continue
                action = KEEP
                if vr == "UI" and not self.keep_uids:
                    if _names_a_type(t):
                        # DICOM's own classes are kept; any other value could carry anything.
                        if not _standard_uids(ds[tag].value):
                            self._map_uids(ds[tag])
                        continue
                    action = MAP_UID   # an original instance UID would link back to the source
            if vr != "SQ":
                # The commonest actions need no decoding either.
                if action == KEEP:
                    continue           # written back as read
                if action == REMOVE:
                    del ds[tag]
                    continue
                if action in (ZERO, DUMMY) and _empty(ds.get_item(tag)):
                    continue           # empty already: nothing to hide (see _act)
                if action == ZERO and len(vr) == 2:   # not an ambiguous "US or SS"
                    ds.add_new(tag, vr, None)
                    continue
                # What _act does, without decoding the old value first.
                if action in (DUMMY, MAP_UID, MAP_UIDS_INSIDE) and vr == "UI" and _filled(ds.get_item(tag)):
                    ds.add_new(tag, vr, self._mapped_raw_uids(ds.get_item(tag).value))
                    continue
                if action == DUMMY and len(vr) == 2 and _filled(ds.get_item(tag)):
                    ds.add_new(tag, vr, _DUMMY_BY_VR.get(vr, DUMMY_TEXT))
                    continue
            self._act(ds, ds[tag], action, context)

    def patient_pseudonym(self, ds: Dataset) -> str:
        """One pseudonym per patient identity at this level (see :mod:`dcm_anon.identity`)."""
        return self.pseudonyms.patient(patient_identity(ds))

    def _act(self, ds: Dataset, elem, action: str, context: _File) -> None:
        vr = elem.VR
        if action == SHIFT_DATES:
            if vr in SHIFTERS:
                if elem.is_empty:
                    return
                shifted = shift_values(vr, elem.value, context.shift_days)
                if shifted is not None:
                    elem.value = shifted
                    return
            elif vr == "TM":
                return                 # whole days: the time of day is the same after the shift
            action = self.profile.basic(elem.tag) or REMOVE   # not a date we can move
        elif action == CLEAN:
            if vr in _TEXT_VRS and context.identifying is not None:
                if elem.is_empty:
                    return
                cleaned = context.identifying.clean(str(elem.value))
                if cleaned is not None:
                    elem.value = cleaned
                    return
            action = self.profile.basic(elem.tag) or REMOVE
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
                self._items(elem, context)
            else:
                del ds[elem.tag]   # not a UID after all: remove rather than guess
        elif action == KEEP:
            if vr == "SQ":
                self._items(elem, context)
        else:  # pragma: no cover - the profile only yields the actions above
            raise ValueError(f"unknown action {action!r}")

    def _items(self, elem, context: _File) -> None:
        for item in elem.value or ():
            self._dataset(item, context)

    def _mapped_raw_uids(self, raw: bytes) -> str | list[str]:
        """The mapped value of a UI element not yet decoded, read as pydicom reads it (convert_UI)."""
        values = [self.pseudonyms.uid(v) for v in raw.decode("iso8859").rstrip("\0 ").split("\\")]
        return values[0] if len(values) == 1 else values

    def _map_uids(self, elem) -> None:
        value = elem.value
        if value is None or value == "":
            return
        if isinstance(value, (MultiValue, list, tuple)):
            elem.value = [self.pseudonyms.uid(v) for v in value]
        else:
            elem.value = self.pseudonyms.uid(value)


# The images dcm_anon de-identifies: the CT image classes the suite turns into volumes.
# Its allow-list (dcm_anon.safe_attributes) is made for them; another object
# (a report, a plan, a screenshot) would lose what it is made of, or keep what it should not.
SUPPORTED_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image Storage",
}
_MEDIA_DIRECTORY_GROUP = 0x0004


def withheld_because(ds: FileDataset) -> str | None:
    """Why this file is not written at all (a one-line reason), or None when it is de-identified."""
    if any(tag.group == _MEDIA_DIRECTORY_GROUP for tag in ds.keys()):
        # A DICOMDIR body lists patients, studies and file names, whatever SOP class it claims.
        return "DICOMDIR records (media directory): not an image, not copied"
    sop_class = str(ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", "") or "").strip()
    if sop_class not in SUPPORTED_CLASSES:
        name = UID_dictionary[sop_class][0] if sop_class in UID_dictionary else "not one DICOM defines"
        return f"not a CT image (SOP class: {name}): not copied, dcm_anon de-identifies CT images only"
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        return "no pixel data: not an image, not copied"
    if str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES":
        # A screenshot or a scanned form: its pixels may show the patient's name.
        return "burned-in annotation: pixel data may hold PHI, not copied"
    return None
