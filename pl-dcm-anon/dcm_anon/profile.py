"""DICOM PS3.15 Table E.1-1, and the one action it asks for a given tag.

The table ships with the package (``data/``, MIT license, see SOURCE.md).
Each row gives a Basic Profile action and, for some options, an action that
replaces it when the option is chosen. We resolve every row once, up front,
to one of the simple actions below.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Iterable

REMOVE = "X"             # remove the attribute
ZERO = "Z"               # keep it with a zero-length value
DUMMY = "D"              # replace the value by a dummy valid for the VR
KEEP = "K"               # keep it as it is
MAP_UID = "U"            # replace the UID(s) by the consistent mapping
MAP_UIDS_INSIDE = "U*"   # keep the sequence, map every UID inside it
SHIFT_DATES = "shift"    # Modified Dates option: move dates by the patient's shift
CLEAN = "clean"          # Clean Descriptors option: keep the text without identifying words

# A compound code (X/Z, X/D, ...) lets the de-identifier choose; we take the
# choice that also keeps the object valid when the IOD needs the attribute.
# A basic C (clean) falls back to removal: cleaning is what the Clean
# Descriptors option does, for its own column only.
_BASIC_ACTIONS = {
    "X": REMOVE,
    "Z": ZERO,
    "D": DUMMY,
    "K": KEEP,
    "C": REMOVE,
    "U": MAP_UID,
    "X/Z": ZERO,
    "X/D": DUMMY,
    "Z/D": DUMMY,
    "X/Z/D": DUMMY,
    "X/Z/U*": MAP_UIDS_INSIDE,
}

_TAG = re.compile(r"\(([0-9A-FX]{4}),([0-9A-FX]{4})\)", re.IGNORECASE)
TABLE_FILE = "confidentiality_profile_attributes.json"


@dataclass(frozen=True)
class RetainOption:
    """One PS3.15 E.3 option the command line offers."""

    flag: str      # command-line flag
    dest: str      # argparse destination
    column: str    # its column in Table E.1-1
    code: str      # its code (DCM) in DeidentificationMethodCodeSequence
    meaning: str   # the code meaning
    help: str


RETAIN_OPTIONS: tuple[RetainOption, ...] = (
    RetainOption("--keep-dates", "keep_dates", "rtnLongFullDatesOpt", "113106",
                 "Retain Longitudinal Temporal Information Full Dates Option",
                 "keep dates and times (Retain Longitudinal Temporal Information Full Dates Option)"),
    RetainOption("--shift-dates", "shift_dates", "rtnLongModifDatesOpt", "113107",
                 "Retain Longitudinal Temporal Information Modified Dates Option",
                 "move every date back by one whole number of days per patient, derived from the "
                 "key, so intervals are kept (Retain Longitudinal Temporal Information Modified "
                 "Dates Option)"),
    RetainOption("--clean-descriptors", "clean_descriptors", "cleanDescOpt", "113105",
                 "Clean Descriptors Option",
                 "keep descriptions, protocol names and comments with every identifying word of "
                 "the file, and anything like a date, number or e-mail address, taken out "
                 "(Clean Descriptors Option)"),
    RetainOption("--keep-safe-private", "keep_safe_private", "rtnSafePrivOpt", "113111",
                 "Retain Safe Private Option",
                 "keep the numeric private attributes on the shipped allow-list of CT "
                 "reconstruction and dose parameters; all other private attributes are removed "
                 "(Retain Safe Private Option)"),
    RetainOption("--keep-uids", "keep_uids", "rtnUIDsOpt", "113110",
                 "Retain UIDs Option",
                 "keep the original UIDs (Retain UIDs Option)"),
    RetainOption("--keep-device-id", "keep_device_id", "rtnDevIdOpt", "113109",
                 "Retain Device Identity Option",
                 "keep device identifiers such as station name and serial numbers "
                 "(Retain Device Identity Option)"),
    RetainOption("--keep-patient-chars", "keep_patient_chars", "rtnPatCharsOpt", "113108",
                 "Retain Patient Characteristics Option",
                 "keep patient age, sex, size, weight and similar (Retain Patient Characteristics Option)"),
    RetainOption("--keep-institution-id", "keep_institution_id", "rtnInstIdOpt", "113112",
                 "Retain Institution Identity Option",
                 "keep institution name, address and department (Retain Institution Identity Option)"),
)
# Options that say C (clean) in their column and what cleaning means for them;
# under every other option a C leaves the basic action.
_CLEANING = {"rtnLongModifDatesOpt": SHIFT_DATES, "cleanDescOpt": CLEAN}
EXCLUSIVE = ("keep_dates", "shift_dates")   # full dates or modified dates, not both

PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")


def load_table() -> list[dict]:
    """The rows of Table E.1-1 as shipped with the package."""
    text = resources.files("dcm_anon").joinpath("data", TABLE_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def resolve_row(row: dict, retain_columns: Iterable[str]) -> str:
    """The action for one table row under the chosen options.

    K (keep) in any chosen column wins; then a C (clean) of an option that
    cleans (shift dates, clean descriptors); else the basic action.
    """
    basic = basic_action(row)
    marks = {column: str(row.get(column, "")).strip().upper() for column in retain_columns}
    if "K" in marks.values():
        return KEEP
    for column, mark in marks.items():
        if mark == "C" and column in _CLEANING:
            return _CLEANING[column]
    return basic


def basic_action(row: dict) -> str:
    basic = str(row["basicProfile"]).strip().upper()
    if basic not in _BASIC_ACTIONS:
        raise ValueError(f"unknown action {basic!r} for {row.get('tag')} in the profile table")
    return _BASIC_ACTIONS[basic]


class Profile:
    """Answers "what do we do with this tag?" for a set of chosen options."""

    def __init__(self, rows: list[dict], retain_columns: Iterable[str] = ()):
        retain_columns = tuple(retain_columns)
        self._exact: dict[int, tuple[str, str]] = {}              # tag → (action, basic action)
        self._patterns: list[tuple[int, int, tuple[str, str]]] = []   # (mask, value, actions)
        self._cache: dict[int, tuple[str, str] | None] = {}
        for row in rows:
            m = _TAG.fullmatch(str(row["tag"]).strip())
            if m is None:
                # "(GGGG,EEEE) WHERE GGGG IS ODD": private attributes. They are
                # removed, or kept by the safe-private allow-list, by rule.
                continue
            actions = (resolve_row(row, retain_columns), basic_action(row))
            hex8 = (m[1] + m[2]).upper()
            if "X" in hex8:
                mask = int("".join("0" if c == "X" else "F" for c in hex8), 16)
                value = int(hex8.replace("X", "0"), 16)
                self._patterns.append((mask, value, actions))
            else:
                self._exact[int(hex8, 16)] = actions

    def _lookup(self, tag: int) -> tuple[str, str] | None:
        try:
            return self._cache[tag]
        except KeyError:
            pass
        found = self._exact.get(tag)
        if found is None:
            found = next((a for mask, value, a in self._patterns if tag & mask == value), None)
        self._cache[tag] = found
        return found

    def action(self, tag: int) -> str | None:
        """The action for ``tag``, or None when the table does not list it."""
        found = self._lookup(int(tag))
        return None if found is None else found[0]

    def basic(self, tag: int) -> str | None:
        """The Basic Profile's action for ``tag`` (what a clean or shift falls back to)."""
        found = self._lookup(int(tag))
        return None if found is None else found[1]

    def __len__(self) -> int:
        return len(self._exact) + len(self._patterns)


def load_profile(retain_columns: Iterable[str] = ()) -> Profile:
    return Profile(load_table(), retain_columns)
