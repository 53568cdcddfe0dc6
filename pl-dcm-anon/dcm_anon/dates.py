"""Moving DA and DT values by a whole number of days (Retain Longitudinal Temporal
Information with Modified Dates).

The shift is whole days, so a time of day (TM, or the time part of a DT) is
the same before and after, and so is every interval between two dates or
date-times of one patient. A value that is not a valid date cannot be
shifted and is reported as such (None); the caller then applies the
profile's basic action to it.
"""

from __future__ import annotations

import datetime as _dt
import re

_DA = re.compile(r"(\d{4})(\d{2})(\d{2})")
_DA_OLD = re.compile(r"(\d{4})\.(\d{2})\.(\d{2})")     # ACR-NEMA style, still found in old files
# YYYY[MM[DD[HH[MM[SS[.F{1,6}]]]]]][&ZZXX]: the date part is what moves.
_DT = re.compile(r"(\d{4})(\d{2})?(\d{2})?(.*)")


def shift_da(value: str, days: int) -> str | None:
    value = value.strip()
    m = _DA.fullmatch(value) or _DA_OLD.fullmatch(value)
    if m is None:
        return None
    try:
        date = _dt.date(int(m[1]), int(m[2]), int(m[3]))
        return (date + _dt.timedelta(days=days)).strftime("%Y%m%d")
    except (ValueError, OverflowError):
        return None


def shift_dt(value: str, days: int) -> str | None:
    value = value.strip()
    m = _DT.fullmatch(value)
    if m is None or (m[4] and not m[3]):
        return None
    if not m[3]:
        # A year or year-month alone: too coarse to move by days; keeping it
        # would reveal the shift, so it cannot be kept.
        return None
    shifted = shift_da(m[1] + m[2] + m[3], days)
    if shifted is None or not re.fullmatch(r"(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?([+-]\d{4})?", m[4]):
        return None
    return shifted + m[4]


SHIFTERS = {"DA": shift_da, "DT": shift_dt}


def shift_values(vr: str, value, days: int):
    """The shifted value (one or several), or None when any part is not a valid date."""
    shift = SHIFTERS[vr]
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        out = [shift(str(v), days) for v in value]
        return None if any(v is None for v in out) else out
    return shift(str(value), days)
