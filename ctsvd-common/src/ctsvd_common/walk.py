"""Walking an input folder: regular files only, links only within it, and a reason for everything left out.

An upload or an export holds more than files: hidden files (``.DS_Store``,
an editor's swap file), FIFOs and sockets (reading one blocks forever),
links that lead nowhere, and links that lead out of the input folder (to
``/etc/passwd``, to another patient's folder). A stage reads only regular
files, follows a link only when it ends at a regular file inside the input
folder, and names every other entry with the reason it was left out, so
nothing is passed over silently. Folders behind links are not entered (a
link to a parent would loop); their files are read where they are.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device"}


@dataclass
class InputTree:
    files: list[Path] = field(default_factory=list)                   # sorted
    left_out: list[tuple[Path, str]] = field(default_factory=list)    # (entry, reason), sorted


def input_tree(root: str | os.PathLike) -> InputTree:
    """Every regular file below ``root``, and every entry left out, with its reason."""
    root = Path(root)
    real_root = Path(os.path.realpath(root))
    tree = InputTree()
    _walk(root, real_root, tree)
    tree.files.sort()
    tree.left_out.sort()
    return tree


def _walk(folder: Path, real_root: Path, tree: InputTree) -> None:
    try:
        entries = list(os.scandir(folder))
    except OSError as e:
        tree.left_out.append((folder, f"cannot list this folder ({type(e).__name__})"))
        return
    for entry in entries:
        path = Path(entry.path)
        if entry.name.startswith("."):
            tree.left_out.append((path, "hidden folder, not read" if entry.is_dir(follow_symlinks=False)
                                  else "hidden file, not read"))
            continue
        if entry.is_symlink():
            why = link_problem(path, real_root)
            if why is None and Path(os.path.realpath(path)).is_dir():
                why = "a link to a folder: not followed (its files are read where they are)"
            if why is None:
                tree.files.append(path)
            else:
                tree.left_out.append((path, why))
        elif entry.is_dir(follow_symlinks=False):
            _walk(path, real_root, tree)
        elif entry.is_file(follow_symlinks=False):
            tree.files.append(path)
        else:
            tree.left_out.append((path, f"{_kind(path)}, not a regular file: not read"))


def _kind(path: Path) -> str:
    try:
        return _KINDS.get(stat.S_IFMT(os.lstat(path).st_mode), "not a file or folder")
    except OSError:
        return "gone"


def link_problem(path: str | os.PathLike, real_root: str | os.PathLike) -> str | None:
    """Why the symbolic link ``path`` may not be followed (leads nowhere, or out of ``real_root``,
    which must be resolved already), or None when it ends inside ``real_root``."""
    target = Path(os.path.realpath(path))
    if not target.exists():
        return "a link that leads nowhere (dangling), not read"
    try:
        target.relative_to(real_root)
    except ValueError:
        return "a link to outside the input folder, not followed"
    if not (target.is_file() or target.is_dir()):
        return f"a link to {_kind(target)}, not read"
    return None


def unsafe_entry(paths: list[Path], root: str | os.PathLike) -> tuple[Path, str] | None:
    """The first of ``paths`` (and of the files in those that are folders) that is not a regular file or
    folder reached within ``root``, with the reason; None when all are. For files a stage reads or passes on."""
    real_root = Path(os.path.realpath(root))
    for path in paths:
        if path.is_symlink():
            why = link_problem(path, real_root)
            if why is not None:
                return path, why
        if path.is_dir():
            found = unsafe_entry(sorted(path.iterdir()), root)
            if found is not None:
                return found
        elif path.exists() and not path.is_file():
            return path, f"{_kind(path)}, not a regular file"
    return None
