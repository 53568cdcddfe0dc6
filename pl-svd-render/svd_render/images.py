"""Windowed 8-bit pictures of HU slices: PNGs, montages and the scree plot."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ctsvd_common import atomic

DIFFERENCE_WINDOW_HU = 200.0  # original − denoised shown over ±100 HU when the noise is not known ...
NOISE_WINDOW_SIGMAS = 8.0     # ... and over ±4 σ of the measured noise when it is (W 100 at most, 10 at least),
NOISE_WINDOW_RANGE = (10.0, 100.0)   # narrow enough that what was removed shows as texture
# Montage layout, in pixels: tiles between MIN_TILE and MAX_TILE on their long side,
# a column of row labels, two lines of column headings, and the gap between tiles.
MIN_TILE, MAX_TILE, LABEL_W, HEADER, PAD = 160, 256, 70, 30, 4
# The slice viewer's strips: slices at most VIEWER_TILE pixels on their long side (the page shows them
# about that size, the DICOM series has them whole), at most STRIP_HEIGHT pixels a column (browsers
# and JPEG cap an image's side), as JPEG of this quality.
VIEWER_TILE, STRIP_HEIGHT, STRIP_QUALITY = 256, 16384, 85
# The presets pl-dicom2matrix puts in every manifest, and "header" (the scanner's
# own window), which only series whose headers carry one have.
PRESETS = ("lung", "mediastinum", "bone", "header")
# --windows auto: the scanner's own window (it knows the body part) and bone when the series has
# one, the chest pair otherwise.
AUTO_WITH_HEADER, AUTO_WITHOUT = ("header", "bone"), ("mediastinum", "lung")


@dataclass(frozen=True)
class Window:
    name: str
    center: float
    width: float

    def to_uint8(self, hu: np.ndarray) -> np.ndarray:
        """The DICOM linear VOI LUT (PS3.3 C.11.2.1.2), simplified to 8 bits."""
        low = self.center - self.width / 2
        scaled = (np.asarray(hu, dtype=np.float32) - low) * (255.0 / self.width)
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)

    @property
    def label(self) -> str:
        return f"{self.name} (C {self.center:g} / W {self.width:g})"


def parse_windows(text: str) -> list[Window | str]:
    """``"lung,soft:50:350"`` → preset names and custom windows, checked without any data.

    A ValueError names the bad item and what ``--windows`` accepts.
    """
    items: list[Window | str] = []
    names: set[str] = set()
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, *numbers = item.split(":")
        if numbers:
            try:
                center, width = (float(v) for v in numbers)
            except ValueError:
                raise ValueError(f"--windows: {item!r} is not NAME:CENTER:WIDTH") from None
            if not (math.isfinite(center) and math.isfinite(width) and width > 0):
                raise ValueError(f"--windows: {item!r} needs a finite center and a positive width")
            name = name or "custom"
            if not re.fullmatch(r"[A-Za-z0-9_-]+", name):  # it names a folder
                raise ValueError(f"--windows: name {name!r} may hold only letters, digits, _ and -")
            entry: Window | str = Window(name, center, width)
        elif name in PRESETS or (name == "auto" and len(text.split(",")) == 1):
            entry = name
        else:
            raise ValueError(f"--windows: unknown window {item!r} (presets: {', '.join(PRESETS)}; "
                             "or NAME:CENTER:WIDTH)")
        if name in names:  # each window has its own folder of PNGs
            raise ValueError(f"--windows: {name!r} is given twice")
        names.add(name)
        items.append(entry)
    if not items:
        raise ValueError("--windows: give at least one window")
    return items


def difference_width(noise_hu: float | None) -> float:
    """The width of the window differences are shown in: ±4 σ of the measured noise, within
    :data:`NOISE_WINDOW_RANGE`; the fixed :data:`DIFFERENCE_WINDOW_HU` when no noise is known."""
    if noise_hu is None or not math.isfinite(noise_hu) or noise_hu <= 0:
        return DIFFERENCE_WINDOW_HU
    low, high = NOISE_WINDOW_RANGE
    return float(min(high, max(low, round(NOISE_WINDOW_SIGMAS * noise_hu / 10) * 10)))


def resolve_windows(items: list[Window | str], presets: dict[str, dict]) -> tuple[list[Window], list[str]]:
    """One series' windows, and the presets named that its manifest lacks. ``"auto"`` is the
    scanner's window and bone when the series has one, mediastinum and lung otherwise."""
    if items == ["auto"]:
        items = list(AUTO_WITH_HEADER if "header" in presets else AUTO_WITHOUT)
    windows, missing = [], []
    for item in items:
        if isinstance(item, Window):
            windows.append(item)
        elif item in presets and (window := _preset(item, presets[item])) is not None:
            windows.append(window)
        else:
            missing.append(item)
    return windows, missing


def _preset(name: str, values: object) -> Window | None:
    """A manifest's window preset, or None when it is no window (not numbers, NaN, a width of 0 or less)."""
    try:
        center, width = float(values["center"]), float(values["width"])  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        return None
    return Window(name, center, width) if math.isfinite(center) and math.isfinite(width) and width > 0 else None


def save_png(path: Path, pixels: np.ndarray) -> None:
    with atomic.atomic_path(path) as tmp:
        # Level 3 is ~3× faster than the default for a few % more bytes on CT slices.
        Image.fromarray(pixels).save(tmp, format="PNG", compress_level=3)


def save_strip(path: Path, volumes: list[np.ndarray], window: Window) -> dict:
    """Every slice of each volume in one JPEG, for the HTML slice viewer: slice i of volume j at row
    i % per_column, column (i // per_column) * len(volumes) + j, each tile (tile_h, tile_w). Returns
    that layout."""
    m, rows, cols = volumes[0].shape
    scale = min(1.0, VIEWER_TILE / max(rows, cols))
    tile_h, tile_w = max(1, round(rows * scale)), max(1, round(cols * scale))
    per_column = max(1, min(m, STRIP_HEIGHT // tile_h))
    columns = -(-m // per_column)
    sheet = Image.new("L", (columns * len(volumes) * tile_w, per_column * tile_h), 0)
    for i in range(m):
        for j, volume in enumerate(volumes):
            tile = Image.fromarray(window.to_uint8(volume[i]))
            if scale < 1:
                tile = tile.resize((tile_w, tile_h), Image.Resampling.LANCZOS)
            sheet.paste(tile, (((i // per_column) * len(volumes) + j) * tile_w, (i % per_column) * tile_h))
    with atomic.atomic_path(path) as tmp:
        sheet.save(tmp, format="JPEG", quality=STRIP_QUALITY)
    return {"tile": [tile_h, tile_w], "per_column": per_column, "slices": m}


def tile_size(shape: tuple[int, ...]) -> tuple[int, int]:
    """A montage tile's (height, width): large slices shrunk to MAX_TILE, small ones enlarged to MIN_TILE
    so that column headings fit."""
    side = max(shape)
    scale = min(MAX_TILE, max(MIN_TILE, side)) / side
    return max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))


def montage(original: np.ndarray, results: list[tuple[str, str, np.ndarray]], picks: list[int],
            window: Window, diff_width: float = DIFFERENCE_WINDOW_HU) -> Image.Image:
    """A grid, one row per picked slice: original | each result | original − each result, with headings.

    ``results``: (name, heading, volume). Differences are windowed over ±diff_width / 2 around
    0 HU (see :func:`difference_width`), so mid-grey is no change whatever the display window.
    """
    diff_window = Window("difference", 0.0, diff_width)
    note = f"+/-{diff_width / 2:g} HU, grey = 0"
    # (heading, note, slice index → 8-bit tile)
    columns = [("original", "", lambda i: window.to_uint8(original[i]))]
    columns += [(heading, "", lambda i, v=volume: window.to_uint8(v[i])) for _, heading, volume in results]
    columns += [(f"original - {name}", note, lambda i, v=volume: diff_window.to_uint8(original[i] - v[i]))
                for name, _, volume in results]
    tile_h, tile_w = tile_size(original.shape[1:])
    canvas = Image.new("L", (LABEL_W + len(columns) * (tile_w + PAD), HEADER + len(picks) * (tile_h + PAD)), 0)
    draw = ImageDraw.Draw(canvas)
    for c, (title, subtitle, _) in enumerate(columns):
        x = LABEL_W + c * (tile_w + PAD) + 2
        draw.text((x, 3), title, fill=255)
        draw.text((x, 16), subtitle, fill=160)
    for r, i in enumerate(picks):
        y = HEADER + r * (tile_h + PAD)
        draw.text((2, y + tile_h // 2 - 5), f"slice {i + 1}", fill=255)
        for c, (_, _, tile) in enumerate(columns):
            img = Image.fromarray(tile(i)).resize((tile_w, tile_h), Image.Resampling.LANCZOS)
            canvas.paste(img, (LABEL_W + c * (tile_w + PAD), y))
    return canvas


def scree_svg(s: np.ndarray, rank: int, threshold: float | None, width: int = 640, height: int = 320) -> str:
    """Singular values on a log axis, the kept ones marked, as a standalone SVG."""
    s = np.asarray(s, dtype=float)
    left, right, top, bottom = 70, 20, 20, 45
    x = lambda i: left + (width - left - right) * (i / max(len(s) - 1, 1))
    positive = s[s > 0]
    lo = math.floor(math.log10(min(positive.min(), threshold or math.inf)))
    hi = math.ceil(math.log10(positive.max()))
    hi = hi if hi > lo else lo + 1
    y = lambda v: top + (height - top - bottom) * (hi - math.log10(max(v, 10 ** lo))) / (hi - lo)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
             f'<rect width="{width}" height="{height}" fill="white"/>']
    for e in range(lo, hi + 1):
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(10 ** e):.1f}" y2="{y(10 ** e):.1f}" stroke="#ddd"/>'
                     f'<text x="{left - 6}" y="{y(10 ** e) + 4:.1f}" text-anchor="end">1e{e}</text>')
    points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(s))
    parts.append(f'<polyline points="{points}" fill="none" stroke="#888"/>')
    for i, v in enumerate(s):
        color = "#c0392b" if i < rank else "#7f8c8d"
        parts.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.5" fill="{color}"/>')
    if threshold:
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(threshold):.1f}" y2="{y(threshold):.1f}" '
                     f'stroke="#2980b9" stroke-dasharray="4 3"/>'
                     f'<text x="{width - right}" y="{y(threshold) - 4:.1f}" text-anchor="end" fill="#2980b9">threshold</text>')
    parts.append(f'<text x="{(left + width - right) / 2}" y="{height - 10}" text-anchor="middle">'
                 f'component (first {rank} of {len(s)} kept, in red)</text>'
                 f'<text x="14" y="{(top + height - bottom) / 2}" text-anchor="middle" '
                 f'transform="rotate(-90 14 {(top + height - bottom) / 2})">singular value</text></svg>')
    return "\n".join(parts)


def noise_map_png(path: Path, sigma_map: np.ndarray, tile: int = 256) -> float:
    """The σ map (cells × cells, its mean over the series' slabs) as a grey PNG scaled so that white
    is its largest value, enlarged to ``tile`` pixels; returns that largest value (HU)."""
    plane = np.asarray(sigma_map, float).mean(axis=0)
    top = float(plane.max()) if plane.size and plane.max() > 0 else 1.0
    pixels = np.clip(np.rint(plane / top * 255), 0, 255).astype(np.uint8)
    h, w = plane.shape
    scale = tile / max(h, w)
    img = Image.fromarray(pixels).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                         Image.Resampling.NEAREST)
    with atomic.atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return top


def nps_svg(frequency: list[float], radial: list[float], width: int = 480, height: int = 260) -> str:
    """The radially averaged NPS (normalised to mean 1) against cycles/pixel, as a standalone SVG."""
    f, v = np.asarray(frequency, float), np.asarray(radial, float)
    left, right, top, bottom = 55, 15, 15, 40
    vmax = float(v.max()) if v.size and v.max() > 0 else 1.0
    x = lambda q: left + (width - left - right) * q / 0.5
    y = lambda q: top + (height - top - bottom) * (1 - q / vmax)
    points = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in zip(f, v))
    ticks = "".join(f'<text x="{x(q):.1f}" y="{height - 24}" text-anchor="middle">{q:g}</text>'
                    for q in (0, 0.1, 0.2, 0.3, 0.4, 0.5))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">'
            f'<rect width="{width}" height="{height}" fill="white"/>'
            f'<line x1="{left}" x2="{width - right}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#999"/>'
            f'<line x1="{left}" x2="{left}" y1="{top}" y2="{y(0):.1f}" stroke="#999"/>'
            f'<text x="{left - 6}" y="{y(vmax) + 4:.1f}" text-anchor="end">{vmax:.2g}</text>'
            f'<text x="{left - 6}" y="{y(0) + 4:.1f}" text-anchor="end">0</text>{ticks}'
            f'<polyline points="{points}" fill="none" stroke="#c0392b" stroke-width="2"/>'
            f'<text x="{(left + width - right) / 2}" y="{height - 6}" text-anchor="middle">cycles / pixel</text>'
            f'<text x="12" y="{(top + height - bottom) / 2}" text-anchor="middle" '
            f'transform="rotate(-90 12 {(top + height - bottom) / 2})">NPS (mean 1)</text></svg>')
