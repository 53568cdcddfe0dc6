"""Clean Descriptors: keep a description, with what could identify someone taken out.

The rule, conservative on purpose (PS3.15 E.3.5 leaves the method open):

* every word of every identifying value of the same file goes: person
  names (any PN attribute, at any level), IDs, addresses, institution,
  station, dates... that is, the text of every attribute the Basic Profile
  does not keep, before it is removed;
* so does anything shaped like a date, a time, a telephone or record number
  (a run of 4 or more digits), an e-mail address or a UID;
* a value left with no letters or digits is not kept (the basic action
  applies, as without the option).

What it cannot know: a name written only in free text and nowhere in the
header (a third person's name in a comment) stays. Use the option for
data whose descriptions are system-generated (protocol and series names).
"""

from __future__ import annotations

import re
from typing import Iterable

MIN_WORD = 3   # shorter words ("DR", "MA") are too common to be worth removing
_WORD = re.compile(r"[A-Za-z0-9]+")
_SHAPES = re.compile(
    r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"                          # e-mail
    r"|\b\d+(?:\.\d+){3,}\b"                                 # UID-like
    r"|\b\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}\b"                   # dates 12/31/2020, 2020-12-31
    r"|\b\d{1,2}:\d{2}(?::\d{2})?\b"                          # times 14:15(:02)
    r"|\+?\d[\d ()-]{5,}\d"                                   # telephone numbers
    r"|\d{4,}"                                                # record numbers, compact dates
)
_HAS_CONTENT = re.compile(r"[A-Za-z0-9]")


class Identifying:
    """The identifying values of one file, whole and word by word."""

    def __init__(self, values: Iterable[str]):
        values = {v.strip().upper() for v in values if len(v.strip()) >= MIN_WORD}
        self.words = {w for v in values for w in _WORD.findall(v) if len(w) >= MIN_WORD}
        # Whole values first, longest first: "MRN-58310-7Q" goes with its short parts.
        self._whole = (re.compile("|".join(re.escape(v) for v in sorted(values, key=len, reverse=True)),
                                  re.IGNORECASE) if values else None)

    def clean(self, text: str) -> str | None:
        """``text`` without identifying values, words and shapes, or None when nothing worth keeping is left."""
        if self._whole is not None:
            text = self._whole.sub(" ", text)
        text = _SHAPES.sub(" ", text)
        text = _WORD.sub(lambda m: " " if m.group().upper() in self.words else m.group(), text)
        text = re.sub(r"\s+", " ", text).strip()
        return text if _HAS_CONTENT.search(text) else None
