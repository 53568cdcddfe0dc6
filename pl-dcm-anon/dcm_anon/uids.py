"""Consistent replacement UIDs, patient pseudonyms and per-patient date shifts.

All are keyed hashes (HMAC-SHA256), so one original value always gives the
same replacement within a run, in every file and at every nesting level,
and references between files stay intact. Without a user key the key is
random for each run, so nobody can recompute the mapping afterwards; with
``--pseudonym-key`` the mapping is the same across runs (to add files to
a data set that was de-identified earlier).

Each use hashes its own domain ("uid", "patient", "date-shift") so that no
replacement value can be computed from another.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

STANDARD_UID_PREFIX = "1.2.840.10008."   # UIDs defined by DICOM itself
UUID_DERIVED_ROOT = "2.25."               # PS3.5 B.2: UIDs from 128-bit numbers
PSEUDONYM_PREFIX = "ANON-"
# 80 bits: the chance that two of n patients share a pseudonym is about
# n^2 / 2^81, i.e. 4e-15 for 100,000 patients (32 bits gave over 50 %).
PSEUDONYM_BITS = 80
# Dates move back by 1 to 10 years, whole days: times of day, weekdays' spacing
# and every interval stay as they were.
SHIFT_DAYS_MIN, SHIFT_DAYS_MAX = 365, 3652


def is_standard_uid(uid: str) -> bool:
    """SOP classes, transfer syntaxes, well-known frames of reference...: never remapped."""
    return uid.startswith(STANDARD_UID_PREFIX)


class Pseudonyms:
    """The UID mapping, patient pseudonyms and date shifts of one run."""

    def __init__(self, key: bytes):
        if not key:
            raise ValueError("the pseudonym key must not be empty")
        self._key = key
        self._uids: dict[str, str] = {}

    @classmethod
    def for_run(cls, key_text: str = "") -> "Pseudonyms":
        """Keyed by ``key_text`` when given, else by a fresh random key."""
        return cls(key_text.encode("utf-8") if key_text else secrets.token_bytes(32))

    @property
    def key(self) -> bytes:
        """For worker processes of the same run (never written anywhere)."""
        return self._key

    def _digest(self, domain: str, text: str) -> bytes:
        return hmac.new(self._key, f"{domain}\x00{text}".encode("utf-8"), hashlib.sha256).digest()

    def uid(self, old: str) -> str:
        """The replacement of ``old``: "2.25." and the first 128 bits of its HMAC."""
        old = str(old).strip().rstrip("\x00").strip()
        if not old or is_standard_uid(old):
            return old
        new = self._uids.get(old)
        if new is None:
            # At most 5 + 39 digits, well within the 64 characters a UID may have.
            new = UUID_DERIVED_ROOT + str(int.from_bytes(self._digest("uid", old)[:16], "big"))
            self._uids[old] = new
        return new

    def patient(self, identity: str) -> str:
        """The pseudonym that replaces both PatientID and PatientName.

        ``identity`` is what :func:`dcm_anon.identity.patient_identity` made of
        the file: never empty, so no two unrelated patients share it by default.
        """
        digest = self._digest("patient", identity)[:PSEUDONYM_BITS // 8]
        return PSEUDONYM_PREFIX + digest.hex().upper()

    def date_shift_days(self, identity: str) -> int:
        """How many days this patient's dates move back: the same in every file of the patient."""
        span = SHIFT_DAYS_MAX - SHIFT_DAYS_MIN + 1
        return -(SHIFT_DAYS_MIN + int.from_bytes(self._digest("date-shift", identity)[:8], "big") % span)

    @property
    def uids_mapped(self) -> int:
        return len(self._uids)
