"""Consistent replacement UIDs and patient pseudonyms.

Both are keyed hashes (HMAC-SHA256), so one original value always gives the
same replacement within a run, in every file and at every nesting level,
and references between files stay intact. Without a user key the key is
random for each run, so nobody can recompute the mapping afterwards; with
``--pseudonym-key`` the mapping is the same across runs (to add files to
a data set that was de-identified earlier).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

STANDARD_UID_PREFIX = "1.2.840.10008."   # UIDs defined by DICOM itself
UUID_DERIVED_ROOT = "2.25."               # PS3.5 B.2: UIDs from 128-bit numbers
PSEUDONYM_PREFIX = "ANON-"


def is_standard_uid(uid: str) -> bool:
    """SOP classes, transfer syntaxes, well-known frames of reference...: never remapped."""
    return uid.startswith(STANDARD_UID_PREFIX)


class Pseudonyms:
    """The UID mapping and patient pseudonyms of one run."""

    def __init__(self, key: bytes):
        if not key:
            raise ValueError("the pseudonym key must not be empty")
        self._key = key
        self._uids: dict[str, str] = {}

    @classmethod
    def for_run(cls, key_text: str = "") -> "Pseudonyms":
        """Keyed by ``key_text`` when given, else by a fresh random key."""
        return cls(key_text.encode("utf-8") if key_text else secrets.token_bytes(32))

    def _digest(self, text: str) -> bytes:
        return hmac.new(self._key, text.encode("utf-8"), hashlib.sha256).digest()

    def uid(self, old: str) -> str:
        """The replacement of ``old``: "2.25." and the first 128 bits of its HMAC."""
        old = str(old).strip().rstrip("\x00").strip()
        if not old or is_standard_uid(old):
            return old
        new = self._uids.get(old)
        if new is None:
            # At most 5 + 39 digits, well within the 64 characters a UID may have.
            new = UUID_DERIVED_ROOT + str(int.from_bytes(self._digest(old)[:16], "big"))
            self._uids[old] = new
        return new

    def patient(self, patient_id: str) -> str:
        """The pseudonym that replaces both PatientID and PatientName."""
        return PSEUDONYM_PREFIX + self._digest(str(patient_id)).hex()[:8].upper()

    @property
    def uids_mapped(self) -> int:
        return len(self._uids)
