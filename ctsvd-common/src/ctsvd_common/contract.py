"""The data contract between the stages of the suite.

A ChRIS plugin sees only its parent's output folder, so each stage hands the
next one folder per series that holds everything later stages need::

    <series>/volume.npy      float32 (slices, rows, cols), Hounsfield units,
                             slices sorted along the slice normal
    <series>/manifest.json   identity, geometry, window presets, per-slice
                             sources and everything that was skipped, and why
    <series>/headers/        one pixel-less DICOM header per slice, in volume
                             order, for writing a derived series later

pl-ssvd-denoise adds the factorisation A ≈ U·diag(s)·Vt of the matrix A
(slices × pixels) and passes the three items above forward unchanged::

    <series>/U.npy  (slices, k)   <series>/s.npy  (k,)   <series>/Vt.npy  (k, pixels)
    <series>/svd.json             parameters, Spark set-up, timings, error

Series folders may sit at any depth; a stage keeps its parent's relative
layout. Everything is versioned by ``MANIFEST_VERSION``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ctsvd_common import atomic

MANIFEST_FORMAT = "ctsvd-series-manifest"
MANIFEST_VERSION = 1

VOLUME = "volume.npy"
MANIFEST = "manifest.json"
HEADERS = "headers"

SVD_U = "U.npy"
SVD_S = "s.npy"
SVD_VT = "Vt.npy"
SVD_JSON = "svd.json"

PASSED_FORWARD = (VOLUME, MANIFEST, HEADERS)

# What stages write beside their data: run reports (see ``stage``) and
# pl-dcm-anon's tag report. Later stages pass over them without a word.
REPORT_SUFFIX = ".report.json"
TAG_REPORT = "tag-report"


def is_stage_artifact(relative: Path) -> bool:
    return relative.name.endswith(REPORT_SUFFIX) or relative.parts[0] == TAG_REPORT


class ContractError(Exception):
    """A series folder does not hold what the contract promises."""


def find_series(inputdir: Path) -> list[Path]:
    """Every series folder below ``inputdir`` (those holding a manifest), sorted."""
    return sorted(p.parent for p in Path(inputdir).rglob(MANIFEST) if not p.name.startswith("."))


def read_manifest(series_dir: Path) -> dict[str, Any]:
    path = Path(series_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ContractError(f"{path}: cannot read the manifest ({e})") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ContractError(f"{path}: not a series manifest (format is {manifest.get('format')!r})")
    if manifest.get("version") != MANIFEST_VERSION:
        raise ContractError(
            f"{path}: manifest version {manifest.get('version')} is not supported "
            f"(this stage reads version {MANIFEST_VERSION}); re-run pl-dicom2matrix"
        )
    return manifest


def open_volume(series_dir: Path, manifest: dict[str, Any] | None = None) -> np.ndarray:
    """Memory-map the series volume and check it against its manifest."""
    path = Path(series_dir) / VOLUME
    try:
        volume = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ContractError(f"{path}: cannot read the volume ({e})") from None
    if volume.dtype != np.float32 or volume.ndim != 3:
        raise ContractError(f"{path}: expected a float32 (slices, rows, cols) volume, found {volume.dtype} {volume.shape}")
    if manifest is not None and list(volume.shape) != list(manifest["volume"]["shape"]):
        raise ContractError(f"{path}: shape {volume.shape} differs from the manifest's {manifest['volume']['shape']}")
    return volume


def header_files(series_dir: Path, manifest: dict[str, Any]) -> list[Path]:
    """The per-slice header files, in volume order."""
    return [Path(series_dir) / s["header"] for s in manifest["slices"]]


def pass_forward(src: Path, dest: Path) -> None:
    """Copy what later stages need from one series folder to another.

    A copy, never a link: ChRIS moves outputs between compute resources.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for name in PASSED_FORWARD:
        item = src / name
        if item.is_dir():
            target = dest / name
            target.mkdir(exist_ok=True)
            for f in sorted(item.iterdir()):
                atomic.copy_file(f, target / f.name)
        elif item.exists():
            atomic.copy_file(item, dest / name)
        else:
            raise ContractError(f"{item}: missing from the series folder")
