"""Atomic outputs: whole or absent, never half."""

import os

import numpy as np
import pytest

from ctsvd_common import atomic


def visible(folder):
    return sorted(p.name for p in folder.iterdir())


def test_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path):
    dest = tmp_path / "a.json"
    atomic.write_json(dest, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(dest) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert dest.read_text().strip().endswith("}") and '"v": 1' in dest.read_text()
    assert visible(tmp_path) == ["a.json"]


def test_nan_is_refused_rather_than_written_as_invalid_json(tmp_path):
    with pytest.raises(ValueError):
        atomic.write_json(tmp_path / "x.json", {"x": float("nan")})
    assert visible(tmp_path) == []


def test_outputs_are_readable_by_others(tmp_path):
    old = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "t.txt", "x")
        with atomic.staged_dir(tmp_path / "d") as d:
            (d / "f").write_text("y")
    finally:
        os.umask(old)
    assert (tmp_path / "t.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755


def test_npy_writer_publishes_only_on_commit(tmp_path):
    dest = tmp_path / "v.npy"
    writer = atomic.NpyWriter(dest, (3, 4))
    other = np.load(writer.temp_path, mmap_mode="r+")  # as a Spark task would
    other[1] = 7
    other.flush()
    assert not dest.exists()
    writer.array[0] = 1
    writer.commit()
    assert np.array_equal(np.load(dest), [[1] * 4, [7] * 4, [0] * 4])
    assert visible(tmp_path) == ["v.npy"]
    with pytest.raises(KeyError):
        with atomic.NpyWriter(tmp_path / "w.npy", (2,)):
            raise KeyError
    assert visible(tmp_path) == ["v.npy"]


def test_staged_dir_replaces_a_folder_whole_or_not_at_all(tmp_path):
    dest = tmp_path / "series-001"
    with atomic.staged_dir(dest) as d:
        (d / "old").write_text("1")
    with pytest.raises(OSError):
        with atomic.staged_dir(dest) as d:
            (d / "new").write_text("2")
            raise OSError("disk full")
    assert visible(dest) == ["old"] and visible(tmp_path) == ["series-001"]
    with atomic.staged_dir(dest) as d:
        (d / "new").write_text("2")
    assert visible(dest) == ["new"] and visible(tmp_path) == ["series-001"]
