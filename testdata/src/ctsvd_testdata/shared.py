"""The folder kept beside a clone of the repository, ``../shared``: real exams in
``data/``, the sources of CUBE and pfcon in ``chris/``.

Users' clones lack it, so whatever reads it skips when a folder is absent. The
path is found from this file, which lies in the clone: the suite installs this
package editable (``scripts/ensure-venv``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SHARED", "data_dir"]

# <clone>/testdata/src/ctsvd_testdata/shared.py → <clone>/../shared
SHARED = Path(__file__).resolve().parents[4] / "shared"


def data_dir(name: str) -> Path | None:
    """``../shared/data/<name>``, or None when that folder is not beside this clone."""
    folder = SHARED / "data" / name
    return folder if folder.is_dir() else None
