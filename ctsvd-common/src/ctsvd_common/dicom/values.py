"""Numbers read from DICOM attributes, or a reason that names the attribute.

Scanners and exporters write nonsense now and then (NumberOfFrames ``1A``, a
RescaleIntercept of ``-1O24``). Each accessor here either returns clean
Python values or raises :class:`BadValue` whose message names the attribute
by keyword and never quotes the value, which may be PHI.

Numbers and code strings are read from the element's raw bytes while pydicom
still holds them raw: its own conversion (with validation) costs more than
parsing the whole header, and a converter reads some thirty values from
every file.
"""

from __future__ import annotations

import math
import struct
from functools import lru_cache

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

_STRUCT = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}
_TEXT_VRS = {"DS", "IS", "CS", "UI", "AS", "DA", "TM", "DT"}


class BadValue(Exception):
    """An attribute holds a value that is not what the standard allows."""


@lru_cache(maxsize=None)
def _tag(keyword: str):
    from pydicom.tag import Tag
    return Tag(tag_for_keyword(keyword))


def _raw(ds: Dataset, keyword: str) -> list | None:
    """The attribute's values, decoded from raw bytes when possible; None when absent or empty."""
    tag = _tag(keyword)
    try:
        elem = ds.get_item(tag)
        if elem is None:
            return None
        if isinstance(elem, RawDataElement):
            vr = elem.VR or dictionary_VR(tag)
            value = elem.value or b""
            if vr in _TEXT_VRS:
                text = value.decode("ascii", "replace").strip(" \0")
                return [v.strip(" \0") for v in text.split("\\")] if text else None
            if vr in _STRUCT:
                code = _STRUCT[vr]
                n = len(value) // struct.calcsize(code)
                endian = "<" if elem.is_little_endian else ">"
                return list(struct.unpack(f"{endian}{n}{code}", value[:n * struct.calcsize(code)])) or None
        value = ds[tag].value
    except Exception:
        raise BadValue(f"{keyword} cannot be read") from None
    if value is None or value == "":
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return [value]
    return list(value) or None


def integer(ds: Dataset, keyword: str, default: int | None = None) -> int | None:
    """An integer attribute (IS, US, SS, ...); ``default`` when absent or empty."""
    values = _raw(ds, keyword)
    if not values:
        return default
    try:
        v = values[0]
        number = int(v) if isinstance(v, int) else int(str(v).strip())
    except (TypeError, ValueError):
        raise BadValue(f"{keyword} is not a valid integer") from None
    return number


def numbers(ds: Dataset, keyword: str, count: int | None = None) -> list[float] | None:
    """A decimal attribute (DS, FL, FD) as finite floats; None when absent or empty."""
    values = _raw(ds, keyword)
    if not values:
        return None
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        raise BadValue(f"{keyword} is not a valid number") from None
    if not all(math.isfinite(v) for v in out):
        raise BadValue(f"{keyword} is not a valid number")   # NaN and infinity are no DS
    if count is not None and len(out) != count:
        raise BadValue(f"{keyword} should hold {count} numbers, it holds {len(out)}")
    return out


def number(ds: Dataset, keyword: str, default: float | None = None) -> float | None:
    values = numbers(ds, keyword)
    return default if values is None else values[0]


def code(ds: Dataset, keyword: str) -> str:
    """A code string or UID (CS, UI): ASCII by definition, read raw."""
    try:
        values = _raw(ds, keyword)
    except BadValue:
        return ""
    return str(values[0]).strip() if values else ""


def words(ds: Dataset, keyword: str) -> tuple[str, ...]:
    """A multi-valued CS attribute such as ImageType, upper-cased."""
    try:
        values = _raw(ds, keyword)
    except BadValue:
        return ()
    return tuple(str(v).strip().upper() for v in values or ())


def text(ds: Dataset, keyword: str) -> str:
    """Free text (LO, SH, ...), decoded by pydicom with the dataset's character set."""
    try:
        value = ds.get(keyword)
    except Exception:
        return ""
    return "" if value is None else str(value).strip()
