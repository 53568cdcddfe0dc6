"""Atomic file output.

Every file a stage writes goes to a hidden temporary name in the destination
folder and is renamed onto its final name only once it is complete, so a crash
or a kill never leaves a half file that looks whole. ``os.replace`` within one
folder is atomic on POSIX file systems, including the NFS and CephFS volumes
that ChRIS compute resources mount.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

PART_SUFFIX = ".part"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temp_beside(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=PART_SUFFIX, dir=dest.parent)
    # mkstemp makes 0600 files; outputs are read by other users (CUBE, pfcon, viewers).
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` on success.

    If the ``with`` block raises, the temporary file is removed and ``dest`` is
    left as it was.
    """
    dest = Path(dest)
    tmp = _temp_beside(dest)
    try:
        yield tmp
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(dest: str | os.PathLike, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def write_text(dest: str | os.PathLike, text: str) -> None:
    write_bytes(dest, text.encode("utf-8"))


def write_json(dest: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON. NaN and infinity are refused: they are not JSON."""
    write_text(dest, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def save_npy(dest: str | os.PathLike, array: np.ndarray) -> None:
    """``np.save`` to ``dest`` atomically (no ``.npy`` is appended to the name)."""
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)


def _create_aligned_npy(path: Path, shape: tuple[int, ...], dtype: np.dtype, align: int) -> None:
    """A zero-filled (sparse) ``.npy`` whose data start at a multiple of ``align`` bytes.

    The format allows any amount of space padding in its header (NPY 1.0: up
    to 64 KiB); readers find the data after the header's newline.
    """
    header = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
    prefix = len(np.lib.format.MAGIC_PREFIX) + 4   # magic, version 1.0, 2-byte header length
    data_start = -(-(prefix + len(header) + 1) // align) * align
    if data_start - prefix > 0xFFFF:
        raise ValueError(f"cannot align a .npy header to {align} bytes")
    padded = header.ljust(data_start - prefix - 1) + "\n"
    with open(path, "r+b") as f:
        f.write(np.lib.format.MAGIC_PREFIX + bytes([1, 0]) + (data_start - prefix).to_bytes(2, "little"))
        f.write(padded.encode("latin1"))
        f.truncate(data_start + int(np.prod(shape)) * dtype.itemsize)


def reserve(path: Path, size: int) -> None:
    """Allocate ``size`` bytes of ``path`` on the disk now, so that a full disk is an ``OSError``
    (ENOSPC) here rather than a SIGBUS later, when a memory-mapped write finds no block to fill."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):   # a file system that cannot reserve
            raise
    finally:
        os.close(fd)


class NpyWriter:
    """A ``.npy`` file filled in place, published under its final name on ``commit``.

    Large outputs (eigen-images, volumes) are written piecewise, possibly by
    several processes at once: the file and its header are created here at
    ``temp_path``; writers fill their own parts through a memory map (this
    process through :attr:`array`, others with ``np.load(temp_path,
    mmap_mode="r+")``), and :meth:`commit` renames the finished file. Its
    space is reserved on the disk when it is created (:func:`reserve`).
    """

    def __init__(self, dest: str | os.PathLike, shape: tuple[int, ...], dtype=np.float32, align: int = 0):
        """``align``: make the data start at a multiple of this many bytes (a page, say), so that
        writers of whole pages never share one; 0 keeps NumPy's own 64-byte header."""
        self.dest = Path(dest)
        self.temp_path = _temp_beside(self.dest)
        self._array: np.memmap | None = None
        try:
            if align:
                _create_aligned_npy(self.temp_path, tuple(shape), np.dtype(dtype), align)
            else:
                # Not kept open: other processes may write first; map again only when asked.
                np.lib.format.open_memmap(self.temp_path, mode="w+", dtype=dtype, shape=shape)
            reserve(self.temp_path, self.temp_path.stat().st_size)
        except BaseException:
            self.temp_path.unlink(missing_ok=True)
            raise

    @property
    def array(self) -> np.memmap:
        if self._array is None:
            self._array = np.load(self.temp_path, mmap_mode="r+")
        return self._array

    def commit(self) -> Path:
        if self._array is not None:
            self._array.flush()
            self._array = None
        os.replace(self.temp_path, self.dest)
        return self.dest

    def discard(self) -> None:
        self._array = None
        self.temp_path.unlink(missing_ok=True)

    def __enter__(self) -> "NpyWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def copy_file(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Copy ``src`` to ``dest`` atomically (a real copy: ChRIS moves outputs between hosts)."""
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)


class StagedDir:
    """A hidden folder beside its future place, published whole by :meth:`commit`.

    Use it where the final name is known only at the end (series are numbered
    once it is known which of them succeeded); :func:`staged_dir` is the
    ``with`` form. A previous folder of the same name is replaced only once
    the new one is complete.
    """

    def __init__(self, parent: str | os.PathLike, name_hint: str):
        parent = Path(parent)
        parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=f".{name_hint}.", suffix=PART_SUFFIX, dir=parent))
        self.path.chmod(0o777 & ~_umask())

    def commit(self, dest: str | os.PathLike) -> Path:
        dest = Path(dest)
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
            os.replace(dest, old / dest.name)
            os.replace(self.path, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.path, dest)
        return dest

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden temporary folder beside ``dest``; it becomes ``dest`` on success.

    A series folder thus appears whole or not at all.
    """
    dest = Path(dest)
    staged = StagedDir(dest.parent, dest.name)
    try:
        yield staged.path
        staged.commit(dest)
    except BaseException:
        staged.discard()
        raise
