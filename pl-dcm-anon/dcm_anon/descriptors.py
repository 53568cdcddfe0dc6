"""Clean Descriptors: keep a description, with what could identify someone taken out.

The rule, conservative on purpose (PS3.15 E.3.5 leaves the method open):

* every word of every identifying value of the same file goes: person
  names (any PN attribute, at any level), IDs, addresses, institution,
  station, dates... that is, the text of every attribute the profile
  removes or replaces, before it goes;
* words are compared as a person reads them: Unicode-normalised (NFKC),
  without accents (``Jörg`` is ``Jorg`` and ``Joerg``), case-folded
  (``ß`` is ``ss``), in any script (Cyrillic, CJK); a word written run
  together with others (``XavieraZebraquux``, ``DoeJane``) goes when it is
  made of identifying words only, or split at its capitals;
* words of 3 characters or more count; the parts of the patient's own
  name count from 2 (``Jo``, ``Li``), and wherever they stand from 4 (and
  in a script written without spaces, whatever their length), inside a
  longer word too;
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
import unicodedata
from functools import lru_cache
from typing import Iterable

MIN_WORD = 3          # other values' words: shorter ones ("DR", "MA") are too common to remove
MIN_OWN_NAME = 2      # the patient's own name: "Jo", "Li" are names too
MIN_INSIDE = 4        # a name part this long goes even inside a longer word
_WORD = re.compile(r"[^\W_]+")                     # letters and digits, any script
_NAME_PARTS = re.compile(r"[\^=\s,.\-'’]+")        # PN components, groups, and what joins names
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Za-z])(?=\d)|(?<=\d)(?=[A-Za-z])")
_SHAPES = re.compile(
    r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"                          # e-mail
    r"|\b\d+(?:\.\d+){3,}\b"                                 # UID-like
    r"|\b\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}\b"                   # dates 12/31/2020, 2020-12-31
    r"|\b\d{1,2}:\d{2}(?::\d{2})?\b"                          # times 14:15(:02)
    r"|\+?\d[\d ()-]{5,}\d"                                   # telephone numbers
    r"|\d{4,}"                                                # record numbers, compact dates
)
_HAS_CONTENT = re.compile(r"[^\W_]")
_GERMAN = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue"})


@lru_cache(maxsize=4096)
def fold(text: str) -> str:
    """``text`` as compared: NFKC, accents removed, case-folded."""
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _unspaced(word: str) -> bool:
    """Is ``word`` in a script written without spaces between words (CJK, Thai...)?"""
    return any(unicodedata.east_asian_width(c) in "WF" or "\u0e00" <= c <= "\u0eff" for c in word)


def _forms(word: str) -> set[str]:
    """The folded forms a person may write ``word`` in: ``Jörg`` → jorg, joerg."""
    return {fold(word), fold(word.translate(_GERMAN))} - {""}


class Identifying:
    """The identifying values of one file, whole and word by word; the patient's own name apart."""

    def __init__(self, values: Iterable[str], own_names: Iterable[str] = ()):
        values = {v.strip() for v in values if len(v.strip()) >= MIN_WORD}
        own = {p for name in own_names for p in _NAME_PARTS.split(str(name)) if p}
        self.words = {f for v in values for w in _WORD.findall(v) if len(w) >= MIN_WORD for f in _forms(w)}
        self.words |= {f for p in own for w in _WORD.findall(p)
                       if len(w) >= MIN_OWN_NAME or _unspaced(w) for f in _forms(w)}
        # Found inside longer words too: long name parts, and any in a script without spaces.
        self._inside = sorted({f for p in own for w in _WORD.findall(p) if len(w) >= MIN_INSIDE or _unspaced(w)
                               for f in _forms(w)}, key=len, reverse=True)
        # Whole values first, longest first: "MRN-58310-7Q" goes with its short parts.
        self._whole = (re.compile("|".join(re.escape(v) for v in sorted(values, key=len, reverse=True)),
                                  re.IGNORECASE) if values else None)

    def clean(self, text: str) -> str | None:
        """``text`` without identifying values, words and shapes, or None when nothing worth keeping is left."""
        text = unicodedata.normalize("NFKC", text)
        if self._whole is not None:
            text = self._whole.sub(" ", text)
        text = _SHAPES.sub(" ", text)
        text = _WORD.sub(lambda m: self._token(m.group()), text)
        text = re.sub(r"\s+", " ", text).strip()
        return text if _HAS_CONTENT.search(text) else None

    def _token(self, token: str) -> str:
        """One word of the text, with what identifies taken out (a space where it was)."""
        if self._identifying(fold(token)):
            return " "
        parts = _CAMEL.split(token)
        if len(parts) > 1:
            token = "".join(" " if self._identifying(fold(p)) else p for p in parts)
        return self._inside_removed(token)

    def _identifying(self, folded: str) -> bool:
        return folded in self.words or self._made_of_words(folded)

    def _made_of_words(self, folded: str) -> bool:
        """Is ``folded`` a run of identifying words written together ("doejane")?"""
        if len(folded) < 2 * MIN_OWN_NAME or len(folded) > 64:
            return False
        ends = {0}
        for i in range(1, len(folded) + 1):
            if any(folded[j:i] in self.words for j in ends if i - j >= MIN_OWN_NAME):
                ends.add(i)
        return len(folded) in ends

    def _inside_removed(self, token: str) -> str:
        """``token`` without the name parts found inside it, compared folded, character by character."""
        if not self._inside:
            return token
        pieces = [fold(c) for c in token]
        folded = "".join(pieces)
        hit = [False] * len(folded)
        for word in self._inside:
            start = folded.find(word)
            while start >= 0:
                hit[start:start + len(word)] = [True] * len(word)
                start = folded.find(word, start + 1)
        if not any(hit):
            return token
        out, at = [], 0
        for c, piece in zip(token, pieces):
            out.append(" " if any(hit[at:at + len(piece)]) else c)
            at += len(piece)
        return "".join(out)
