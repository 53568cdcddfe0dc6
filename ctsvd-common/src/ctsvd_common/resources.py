"""What this process may use: CPUs, memory and disk, as a container's limits allow.

A plugin in a container sees the host's CPUs and memory in ``os.cpu_count()``
and ``/proc/meminfo``, but may use only what its cgroup grants. Every size
check and worker count of the suite asks here, so that one place reads the
limits (cgroup v2, then v1).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def available_cpus() -> int:
    """The CPUs this process may use: its affinity, capped by a cgroup CPU quota."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cpu_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _cpu_quota() -> float | None:
    try:   # v2: "max 100000" or "150000 100000"
        quota, period = (CGROUP / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:   # v1: a quota of -1 means none
        quota = int((CGROUP / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((CGROUP / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def capped_workers(requested: int) -> tuple[int, str | None]:
    """``requested`` worker processes (0: one per CPU), at most one per CPU this process may use.

    Returns the count and, when ``requested`` was cut, a one-line note saying so.
    """
    cpus = available_cpus()
    if requested <= 0:
        return cpus, None
    if requested > cpus:
        return cpus, f"--workers {requested} capped at {cpus}: the CPUs this process may use"
    return requested, None


def available_memory() -> int:
    """Bytes of memory this process can still get: the host's available memory, capped by the cgroup's room."""
    available = _meminfo_available()
    room = _cgroup_memory_room()
    if room is not None:
        available = min(available, room) if available is not None else room
    return available if available is not None else 1 << 62


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_memory_room() -> int | None:
    for limit_file, usage_file in ((CGROUP / "memory.max", CGROUP / "memory.current"),
                                   (CGROUP / "memory" / "memory.limit_in_bytes",
                                    CGROUP / "memory" / "memory.usage_in_bytes")):
        try:
            limit = limit_file.read_text().strip()
            if limit == "max" or int(limit) >= 1 << 60:   # v1 writes "no limit" as a huge number
                return None
            return max(0, int(limit) - int(usage_file.read_text()))
        except (OSError, ValueError):
            continue
    return None


def free_disk(path: str | os.PathLike) -> int:
    """Bytes an unprivileged writer may still put on the file system holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def size(n: float) -> str:
    """Bytes in the units people read: ``26.8 GB``, ``512 MB``."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"


class Budget:
    """The disk and memory a run may still use, shared out series by series before any work.

    A series whose declared size does not fit is refused with the numbers
    (:meth:`refusal`); one that fits takes its disk from the budget
    (:meth:`take`), so the next series is weighed against what is left.
    """

    def __init__(self, folder: str | os.PathLike):
        self.disk = free_disk(folder)
        self.memory = available_memory()

    def refusal(self, disk: int, memory: int = 0, memory_for: str = "to work on it") -> str | None:
        """None when ``disk`` bytes fit on the disk and ``memory`` bytes in memory; else the reason."""
        if memory > self.memory:
            return (f"too large for this machine: it needs about {size(memory)} of memory {memory_for}, "
                    f"{size(self.memory)} is available")
        if disk > self.disk:
            return (f"too large for the disk: its outputs need {size(disk)}, {size(self.disk)} is free "
                    f"on the output's file system")
        return None

    def take(self, disk: int) -> None:
        self.disk -= disk
