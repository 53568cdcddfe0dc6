"""The output folder of one run: claimed at the start, filled through staging, published at the end.

A run owns its output folder. It starts only in an empty folder, or, with
``--overwrite``, in one that holds exactly what an earlier run of the same
plugin wrote there (its run report lists it), which is removed first and
nothing else. Two runs' outputs therefore never mix, and nothing a user
put there is ever deleted.

Everything a run writes goes into a hidden staging folder inside the output
folder (``.<stage>.staging``: same file system, so publishing is renames;
hidden, so no later stage takes it for input). At the end the run report is
written, then each entry of the staging folder is renamed into place; a run
that is interrupted or ends in a fatal error publishes nothing and removes
its staging folder. A staging folder left by a killed run (SIGKILL, a lost
node) is removed by the next run into that folder.

While it runs, a run holds an exclusive ``flock`` on the output folder, so a
second run into the same folder is refused instead of taking it over.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from pathlib import Path

STAGING_SUFFIX = ".staging"


class OutputInUse(Exception):
    """The output folder cannot be claimed; the message is one line. The run ends with exit code 2."""


def staging_name(stage: str) -> str:
    return f".{stage}{STAGING_SUFFIX}"


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


class OutputFolder:
    """The output folder ``final`` of one run of the stage ``stage``, whose report is named ``report``."""

    def __init__(self, final: Path, stage: str, report: str):
        self.final = Path(final)
        self.stage = stage
        self.report = report
        self.staging = self.final / staging_name(stage)
        self._lock: int | None = None
        self._claimed = False   # only a run that claimed the folder may remove its staging

    @property
    def reserved(self) -> frozenset[str]:
        """Names in the output folder that no output may take."""
        return frozenset({self.report, self.staging.name})

    def claim(self, overwrite: bool) -> list[str]:
        """Make the folder this run's, create the staging folder; return what was done, as log lines.

        :class:`OutputInUse` when another run holds it, or it holds what this run may not remove.
        """
        self.final.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        notes = []
        if self.staging.exists() or self.staging.is_symlink():
            remove(self.staging)
            notes.append(f"removed {self.staging.name}/, left by a run that was stopped before it ended")
        present = sorted(p.name for p in self.final.iterdir())
        if present:
            if not overwrite:
                raise OutputInUse(f"{self.final}: the output folder is not empty ({len(present)} entries); give an "
                                  f"empty folder, or --overwrite to replace what an earlier {self.stage} run "
                                  f"wrote there")
            notes.append(self._remove_earlier_run(present))
        self.staging.mkdir()
        self._claimed = True
        return notes

    def _take_lock(self) -> None:
        fd = os.open(self.final, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise OutputInUse(f"{self.final}: another run is writing into this output folder") from None
            return   # no locks on this file system (ENOLCK): go on without one
        self._lock = fd

    def _remove_earlier_run(self, present: list[str]) -> str:
        """--overwrite: remove what the earlier run's report says it wrote, once all of it is accounted for."""
        try:
            earlier = json.loads((self.final / self.report).read_text())
            published = earlier["published"] if earlier.get("stage") == self.stage else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            published = None
        if not isinstance(published, list):
            raise OutputInUse(f"{self.final}: --overwrite: the output folder holds no report of an earlier "
                              f"{self.stage} run ({self.report}) that lists what it wrote, so nothing there "
                              f"is known to be ours to remove; give an empty folder")
        ours = {str(p) for p in published} | {self.report}
        foreign = [name for name in present if name not in ours]
        if foreign:
            raise OutputInUse(f"{self.final}: --overwrite: {len(foreign)} of the {len(present)} entries of the output "
                              f"folder were not written by the earlier {self.stage} run (its report does not "
                              f"list them); nothing was removed; move them away or give an empty folder")
        for name in present:
            if name != self.report:
                remove(self.final / name)
        remove(self.final / self.report)   # last: until then, a retry still knows what was ours
        return f"--overwrite: removed the {len(present) - 1} output(s) and the report of the earlier {self.stage} run"

    def publish(self) -> list[str]:
        """Rename every entry of the staging folder into the output folder; return their names."""
        names = sorted(p.name for p in self.staging.iterdir()) if self.staging.is_dir() else []
        for name in names:
            os.replace(self.staging / name, self.final / name)
        self.staging.rmdir()
        return names

    def staged(self) -> list[str]:
        """The names publish() would publish."""
        return sorted(p.name for p in self.staging.iterdir()) if self.staging.is_dir() else []

    def discard(self) -> None:
        """Remove the staging folder and everything in it (if this run made it: another run's is not ours)."""
        if self._claimed:
            shutil.rmtree(self.staging, ignore_errors=True)

    def release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
