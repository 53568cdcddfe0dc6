"""DICOM value helpers shared by the writers of the synthetic series and exams.

Every writer stores HU the way a CT scanner does (int16 through RescaleSlope and
RescaleIntercept, within [-1024, 3071] HU) and formats numbers and times the same
way, so the files differ only where a test wants them to.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["HU_MIN", "HU_MAX", "ds_string", "clock", "stored_range", "quantise"]

HU_MIN, HU_MAX = -1024, 3071


def ds_string(value: float) -> str:
    """A DS string (at most 16 characters) for ``value``; exact when it can be."""
    s = repr(float(value))
    if s.endswith(".0"):
        s = s[:-2]
    if len(s) > 16:
        s = f"{value:.10g}"
    if s == "-0":
        s = "0"
    return s


def clock(hhmmss: str, seconds: float) -> str:
    """``hhmmss`` plus ``seconds`` as a DICOM TM with microseconds."""
    base = int(hhmmss[:2]) * 3600 + int(hhmmss[2:4]) * 60 + int(hhmmss[4:6])
    us = round((base + seconds) * 1e6) % (86400 * 10**6)
    s, us = divmod(us, 10**6)
    return f"{s // 3600:02d}{s // 60 % 60:02d}{s % 60:02d}.{us:06d}"


def stored_range(slope: float, intercept: float) -> tuple[int, int]:
    """Stored values whose HU lie in [-1024, 3071]; ValueError unless they fit int16.

    The whole clip range is checked, not the data, so whether a slope and
    intercept are accepted does not depend on the seed or the noise.
    """
    lo = math.ceil((HU_MIN - intercept) / slope)
    hi = math.floor((HU_MAX - intercept) / slope)
    if lo > hi:
        raise ValueError(f"RescaleSlope {slope} leaves no stored value within [{HU_MIN}, {HU_MAX}] HU")
    if lo < -32768 or hi > 32767:
        raise ValueError(
            f"HU {HU_MIN}..{HU_MAX} need stored values {lo}..{hi}, which do not fit int16 with "
            f"RescaleSlope {slope} and RescaleIntercept {intercept}")
    return lo, hi


def quantise(hu: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """Stored int16 values ``round((hu - intercept) / slope)``, kept inside [-1024, 3071] HU."""
    lo, hi = stored_range(slope, intercept)
    stored = np.empty(hu.shape, np.int16)
    for k in range(hu.shape[0]):
        q = np.rint((hu[k].astype(np.float64) - intercept) / slope)
        np.clip(q, lo, hi, out=q)
        stored[k] = q
    return stored
