"""The Retain Safe Private Option's allow-list (data/safe_private.json) and its use.

A private element is kept only when the private creator of its block, its
group and its byte within the block are on the list, the listed VR is a
number's (DS, IS or binary), and the element is one: its explicit VR is the
listed one (never UN, which could be anything), or, in an implicit-VR file,
its bytes read as numbers of that VR. Entries listed with a text VR (SH, LO,
CS) are not kept: a vendor's text field is where a name and a record number
were found (GE's (0043,xx31) and (0043,xx64)). A private creator element is
kept only when its block keeps at least one element. Everything else private
goes, as without the option.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

ALLOW_LIST_FILE = "safe_private.json"
# Number VRs and the size of one binary value; DS and IS are numbers written as text.
NUMBER_SIZES = {"DS": 0, "IS": 0, "US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "FD": 8}
_NUMBER_TEXT = re.compile(rb"[0-9+\-.eE \\]*\x00?")


@dataclass(frozen=True)
class SafePrivate:
    creator: str
    group: int
    element: int     # the element's byte within its block (0x00-0xFF)
    vr: str
    name: str


def load_allow_list() -> dict[tuple[str, int, int], SafePrivate]:
    text = resources.files("dcm_anon").joinpath("data", ALLOW_LIST_FILE).read_text(encoding="utf-8")
    entries = [SafePrivate(a["creator"], int(a["group"], 16), int(a["element"], 16), a["vr"], a["name"])
               for a in json.loads(text)["attributes"]]
    return {(e.creator, e.group, e.element): e for e in entries if e.vr in NUMBER_SIZES}


def _is_number(raw, vr: str) -> bool:
    """Is this element a number of ``vr``: that VR if explicit, and bytes that read as such numbers?"""
    if raw.VR is not None and raw.VR != vr:
        return False
    value = raw.value
    size = NUMBER_SIZES[vr]
    if not isinstance(value, bytes):   # decoded already (by Clean Descriptors' look at every value)
        if raw.VR != vr:
            return False
        text = "\\".join(map(str, value)) if isinstance(value, (list, tuple, MultiValue)) else str(value)
        return bool(size) or _NUMBER_TEXT.fullmatch(text.encode("ascii", "replace")) is not None
    return len(value) % size == 0 if size else _NUMBER_TEXT.fullmatch(value) is not None


def safe_private_tags(ds: Dataset, allow: dict[tuple[str, int, int], SafePrivate]) -> set[int]:
    """The private tags of this dataset level (not its sequences) that the allow-list keeps."""
    creators: dict[tuple[int, int], str] = {}
    for tag in ds.keys():
        if tag.is_private and 0x10 <= tag.element <= 0xFF:
            value = ds[tag].value
            if isinstance(value, bytes):
                value = value.decode("ascii", "replace")
            creators[(tag.group, tag.element)] = str(value or "").strip()
    keep: set[int] = set()
    for tag in ds.keys():
        if not tag.is_private or tag.element < 0x1000:
            continue
        creator = creators.get((tag.group, tag.element >> 8))
        entry = allow.get((creator, tag.group, tag.element & 0xFF)) if creator else None
        if entry is None:
            continue
        if not _is_number(ds.get_item(tag), entry.vr):
            continue
        keep.add(int(tag))
        keep.add((tag.group << 16) | (tag.element >> 8))   # its private creator
    return keep
