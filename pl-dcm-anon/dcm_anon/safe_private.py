"""The Retain Safe Private Option's allow-list (data/safe_private.json) and its use.

A private element is kept only when the private creator of its block, its
group and its byte within the block are on the list, and its VR is the one
listed (or UN, or unknown in an implicit-VR file). A private creator element
is kept only when its block keeps at least one element. Everything else
private goes, as without the option.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

from pydicom.dataset import Dataset

ALLOW_LIST_FILE = "safe_private.json"


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
    return {(e.creator, e.group, e.element): e for e in entries}


def _vr_of(raw) -> str | None:
    return getattr(raw, "VR", None)


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
        vr = _vr_of(ds.get_item(tag))
        if vr not in (None, "UN", entry.vr):
            continue
        keep.add(int(tag))
        keep.add((tag.group << 16) | (tag.element >> 8))   # its private creator
    return keep
