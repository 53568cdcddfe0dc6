"""File and folder names that carry no identity.

dcm_anon keeps the input's layout, but exports often name files and folders
after UIDs (``<SOPInstanceUID>.dcm``, a folder per StudyInstanceUID) and
sometimes after the patient (``DOE_JANE/CT``). Each component of a path is
therefore de-identified like the header it belongs to:

* every UID-like token (four or more dot-separated numbers) becomes its
  mapped UID, so a file named after its SOPInstanceUID is named after its
  new one, consistently across the run;
* every identifying value seen in the headers so far (patient name and its
  parts, IDs, accession number, birth date) becomes the patient's pseudonym;
* every study, series, acquisition, content or creation date of the file
  (``19001231-076.dcm``) says what its header now says: the shifted date with
  ``--shift-dates``, itself with ``--keep-dates``, else the pseudonym. This
  one is per file, not learned: patients share dates.

Logs and the run report name input files the same way, so no original UID
or name reaches them either. A limit: a file that is not DICOM, in a folder
named after a patient whose DICOM files come later in name order, is named
before that patient's values are known; only its UID-like tokens are mapped.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from dcm_anon.uids import Pseudonyms

# Not inside a longer number or UID; a suffix such as ".dcm" may follow.
UID_TOKEN = re.compile(r"(?<![\d.])\d+(?:\.\d+){3,}(?!\d|\.\d)")
# Shorter values (a two-letter name part, a sex) would match too much by chance.
MIN_VALUE_LENGTH = 3
_IDENTIFYING = ("PatientName", "PatientID", "OtherPatientIDs", "AccessionNumber", "PatientBirthDate",
                "StudyID", "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName")


# Dates a file or folder name may carry (exports often name files after the study date).
NAME_DATES = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "InstanceCreationDate")


def date_values(ds: Dataset) -> list[str]:
    """The file's full dates (YYYYMMDD) that a file or folder name might repeat."""
    out = []
    for keyword in NAME_DATES:
        try:
            value = str(ds.get(keyword) or "").strip()
        except Exception:
            continue
        if len(value) == 8 and value.isdigit():
            out.append(value)
    return list(dict.fromkeys(out))


def identifying_values(ds: Dataset) -> list[str]:
    """The identifying strings a file or folder name might repeat, whole and in parts."""
    values: list[str] = []
    for keyword in _IDENTIFYING:
        try:
            value = ds.get(keyword)
        except Exception:
            continue
        for item in (value if isinstance(value, (list, tuple, MultiValue)) else [value]):
            text = str(item or "").strip()
            values.append(text)
            values.extend(re.split(r"[\^\s,]+", text))
    return [v for v in dict.fromkeys(values) if len(v) >= MIN_VALUE_LENGTH]


class PathNamer:
    """De-identified relative paths, one mapping for the whole run."""

    def __init__(self, pseudonyms: Pseudonyms, map_uids: bool = True, reserved: frozenset[str] = frozenset()):
        self.pseudonyms = pseudonyms
        self.map_uids = map_uids          # off with --keep-uids: names then say what headers say
        self.reserved = reserved          # top-level names the run itself writes (its report, the tag report)
        self._replacements: dict[str, str] = {}     # identifying value (lower case) → pseudonym
        self._pattern: re.Pattern | None = None
        self._taken: dict[Path, Path] = {}          # de-identified path → the input it names

    def learn(self, ds: Dataset, pseudonym: str) -> None:
        """Remember this file's identifying values, to be replaced by ``pseudonym``."""
        self.learn_values(identifying_values(ds), pseudonym)

    def learn_values(self, identifying: list[str], pseudonym: str) -> None:
        """Remember ``identifying`` (from :func:`identifying_values`), to be replaced by ``pseudonym``."""
        new = {v.lower(): pseudonym for v in identifying if v.lower() not in self._replacements}
        if new:
            self._replacements.update(new)
            # Longest first, so "DOE^JANE" goes before "DOE".
            values = sorted(self._replacements, key=len, reverse=True)
            # Whole words only: "DOE" is replaced in "DOE_JANE" but not in "DOES".
            self._pattern = re.compile(r"(?<![A-Za-z0-9])(?:" + "|".join(re.escape(v) for v in values)
                                       + r")(?![A-Za-z0-9])", re.IGNORECASE)

    def component(self, name: str) -> str:
        if self.map_uids:
            name = UID_TOKEN.sub(lambda m: self.pseudonyms.uid(m.group()), name)
        if self._pattern is not None:
            name = self._pattern.sub(lambda m: self._replacements[m.group().lower()], name)
        return name

    def __call__(self, relative: Path) -> Path:
        return Path(*(self.component(part) for part in Path(relative).parts))

    def claim(self, relative: Path, dates: dict[str, str] | None = None) -> Path:
        """The output path of input ``relative``; never one another input already took.

        ``dates`` maps this file's dates to what its name says instead.
        """
        out = self(relative)
        if dates:
            pattern = re.compile(r"(?<!\d)(" + "|".join(map(re.escape, dates)) + r")(?!\d)")
            out = Path(*(pattern.sub(lambda m: dates[m.group()], part) for part in out.parts))
        top = Path(out.parts[0])
        n = 1
        while str(top) in self.reserved:   # an input named like the report or tag-report/ moves aside
            n += 1
            top = Path(out.parts[0]).with_name(f"{Path(out.parts[0]).stem}-{n}{Path(out.parts[0]).suffix}")
        out = Path(top, *out.parts[1:])
        candidate, n = out, 1
        while self._taken.get(candidate, relative) != relative:
            n += 1
            candidate = out.with_name(f"{out.stem}-{n}{out.suffix}")
        self._taken[candidate] = relative
        return candidate
