"""The series is handed forward by link where the file system allows, by copy elsewhere, byte for byte."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from ctsvd_common import atomic, contract


@pytest.fixture
def src(tmp_path, decaying_volume, write_series) -> Path:
    series = write_series(tmp_path / "in" / "s", decaying_volume(m=4, rows=8, cols=16))
    (series / contract.HEADERS / "0000.dcm").write_bytes(b"header bytes")
    return series


def check_same_bytes(src: Path, dest: Path) -> None:
    for name in (contract.VOLUME, contract.MANIFEST, f"{contract.HEADERS}/0000.dcm"):
        assert (dest / name).read_bytes() == (src / name).read_bytes()
    assert not [p for p in dest.rglob(".*")], "temporary files left behind"


def test_on_one_file_system_nothing_is_copied(tmp_path, src):
    how = contract.pass_forward(src, tmp_path / "out" / "s")
    check_same_bytes(src, tmp_path / "out" / "s")
    shares_inode = os.stat(src / contract.VOLUME).st_ino == os.stat(tmp_path / "out" / "s" / contract.VOLUME).st_ino
    # A reflink is a new inode sharing the blocks; a hard link is the same inode.
    assert how in ("hard link", "reflink") and shares_inode == (how == "hard link")


def test_a_later_atomic_write_leaves_the_source_alone(tmp_path, src):
    contract.pass_forward(src, tmp_path / "out" / "s")
    before = (src / contract.VOLUME).read_bytes()
    atomic.save_npy(tmp_path / "out" / "s" / contract.VOLUME, np.zeros(3, np.float32))
    assert (src / contract.VOLUME).read_bytes() == before


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs a second file system (/dev/shm)")
def test_across_file_systems_it_copies(tmp_path, src):
    dest_root = Path("/dev/shm") / f"ctsvd-pass-forward-{os.getpid()}"
    if os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("/dev/shm is on the same file system as the test folder")
    try:
        assert contract.pass_forward(src, dest_root / "s") == "copy"
        check_same_bytes(src, dest_root / "s")
    finally:
        shutil.rmtree(dest_root, ignore_errors=True)
