"""Running one command and measuring it: exit code, wall time and peak memory.

Peak memory is the largest sum of the resident sets of the command's process
tree, sampled from /proc: every 0.02 s for the first second, every SAMPLE_S
seconds after. Spark's JVM and its Python workers are the SVD node's
descendants, and the driver does not wait for the JVM, so wait4's ru_maxrss
would miss them (it also reports the forking parent's size for short
commands). Pages shared between the processes are counted once per process,
so the sum can overstate the tree's footprint somewhat; a command that ends
before the first sample has no figure.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

SAMPLE_S = 0.2
PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_rss(pid: int) -> int:
    """Bytes resident in pid and all its descendants now (processes that end meanwhile count 0)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError, IndexError):
            continue
    return total


def execute(command: list[str], env: dict[str, str]) -> tuple[int, float, float | None]:
    """Run command to its end: (exit code, seconds, peak MiB or None)."""
    t0 = time.perf_counter()
    child = subprocess.Popen(command, env=env)
    peak = 0
    while child.poll() is None:
        time.sleep(0.02 if time.perf_counter() - t0 < 1 else SAMPLE_S)
        peak = max(peak, tree_rss(child.pid))
    return child.returncode, round(time.perf_counter() - t0, 2), round(peak / 2**20, 1) if peak else None
