"""Which patient a file belongs to, as one string: the input to the pseudonym and the date shift.

In order of preference:

1. Patient ID, with its issuer when there is one (two hospitals may both have
   a patient "12345");
2. when the ID is empty: the name, birth date and sex together;
3. when those are empty too: the study (a study belongs to one patient);
4. when there is not even a study UID: the file's own SOP Instance UID.

Each source is labelled, so an ID can never be mistaken for a name. Files
without any identity therefore never share one pseudonym; at worst each
study, or each file, is a patient of its own.
"""

from __future__ import annotations

from pydicom.dataset import Dataset


def _text(ds: Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception:   # a value pydicom cannot decode identifies nothing we can use
        return ""
    return str(value or "").strip()


def patient_identity(ds: Dataset) -> str:
    patient_id = _text(ds, "PatientID")
    if patient_id:
        return f"id:{_text(ds, 'IssuerOfPatientID')}\x00{patient_id}"
    person = [_text(ds, k) for k in ("PatientName", "PatientBirthDate", "PatientSex")]
    if person[0] or person[1]:
        return "person:" + "\x00".join(person)
    study = _text(ds, "StudyInstanceUID")
    if study:
        return "study:" + study
    return "instance:" + _text(ds, "SOPInstanceUID")
