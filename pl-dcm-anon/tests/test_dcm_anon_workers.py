"""Worker processes: results in input order, no more workers than the files justify, an early stop is quick."""

from __future__ import annotations

import os
import time

from dcm_anon.workers import MIN_FILES_PER_WORKER, available_cpus, ordered_map, worker_count


def _slow_square(x: int) -> tuple[int, int]:
    time.sleep(0.02)
    return x * x, os.getpid()


def test_results_come_back_in_input_order_from_several_processes():
    results = list(ordered_map(_slow_square, range(40), 2))
    assert [r for r, _ in results] == [x * x for x in range(40)]
    assert len({pid for _, pid in results}) == 2 and os.getpid() not in {pid for _, pid in results}


def test_one_worker_runs_in_this_process():
    assert {pid for _, pid in ordered_map(_slow_square, range(3), 1)} == {os.getpid()}


def test_closing_early_drops_the_files_not_started():
    start = time.perf_counter()
    results = ordered_map(_slow_square, range(1000), 2)    # 10 s of work for two processes
    assert [next(results)[0] for _ in range(3)] == [0, 1, 4]
    results.close()
    assert time.perf_counter() - start < 5


def test_worker_count():
    assert worker_count(2, 1000) == 2
    assert worker_count(4, 2 * MIN_FILES_PER_WORKER) == 2      # no more than the files justify
    assert worker_count(2, 3) == 1
    assert worker_count(0, 10_000) == available_cpus() >= 1   # 0: one per CPU this process may use
