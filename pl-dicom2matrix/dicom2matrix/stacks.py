"""Grouping images into stacks of parallel slices, ordering them in space, and
describing their geometry.

A stack is what can become one volume: images of one series that share an
orientation, a matrix size, a pixel spacing, a slice thickness and an image
type, and, for multi-frame images, a stack ID. Most series are one stack. A
series that mixes them (a reformat saved into its acquisition's series, GE's
4 mm slices with 7 mm "ADD" slices under one SeriesInstanceUID) becomes
several, and each manifest says what told them apart.

Slices are ordered by their position along the slice normal n = row
direction × column direction (DICOM PS3.3 C.7.6.2.1.1), the only order that
is right for every scanner; file names and InstanceNumber are not.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from dicom2matrix.scan import Image

# Orientation cosines agree to this tolerance within one stack.
ORIENTATION_DECIMALS = 4
SPACING_DECIMALS = 3
THICKNESS_DECIMALS = 2
# Slices closer than this along the normal are the same slice twice.
DUPLICATE_MM = 1e-3
# A step this much longer than the median leaves slices out.
MISSING_STEP = 1.5
# A slice vector this far from the normal is a tilted (sheared) stack.
TILT_DEG = 0.5
BY_INSTANCE_NUMBER = "InstanceNumber (no ImagePositionPatient/ImageOrientationPatient)"

_KEY_NAMES = ("study", "series", "stack", "orientation", "size", "pixel spacing", "slice thickness", "image type")


def _round(values, decimals):
    return None if values is None else tuple(round(v, decimals) + 0.0 for v in values)


def stack_key(image: Image) -> tuple:
    return (image.study_uid, image.series_uid, image.stack_id,
            _round(image.orientation, ORIENTATION_DECIMALS), (image.rows, image.cols),
            _round(image.pixel_spacing, SPACING_DECIMALS),
            None if image.thickness is None else round(image.thickness, THICKNESS_DECIMALS),
            image.image_type)


@dataclass
class Stack:
    key: tuple
    images: list[Image] = field(default_factory=list)
    positions: list[float] = field(default_factory=list)
    sorted_by: str = ""
    duplicates: list[tuple[Image, str]] = field(default_factory=list)
    split_by: list[str] = field(default_factory=list)

    @property
    def first(self) -> Image:
        return self.images[0]

    @property
    def shape(self) -> tuple[int, int]:
        return self.first.rows, self.first.cols

    @property
    def normal(self) -> np.ndarray | None:
        o = self.first.orientation
        if o is None:
            return None
        n = np.cross(np.array(o[:3]), np.array(o[3:]))
        norm = np.linalg.norm(n)
        return n / norm if norm > 0 else None

    @property
    def label(self) -> str:
        """How logs name the stack: series number, plus what split it off. Never a
        description: free text may carry identity when the input was not de-identified."""
        img = self.first
        parts = [f"series {img.series_number or '?'}"]
        if "size" in self.split_by:
            parts.append(f"{img.rows}×{img.cols}")
        if "slice thickness" in self.split_by and img.thickness is not None:
            parts.append(f"{img.thickness:g} mm")
        if "image type" in self.split_by:
            parts.append("\\".join(img.image_type))
        if "stack" in self.split_by:
            parts.append(f"stack {img.stack_id}")
        return " ".join(parts)


def group(images: list[Image]) -> list[Stack]:
    """Group images into stacks, each ordered along its normal, in a stable order."""
    stacks: dict[tuple, Stack] = {}
    for image in images:
        key = stack_key(image)
        stacks.setdefault(key, Stack(key)).images.append(image)
    by_series = defaultdict(list)
    for stack in stacks.values():
        by_series[stack.key[:2]].append(stack)
    for siblings in by_series.values():
        if len(siblings) > 1:
            differ = [name for i, name in enumerate(_KEY_NAMES) if len({s.key[i] for s in siblings}) > 1]
            for s in siblings:
                s.split_by = differ
    for stack in stacks.values():
        sort_along_normal(stack)

    def order(stack: Stack):
        img = stack.first
        try:
            number = int(img.series_number or 0)
        except ValueError:
            number = 0
        return (img.study_uid, number, img.series_uid, str(stack.key[2:]))

    return sorted(stacks.values(), key=order)


def sort_along_normal(stack: Stack) -> None:
    """Order ``stack.images`` in space; drop and record duplicate positions.

    Slices without a usable position fall back, as a whole stack, to
    InstanceNumber order, which ``stack.sorted_by`` records.
    """
    normal = stack.normal
    if normal is None or any(i.position is None for i in stack.images):
        stack.images.sort(key=lambda i: (i.instance_number or 0, i.file, i.frame or 0))
        stack.positions = [float(i.instance_number or 0) for i in stack.images]   # an order, not millimetres
        stack.sorted_by = BY_INSTANCE_NUMBER
        return
    along = [float(np.dot(i.position, normal)) for i in stack.images]
    # At one position, a readable slice goes before one known to be broken, so it is the one kept.
    order = sorted(range(len(along)), key=lambda k: (along[k], stack.images[k].pixel_failure is not None,
                                                     stack.images[k].instance_number or 0,
                                                     stack.images[k].file, stack.images[k].frame or 0))
    kept: list[int] = []
    for k in order:
        if kept and abs(along[k] - along[kept[-1]]) < DUPLICATE_MM:
            stack.duplicates.append((stack.images[k], f"duplicate slice position ({along[k]:.3f} mm along the "
                                                      f"normal) of a slice kept in the volume"))
        else:
            kept.append(k)
    stack.images = [stack.images[k] for k in kept]
    stack.positions = [along[k] for k in kept]
    stack.sorted_by = "position along the slice normal"


def spacing_report(positions: list[float]) -> dict:
    """Median step, its range, every step that departs from it by more than 10 %,
    and how many slices the long steps leave out."""
    if len(positions) < 2:
        return {"slice_spacing_mm": None, "spacing_mm": None, "uniform_spacing": True, "gaps": [],
                "missing_slices": 0}
    steps = np.diff(positions)
    median = float(np.median(steps))
    gaps = [{"after_slice": int(i), "spacing_mm": round(float(d), 4)}
            for i, d in enumerate(steps) if abs(d - median) > max(0.1 * abs(median), 1e-3)]
    missing = sum(int(round(d / median)) - 1 for d in steps if median > 0 and d > MISSING_STEP * median)
    return {
        "slice_spacing_mm": round(median, 4),
        "spacing_mm": {"min": round(float(steps.min()), 4), "median": round(median, 4),
                       "max": round(float(steps.max()), 4)},
        "uniform_spacing": not gaps,
        "gaps": gaps,
        "missing_slices": missing,
    }


def tilt_deg(stack: Stack) -> float | None:
    """Angle between the slice vector (first to last position) and the normal.

    Non-zero for gantry-tilted acquisitions: their slices are sheared, not
    stacked straight along the normal.
    """
    normal = stack.normal
    if normal is None or len(stack.images) < 2 or None in (stack.images[0].position, stack.images[-1].position):
        return None
    v = np.subtract(stack.images[-1].position, stack.images[0].position)
    length = np.linalg.norm(v)
    if length == 0:
        return None
    return round(math.degrees(math.acos(min(1.0, abs(float(np.dot(v / length, normal)))))), 3)


def geometry_warnings(stack: Stack, spacing: dict, tilt: float | None) -> list[str]:
    out = []
    if tilt is not None and tilt > TILT_DEG:
        out.append(f"gantry tilt: the slices are sheared by {tilt:.1f}° from the normal; "
                   f"the volume keeps the acquired slices, not resampled")
    if spacing["missing_slices"]:
        out.append(f"about {spacing['missing_slices']} slice(s) missing: "
                   f"{len([g for g in spacing['gaps'] if g['spacing_mm'] > spacing['slice_spacing_mm']])} long step(s)")
    elif not spacing["uniform_spacing"]:
        out.append(f"uneven slice spacing: {len(spacing['gaps'])} step(s) depart from the median")
    if stack.duplicates:
        out.append(f"{len(stack.duplicates)} duplicate position(s) left out")
    return out
