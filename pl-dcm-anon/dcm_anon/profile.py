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

# A compound code (X/Z, X/D, ...) lets the de-identifier choose; we take the
# choice that also keeps the object valid when the IOD needs the attribute.
# C (clean) would mean rewriting free text; we never do that, so a basic C
# falls back to removal.
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

PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")


def chosen_options(options: object) -> list[RetainOption]:
    """The retain options switched on in an argparse namespace."""
    return [o for o in RETAIN_OPTIONS if getattr(options, o.dest, False)]


def load_table() -> list[dict]:
    """The rows of Table E.1-1 as shipped with the package."""
    text = resources.files("dcm_anon").joinpath("data", TABLE_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def resolve_row(row: dict, retain_columns: Iterable[str]) -> str:
    """The action for one table row under the chosen options."""
    basic = str(row["basicProfile"]).strip().upper()
    if basic not in _BASIC_ACTIONS:
        raise ValueError(f"unknown action {basic!r} for {row.get('tag')} in the profile table")
    # An option column holds K (keep) or C (clean). We do not clean text, so
    # only K changes anything; under C the basic action stays.
    for column in retain_columns:
        if str(row.get(column, "")).strip().upper() == "K":
            return KEEP
    return _BASIC_ACTIONS[basic]


class Profile:
    """Answers "what do we do with this tag?" for a set of chosen options."""

    def __init__(self, rows: list[dict], retain_columns: Iterable[str] = ()):
        retain_columns = tuple(retain_columns)
        self._exact: dict[int, str] = {}
        self._patterns: list[tuple[int, int, str]] = []   # (mask, value, action)
        for row in rows:
            m = _TAG.fullmatch(str(row["tag"]).strip())
            if m is None:
                # "(GGGG,EEEE) WHERE GGGG IS ODD": private attributes. They are
                # all removed by rule before the table is consulted.
                continue
            action = resolve_row(row, retain_columns)
            hex8 = (m[1] + m[2]).upper()
            if "X" in hex8:
                mask = int("".join("0" if c == "X" else "F" for c in hex8), 16)
                value = int(hex8.replace("X", "0"), 16)
                self._patterns.append((mask, value, action))
            else:
                self._exact[int(hex8, 16)] = action

    def action(self, tag: int) -> str | None:
        """The action for ``tag``, or None when the table does not list it."""
        tag = int(tag)
        found = self._exact.get(tag)
        if found is not None:
            return found
        for mask, value, action in self._patterns:
            if tag & mask == value:
                return action
        return None

    def __len__(self) -> int:
        return len(self._exact) + len(self._patterns)


def load_profile(retain_columns: Iterable[str] = ()) -> Profile:
    return Profile(load_table(), retain_columns)
