"""Worker processes: results in input order, at most one per CPU, killed when the run stops or its parent dies."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from ctsvd_common import resources
from ctsvd_common.workers import WorkerPool, available_cpus, capped_workers


def _slow_square(x: int) -> tuple[int, int]:
    time.sleep(0.02)
    return x * x, os.getpid()


def test_results_come_back_in_input_order_from_several_processes():
    with WorkerPool(2) as pool:
        results = list(pool.map(_slow_square, list(range(40)), 4))
    assert [r for r, _ in results] == [x * x for x in range(40)]
    assert len({pid for _, pid in results}) == 2 and os.getpid() not in {pid for _, pid in results}


def test_one_worker_or_few_items_run_in_this_process():
    with WorkerPool(1) as pool:
        assert {pid for _, pid in pool.map(_slow_square, [1, 2, 3])} == {os.getpid()}
    with WorkerPool(2, min_items=32) as pool:
        assert {pid for _, pid in pool.map(_slow_square, list(range(31)))} == {os.getpid()}


def test_leaving_by_an_exception_kills_the_workers_at_once():
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        with WorkerPool(2) as pool:
            results = pool.map(_slow_square, list(range(1000)))    # 10 s of work for two processes
            assert [next(results)[0] for _ in range(3)] == [0, 1, 4]
            pids = {pid for pid in pool._pool._processes}
            raise KeyboardInterrupt
    assert time.perf_counter() - start < 5
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_workers_die_with_a_parent_that_is_killed(tmp_path):
    """SIGKILL gives the parent no chance to clean up: the kernel ends the workers (PR_SET_PDEATHSIG)."""
    pids = tmp_path / "pids"
    script = textwrap.dedent(f"""
        import os, time
        from ctsvd_common.workers import WorkerPool
        def work(x):
            with open({str(pids)!r}, "a") as f:
                f.write(f"{{os.getpid()}}\\n")
            time.sleep(60)
        with WorkerPool(2) as pool:
            list(pool.map(work, [1, 2]))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 30
    while (not pids.exists() or len(pids.read_text().split()) < 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = [int(p) for p in pids.read_text().split()]
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    alive = workers
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _alive(p)]
        time.sleep(0.05)
    assert not alive, f"workers still alive after their parent was killed: {alive}"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_workers_are_capped_at_the_cpus_this_process_may_use():
    cpus = available_cpus()
    assert 1 <= cpus <= len(os.sched_getaffinity(0))
    assert capped_workers(0) == (cpus, None)
    assert capped_workers(1) == (1, None)
    count, note = capped_workers(10_000)
    assert count == cpus and note == f"--workers 10000 capped at {cpus}: the CPUs this process may use"


def test_a_cgroup_quota_caps_the_cpus(tmp_path, monkeypatch):
    (tmp_path / "cpu.max").write_text("150000 100000\n")      # 1.5 CPUs: two may run part-time
    (tmp_path / "memory.max").write_text(f"{4 << 30}\n")
    (tmp_path / "memory.current").write_text(f"{1 << 30}\n")
    monkeypatch.setattr(resources, "CGROUP", tmp_path)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert resources.available_cpus() == 2
    assert resources.available_memory() <= 3 << 30
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "memory.max").write_text("max\n")
    assert resources.available_cpus() == 64
    assert resources.available_memory() == resources._meminfo_available()
