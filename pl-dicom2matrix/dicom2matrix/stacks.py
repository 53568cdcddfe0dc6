"""Grouping DICOM images into stacks of parallel slices, and ordering them in space.

A stack is what can become one volume: images of one series that share an
orientation and a matrix size. Most series are one stack; a series that
mixes orientations (say, a reformat saved into its acquisition's series)
becomes several. Slices are ordered by their position along the slice
normal n = row direction × column direction (DICOM PS3.3 C.7.6.2.1.1), the
only order that is right for every scanner; file names and InstanceNumber
are not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

# Orientation cosines agree to this tolerance within one stack.
ORIENTATION_DECIMALS = 4
# Slices closer than this along the normal are the same slice twice.
DUPLICATE_MM = 1e-3


@dataclass
class Slice:
    path: Path
    header: Dataset

    @property
    def instance_number(self) -> int:
        try:
            return int(self.header.get("InstanceNumber", 0) or 0)
        except (TypeError, ValueError):
            return 0


@dataclass
class Stack:
    series_uid: str
    orientation: tuple[float, ...] | None
    shape: tuple[int, int]
    slices: list[Slice] = field(default_factory=list)
    positions: list[float] = field(default_factory=list)
    sorted_by: str = ""

    @property
    def first(self) -> Dataset:
        return self.slices[0].header

    @property
    def normal(self) -> np.ndarray | None:
        if self.orientation is None:
            return None
        row, col = np.array(self.orientation[:3]), np.array(self.orientation[3:])
        return np.cross(row, col)


def _orientation(ds: Dataset) -> tuple[float, ...] | None:
    try:
        values = [float(v) for v in ds.ImageOrientationPatient]
    except (AttributeError, TypeError, ValueError):
        return None
    return tuple(round(v, ORIENTATION_DECIMALS) + 0.0 for v in values) if len(values) == 6 else None


def _position(ds: Dataset) -> np.ndarray | None:
    try:
        values = [float(v) for v in ds.ImagePositionPatient]
    except (AttributeError, TypeError, ValueError):
        return None
    return np.array(values) if len(values) == 3 else None


def group(slices: list[Slice]) -> list[Stack]:
    """Group images by (series, orientation, rows × columns), in a stable order."""
    stacks: dict[tuple, Stack] = {}
    for s in slices:
        ds = s.header
        key = (str(ds.get("SeriesInstanceUID", "")), _orientation(ds), (int(ds.Rows), int(ds.Columns)))
        stacks.setdefault(key, Stack(key[0], key[1], key[2])).slices.append(s)

    def order(stack: Stack):
        ds = stack.first
        try:
            number = int(ds.get("SeriesNumber", 0) or 0)
        except (TypeError, ValueError):
            number = 0
        return (str(ds.get("StudyInstanceUID", "")), number, stack.series_uid, str(stack.orientation), stack.shape)

    return sorted(stacks.values(), key=order)


def sort_along_normal(stack: Stack) -> list[tuple[Slice, str]]:
    """Order ``stack.slices`` in space; return the slices dropped as duplicates, with why.

    Slices without a usable position fall back, as a whole stack, to
    InstanceNumber order, which ``stack.sorted_by`` records.
    """
    normal = stack.normal
    positions = [_position(s.header) for s in stack.slices]
    if normal is None or any(p is None for p in positions):
        stack.slices.sort(key=lambda s: (s.instance_number, str(s.path)))
        stack.positions = [float(s.instance_number) for s in stack.slices]
        stack.sorted_by = "InstanceNumber (no ImagePositionPatient/ImageOrientationPatient)"
        return []
    along = [float(np.dot(p, normal)) for p in positions]
    order = sorted(range(len(along)), key=lambda i: (along[i], stack.slices[i].instance_number, str(stack.slices[i].path)))
    kept: list[int] = []
    dropped: list[tuple[Slice, str]] = []
    for i in order:
        if kept and abs(along[i] - along[kept[-1]]) < DUPLICATE_MM:
            dropped.append((stack.slices[i], f"duplicate slice position ({along[i]:.3f} mm along the normal) "
                                             f"of {stack.slices[kept[-1]].path.name}"))
        else:
            kept.append(i)
    stack.slices = [stack.slices[i] for i in kept]
    stack.positions = [along[i] for i in kept]
    stack.sorted_by = "position along the slice normal"
    return dropped


def spacing_report(positions: list[float]) -> dict:
    """Median slice spacing and every gap that departs from it by more than 10 %."""
    if len(positions) < 2:
        return {"slice_spacing_mm": None, "uniform_spacing": True, "gaps": []}
    steps = np.diff(positions)
    median = float(np.median(steps))
    gaps = [{"after_slice": int(i), "spacing_mm": round(float(d), 4)}
            for i, d in enumerate(steps) if abs(d - median) > max(0.1 * abs(median), 1e-3)]
    return {"slice_spacing_mm": round(median, 4), "uniform_spacing": not gaps, "gaps": gaps}
