"""How logs and reports name an input: by its position and a keyed hash of its path, never by the path.

Exports name files and folders after patients, dates and record numbers
(``DOE_JANE/2023-04-05_CT/20230405101112_0000.dcm``), and a file can fail
before anything in it says whose it is. So no stage prints an input's path:
each input is ``input #7 (3fa2c1d9)``, its position among the run's inputs
(in name order, the order every stage walks them) and the first 32 bits of
HMAC-SHA256(key, relative path). The hash tells two entries apart and ties a
log line to its report entry; without the key it cannot be tested against a
guessed path. The key is random for each run unless the stage is given one
(dcm_anon derives it from ``--pseudonym-key``).

Names this suite gives its own outputs carry nothing and are shown as they
are: a series folder ``series-NNN`` and what a stage writes in it
(``0001.dcm``, ``headers/0001.dcm``, ``volume.npy``...). So a stage reading
an earlier stage's output names its inputs as that stage named them.

The mapping back to paths exists only in the file the user asks for with
``--input-map``: it holds the original paths, that is PHI, and must therefore
be outside the output folder (which goes on to the next stage).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from pathlib import Path, PurePath
from typing import Iterable

from ctsvd_common import atomic

MAP_FORMAT = "ctsvd-input-map"
HASH_HEX = 8
# The names stages of this suite give (ctsvd_common.contract), and nothing else.
_OWN_NAME = re.compile(r"series-\d{3}(/(\d{4}\.dcm|headers(/\d{4}\.dcm)?|volume\.npy|manifest\.json|U\.npy|s\.npy"
                       r"|Vt\.npy|svd\.json|local\.npy|local\.json|render\.json))?")
LABEL = re.compile(r"input #(\d+) \(([0-9a-f]{8})\)")


def label_position(label: str) -> int:
    """The position a label gives (1 for the first input), or ValueError when it is no label."""
    m = LABEL.fullmatch(label)
    if m is None:
        raise ValueError(f"not an input label: {label!r}")
    return int(m[1])


class InputNames:
    """The labels of one run's inputs; positions in the order they are numbered (or first named)."""

    def __init__(self, key: bytes | None = None):
        self._key = key or secrets.token_bytes(32)
        self._position: dict[str, int] = {}

    def number(self, relatives: Iterable[str | os.PathLike]) -> None:
        """Give these inputs their positions, in this order (before any of them is named)."""
        for relative in relatives:
            self._position.setdefault(PurePath(relative).as_posix(), len(self._position) + 1)

    def position(self, relative: str | os.PathLike) -> int:
        key = PurePath(relative).as_posix()
        return self._position.setdefault(key, len(self._position) + 1)

    def digest(self, relative: str | os.PathLike) -> str:
        text = PurePath(relative).as_posix().encode("utf-8", "surrogateescape")
        return hmac.new(self._key, b"input-name\x00" + text, hashlib.sha256).hexdigest()[:HASH_HEX]

    def __call__(self, relative: str | os.PathLike) -> str:
        text = PurePath(relative).as_posix()
        if _OWN_NAME.fullmatch(text):
            return text
        return f"input #{self.position(relative)} ({self.digest(relative)})"

    def write_map(self, path: Path) -> None:
        """Write every input named so far with its label and relative path (PHI: only where asked)."""
        entries = [{"input": self(rel), "position": pos, "path": rel}
                   for rel, pos in sorted(self._position.items(), key=lambda item: item[1])]
        atomic.write_text(path, json.dumps({"format": MAP_FORMAT, "version": 1, "contains_phi": True,
                                            "inputs": entries}, indent=1, ensure_ascii=False) + "\n")


def check_map_path(path: str | os.PathLike, outputdir: Path) -> Path:
    """``path`` as an absolute path, or ValueError when it would land in the output folder."""
    target = Path(path).expanduser().absolute()
    out = Path(outputdir).absolute()
    if target == out or out in target.parents:
        raise ValueError("--input-map must be outside the output folder: it holds the original "
                         "paths, which must not go on to the next stage")
    if target.is_dir():
        raise ValueError("--input-map names a folder; give a file name")
    return target
