"""--resume: which nodes of an earlier run in the same output folder need not run again.

A node is reused when the earlier run's record (pipeline-run.json) says it
ended ok with exactly the command it would run now (same plugin, flags, input
and output folders), its own report says it exited 0, its output folder holds
the very files it held when the node ended (same paths, sizes and modification
times), and its parent was reused too (a parent that ran again may have made
different outputs).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

RECORD = "pipeline-run.json"
OK = ("ok", "resumed")


def earlier_runs(outputdir: Path) -> dict[str, dict]:
    """The earlier record's nodes by title; {} when there is none (or it cannot be read)."""
    try:
        return {n["title"]: n for n in json.loads((outputdir / RECORD).read_text())["nodes"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def fingerprint(folder: Path) -> str:
    """A digest of every file below folder: relative path, size and modification time (no content read)."""
    digest = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            st = p.stat()
            digest.update(f"{p.relative_to(folder).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def why_not(earlier: dict | None, command: list[str], report: Path) -> str | None:
    """None when the node's earlier outputs are complete for this command; else the reason, in words."""
    if earlier is None or earlier.get("status") not in OK:
        return "it did not end ok before"
    if earlier.get("command") != command:
        return "its command changed"
    try:
        facts = json.loads(report.read_text())
    except (OSError, ValueError):
        return f"its report {report.name} is missing"
    if facts.get("exit_code") != 0:
        return f"its report says exit {facts.get('exit_code')}"
    if earlier.get("fingerprint") != fingerprint(report.parent):
        return "its output folder changed since it ended"
    return None
