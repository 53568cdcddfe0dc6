"""A synthetic low-dose chest CT series, written as real DICOM.

Two users rely on this module:

* the pipeline runner (``ctsvd-pipeline demo``, and ``run`` without an input
  folder), which writes it as the demo series, and
* the test suite, which uses the returned :class:`DemoSeries` as ground truth
  (exact HU values, the made-up PHI, the original UIDs).

Geometry conventions (DICOM patient coordinates, LPS, head-first supine):

* volume axes are ``(slice, row, col)``; ``spacing_mm`` is given in the same
  order, ``(dz, dy, dx)``;
* column index grows toward the patient's left (+x), row index toward the
  back (+y), slice index toward the head (+z). Slice 0 is the lowest slice
  (lung bases), the last one the highest (apexes);
* in-plane the anatomy is laid out in millimetres around the centre of the
  field of view, so a field of view of about 350 mm shows the whole chest;
* along z the anatomy is laid out over the scanned range, as a radiographer
  plans a chest scan to cover the lungs from apex to base. Any slice count
  therefore shows the whole chest; small things (nodules, rib thickness) keep
  their size in millimetres.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from ctsvd_testdata.dicom import HU_MAX, HU_MIN, clock, ds_string, quantise, stored_range

__all__ = [
    "CT_IMAGE_STORAGE",
    "UID_ROOT",
    "SERIES_FOLDER",
    "FOV_MM",
    "SLICE_SPACING_MM",
    "PRIVATE_CREATOR",
    "PRIVATE_GROUP",
    "DemoIdentity",
    "DemoSeries",
    "chest_phantom",
    "landmarks",
    "low_dose_noise",
    "nps_amplitude",
    "slice_dataset",
    "write_demo_series",
]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
UID_ROOT = "1.3.6.1.4.1.99999.58310."
SERIES_FOLDER = "CT-chest-lowdose"
FOV_MM = 350.0
SLICE_SPACING_MM = 2.5
PRIVATE_CREATOR = "ACME_PRIVATE 1.0"
PRIVATE_GROUP = 0x0029

# Tissue values in HU.
AIR = -1000.0
LUNG = -850.0
FAT = -100.0
PERICARDIAL_FAT = -90.0
MUSCLE = 40.0
VESSEL = 40.0
NODULE = 30.0
HEART = 45.0
LIVER = 55.0
DISC = 80.0
CANAL = 30.0
CARTILAGE = 150.0
CONTRAST = 200.0
CANCELLOUS = 250.0
RIB_MARROW = 300.0
POSTERIOR_BONE = 600.0
CORTICAL = 700.0
TABLE = -300.0

# Anatomy in mm (x: patient left, y: posterior) about the field-of-view centre.
_BODY_CY, _BODY_AX, _BODY_AY = -12.0, 160.0, 117.0
_BODY_FLAT = 0.93                 # the back lies flat on the table
_FAT_X, _FAT_Y, _FAT_BACK = 14.0, 10.0, 7.0
_TABLE_GAP, _TABLE_THICK, _TABLE_HALFWIDTH = 1.0, 10.0, 168.0
# (centre x, centre y, semi-axis x, semi-axis y, base t, apex t)
# sized to stay inside the rib cage (see _rib_point)
_LUNGS = {"right": (-72.0, -12.0, 56.0, 71.0, 0.07, 0.97),
          "left": (74.0, -12.0, 52.0, 70.0, 0.04, 0.96)}
_LUNG_WIDEST_U = 0.3              # fraction of the base-apex range where a lung is widest
_HEART = (18.0, -42.0, 60.0, 48.0, math.radians(-30.0), 0.10, 0.56)
_VERTEBRA = (0.0, 38.0, 19.0, 15.0)
_CANAL = (0.0, 62.0, 8.5, 8.0)
_VERTEBRAL_PERIOD = 1.0 / 11.0    # twelve thoracic levels over the scan
_N_RIBS = 11
_RIB_PHI = (0.32, 2.75)           # angle from the posterior midline, spine to sternum
_RIB_DROP = 0.45                  # fall of a rib from back to front, in scan fractions
_RIB_STEP = 0.085


# --------------------------------------------------------------------------- identity


@dataclass(frozen=True)
class DemoIdentity:
    """The made-up identity written into the headers of the demo series.

    Every value is fictitious. The distinctive ones are long enough (six
    characters or more) that finding one in a de-identified output is a real
    leak, not a coincidence.
    """

    patient_name: str = "DOE^JANE^QUINCY"
    patient_id: str = "MRN-58310-7Q"
    birth_date: str = "19610314"
    patient_sex: str = "F"
    patient_address: str = "41 WINDWARD LANE, SPRINGFIELD, MA 01105"
    patient_telephone: str = "+1-617-555-0147"
    other_patient_id: str = "OPI-44718-2B"
    institution: str = "SAINT ELSEWHERE GENERAL HOSPITAL"
    institution_address: str = "1 MERCY PLAZA, BOSTON, MA 02114"
    referring_physician: str = "HOUSE^GREGORY^MD"
    performing_physician: str = "CAMERON^ALLISON"
    operator_name: str = "KUTNER^LAWRENCE"
    station_name: str = "SEGH-CT-ROOM3"
    device_serial_number: str = "SN88K41Z7Q"
    accession_number: str = "ACC-2409-88147"
    study_id: str = "ST-71923"
    ae_title: str = "SEGH_CT01"
    study_date: str = "20240917"
    study_time: str = "141502"

    @property
    def patient_display_name(self) -> str:
        """The name as free text writes it ("JANE QUINCY DOE"), for ImageComments."""
        family, *rest = self.patient_name.split("^")
        return " ".join([*(p for p in rest if p), family])

    @property
    def patient_age(self) -> str:
        """DICOM AS age at the study date, e.g. ``"063Y"``."""
        b = _dt.date(int(self.birth_date[:4]), int(self.birth_date[4:6]), int(self.birth_date[6:]))
        s = _dt.date(int(self.study_date[:4]), int(self.study_date[4:6]), int(self.study_date[6:]))
        years = s.year - b.year - ((s.month, s.day) < (b.month, b.day))
        return f"{years:03d}Y"


@dataclass
class DemoSeries:
    """What :func:`write_demo_series` wrote, exactly.

    Attributes
    ----------
    files : list of Path
        The DICOM files, in the order of ``hu`` (``files[i]`` holds ``hu[i]``).
    hu : ndarray, float32, (slices, rows, cols)
        The HU values stored, ``stored * RescaleSlope + RescaleIntercept``
        computed in float64 and cast to float32, slices ordered by increasing
        position along the slice normal (row cosines x column cosines = +z).
    clean_hu : ndarray, float32
        The phantom before noise, same order and shape.
    identity : DemoIdentity
        The made-up identity in the headers.
    uids : dict
        The original UIDs: ``"study"``, ``"series"``, ``"frame_of_reference"``
        (str) and ``"sop_instances"`` (list of str, in ``hu`` order).
    series_dir : Path
        The folder holding the files.
    spacing_mm : tuple of float
        ``(slice spacing, row spacing, column spacing)`` as written.
    z_mm : ndarray, float64
        ImagePositionPatient z of each slice, in ``hu`` order (increasing).
    rescale_slope, rescale_intercept : float
        The values written (as parsed back from their DS strings).
    """

    files: list[Path]
    hu: np.ndarray
    clean_hu: np.ndarray
    identity: DemoIdentity
    uids: dict[str, str | list[str]]
    series_dir: Path
    spacing_mm: tuple[float, float, float]
    z_mm: np.ndarray
    rescale_slope: float
    rescale_intercept: float

    def phi_strings(self) -> list[str]:
        """Every made-up identifying value a de-identified output must not contain.

        Names (whole person names, their family^given form, the free-text form
        used in ImageComments and each name part of six characters or more),
        IDs, birth date, institution, addresses, telephone, accession number,
        station, device serial number, the scanner's AE title and every
        original UID. Short or generic values (sex, age, "DOE", dates of the
        study) are left out: they could turn up by chance. Matching is meant
        to be on bytes, case-sensitive; all values are upper-case ASCII.
        """
        ident = self.identity
        out: list[str] = []
        for pn in (ident.patient_name, ident.referring_physician,
                   ident.performing_physician, ident.operator_name):
            parts = [p for p in pn.split("^") if p]
            out.append(pn)
            if len(parts) >= 2:
                out.append(f"{parts[0]}^{parts[1]}")
            out.extend(p for p in parts if len(p) >= 6)
        out.append(ident.patient_display_name)
        out += [ident.patient_id, ident.other_patient_id, ident.birth_date,
                ident.patient_address, ident.patient_telephone,
                ident.institution, ident.institution_address,
                ident.station_name, ident.device_serial_number,
                ident.accession_number, ident.study_id, ident.ae_title]
        out += [self.uids["study"], self.uids["series"], self.uids["frame_of_reference"]]
        out += list(self.uids["sop_instances"])
        seen: set[str] = set()
        unique = [s for s in out if len(s) >= 6 and not (s in seen or seen.add(s))]
        return unique


# --------------------------------------------------------------------------- phantom


class _Slice:
    """Paints shapes into one 2-D slice, each only inside its bounding box.

    Working in the box keeps the cost proportional to the shape's area: a
    128 x 512^2 phantom takes about half a second.
    """

    def __init__(self, img: np.ndarray, dy: float, dx: float):
        self.img = img
        rows, cols = img.shape
        self.dy, self.dx = dy, dx
        self.y = ((np.arange(rows) - (rows - 1) / 2) * dy).astype(np.float32)
        self.x = ((np.arange(cols) - (cols - 1) / 2) * dx).astype(np.float32)
        self.min_px = min(dx, dy)

    def _box(self, cx, cy, hx, hy):
        rows, cols = self.img.shape
        c0 = max(0, math.floor((cx - hx) / self.dx + (cols - 1) / 2))
        c1 = min(cols, math.ceil((cx + hx) / self.dx + (cols - 1) / 2) + 1)
        r0 = max(0, math.floor((cy - hy) / self.dy + (rows - 1) / 2))
        r1 = min(rows, math.ceil((cy + hy) / self.dy + (rows - 1) / 2) + 1)
        if c0 >= c1 or r0 >= r1:
            return None
        return r0, r1, c0, c1

    def _paint(self, box, mask, value, only):
        r0, r1, c0, c1 = box
        sub = self.img[r0:r1, c0:c1]
        if only is not None:
            mask &= sub == only
        sub[mask] = value

    def ellipse(self, cx, cy, ax, ay, value, *, angle=0.0, only=None, ymax=None):
        """Fill an ellipse (semi-axes ``ax``, ``ay`` in mm, rotated by ``angle``).

        ``only`` restricts painting to pixels holding that value (e.g. vessels
        only inside lung); ``ymax`` cuts the ellipse off below a row (the back).
        """
        if ax <= 0 or ay <= 0:
            return
        c, s = math.cos(angle), math.sin(angle)
        hx = math.hypot(ax * c, ay * s)
        hy = math.hypot(ax * s, ay * c)
        box = self._box(cx, cy, hx, hy)
        if box is None:
            return
        r0, r1, c0, c1 = box
        xs = self.x[c0:c1] - cx
        ys = self.y[r0:r1] - cy
        if angle == 0.0:
            d = (xs / ax)[None, :] ** 2 + (ys / ay)[:, None] ** 2
        else:
            u = xs[None, :] * c + ys[:, None] * s
            v = ys[:, None] * c - xs[None, :] * s
            d = (u / ax) ** 2 + (v / ay) ** 2
        mask = d <= 1.0
        if ymax is not None:
            mask &= (self.y[r0:r1] <= ymax)[:, None]
        self._paint(box, mask, value, only)

    def rect(self, x0, x1, y0, y1, value):
        box = self._box((x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2)
        if box is None:
            return
        r0, r1, c0, c1 = box
        mask = ((self.x[c0:c1] >= x0) & (self.x[c0:c1] <= x1))[None, :] & \
               ((self.y[r0:r1] >= y0) & (self.y[r0:r1] <= y1))[:, None]
        self._paint(box, mask, value, None)

    def capsule(self, p, q, r, value):
        """Fill every pixel within ``r`` mm of the segment ``p``-``q`` (the aortic arch)."""
        (px, py), (qx, qy) = p, q
        box = self._box((px + qx) / 2, (py + qy) / 2, abs(qx - px) / 2 + r, abs(qy - py) / 2 + r)
        if box is None or r <= 0:
            return
        r0, r1, c0, c1 = box
        ex, ey = qx - px, qy - py
        xs = (self.x[c0:c1] - px)[None, :]
        ys = (self.y[r0:r1] - py)[:, None]
        h = np.clip((xs * ex + ys * ey) / (ex * ex + ey * ey), 0.0, 1.0)
        mask = (xs - h * ex) ** 2 + (ys - h * ey) ** 2 <= r * r
        self._paint(box, mask, value, None)

    def ring(self, cx, cy, ax, ay, thick, outer, inner, *, angle=0.0, only=None):
        """A shell of ``outer`` HU, at least a pixel thick, filled with ``inner``."""
        thick = max(thick, 0.9 * self.min_px)
        self.ellipse(cx, cy, ax, ay, outer, angle=angle, only=only)
        self.ellipse(cx, cy, ax - thick, ay - thick, inner, angle=angle, only=only)


def _lung_scale(t: float, base: float, apex: float) -> float:
    """In-plane scale of a lung at scan fraction ``t``: rounded base, tapering apex."""
    u = (t - base) / (apex - base)
    if u <= 0.0 or u >= 1.0:
        return 0.0
    w = _LUNG_WIDEST_U
    if u < w:
        return math.sqrt(max(0.0, 1.0 - ((w - u) / w) ** 2))
    return max(0.0, 1.0 - ((u - w) / (1.0 - w)) ** 2) ** 0.7


def _lung_geometry(side: str, t: float):
    """Centre and semi-axes (mm) of a lung at ``t``, or ``None`` outside it."""
    cx, cy, ax, ay, base, apex = _LUNGS[side]
    s = _lung_scale(t, base, apex)
    if s <= 0.0:
        return None
    u = (t - base) / (apex - base)
    # toward the apex the lungs draw in toward the midline and the back
    cx_t = cx * (1.0 - 0.15 * max(0.0, u - 0.5))
    cy_t = cy + 12.0 * (u - 0.5)
    return cx_t, cy_t, ax * s, ay * s


def _body_axes(t: float) -> tuple[float, float]:
    return _BODY_AX + 8.0 * (1.0 - (2.0 * t - 1.0) ** 2), _BODY_AY


def _bump(x: float, half: float) -> float:
    """Smooth 1 -> 0 bump: cos^2 over |x| < half, 0 outside."""
    return math.cos(0.5 * math.pi * x / half) ** 2 if abs(x) < half else 0.0


@dataclass(frozen=True)
class _Anatomy:
    """The seeded parts of the phantom: vessel paths, nodules."""

    vessels: tuple  # (side, u0, v0, (amp_u, f_u, ph_u), (amp_v, f_v, ph_v), radius_mm)
    nodules: tuple  # (side, slice index, u, v, radius_mm)


def _random_anatomy(slices: int, seed: int) -> _Anatomy:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    vessels = []
    for side in ("right", "left"):
        for _ in range(24):
            rho = float(np.sqrt(rng.uniform(0.03, 0.6)))
            ang = float(rng.uniform(0, 2 * math.pi))
            drift = tuple((float(rng.uniform(0.05, 0.14)), float(rng.uniform(0.3, 1.2)),
                           float(rng.uniform(0, 2 * math.pi))) for _ in range(2))
            radius = 1.2 + 2.6 * (1.0 - rho)   # thicker near the hilum
            vessels.append((side, rho * math.cos(ang), rho * math.sin(ang), *drift, radius))
    nodules = []
    for _ in range(int(rng.integers(3, 6))):
        side = ("right", "left")[int(rng.integers(0, 2))]
        _, _, _, _, base, apex = _LUNGS[side]
        t = base + (apex - base) * float(rng.uniform(0.25, 0.7))
        k = min(slices - 1, max(0, round(t * slices - 0.5)))
        rho, ang = float(np.sqrt(rng.uniform(0.05, 0.35))), float(rng.uniform(0, 2 * math.pi))
        nodules.append((side, k, rho * math.cos(ang), rho * math.sin(ang),
                        float(rng.uniform(3.0, 7.5))))
    return _Anatomy(tuple(vessels), tuple(nodules))


def _rib_point(phi: float, side: float, ax: float) -> tuple[float, float]:
    """Centre line of the rib cage at angle ``phi`` from the posterior midline.

    An ellipse 9 mm inside the muscle, so the ribs lie in the chest wall and
    around the lungs; behind, it stops short of the flat back.
    """
    y_back = _BODY_CY + _BODY_FLAT * _BODY_AY
    y = min(_BODY_CY + (_BODY_AY - _FAT_Y - 9.0) * math.cos(phi), y_back - 15.0)
    return side * (ax - _FAT_X - 9.0) * math.sin(phi), y


def _paint_slice(p: _Slice, t: float, k: int, dz: float, extent_mm: float,
                 anatomy: _Anatomy, body_mask: np.ndarray | None) -> None:
    """Paint the whole anatomy of one slice, back to front (later shapes win)."""
    ax, ay = _body_axes(t)
    y_back = _BODY_CY + _BODY_FLAT * ay
    px = p.min_px

    # table, then body: fat layer around muscle
    top = y_back + _TABLE_GAP
    p.rect(-_TABLE_HALFWIDTH, _TABLE_HALFWIDTH, top, top + _TABLE_THICK, TABLE)
    p.ellipse(0.0, _BODY_CY, ax, ay, FAT, ymax=y_back)
    if body_mask is not None:
        body_mask[:] = p.img != AIR
    fx, fy = max(_FAT_X, px), max(_FAT_Y, px)
    p.ellipse(0.0, _BODY_CY, ax - fx, ay - fy, MUSCLE, ymax=y_back - max(_FAT_BACK, px))

    # liver under the right dome (only into muscle, so the fat layer stays)
    s_liver = math.sqrt(max(0.0, 1.0 - (t / 0.26) ** 2)) if t > 0 else 1.0
    if s_liver > 0:
        p.ellipse(-38.0, -8.0, 112.0 * s_liver, 92.0 * s_liver, LIVER, only=MUSCLE)

    # lungs
    lungs = {side: _lung_geometry(side, t) for side in _LUNGS}
    for g in lungs.values():
        if g is not None:
            p.ellipse(*g, LUNG)

    # pulmonary vessels: tubes that drift slowly, scaled with the lung so they stay inside
    for side, u0, v0, (au, fu, pu), (av, fv, pv), r in anatomy.vessels:
        g = lungs[side]
        if g is None:
            continue
        cx, cy, lax, lay = g
        u = u0 + au * math.sin(2 * math.pi * fu * t + pu)
        v = v0 + av * math.sin(2 * math.pi * fv * t + pv)
        rr = max(r * (0.55 + 0.45 * min(lax / _LUNGS[side][2], 1.0)), 0.55 * px)
        p.ellipse(cx + u * lax, cy + v * lay, rr, rr, VESSEL, only=LUNG)

    # nodules: spheres centred on a slice, so every nodule shows at full size somewhere
    for side, kn, u, v, r in anatomy.nodules:
        dzn = (k - kn) * dz
        rk2 = r * r - dzn * dzn
        g = lungs[side]
        if rk2 <= 0 or g is None:
            continue
        cx, cy, lax, lay = g
        rk = max(math.sqrt(rk2), 0.6 * px)
        p.ellipse(cx + u * lax, cy + v * lay, rk, rk, NODULE, only=LUNG)

    # heart in its fat, tilted toward the left front
    hx, hy, hax, hay, ang, hb, ht = _HEART
    if hb < t < ht:
        uh = (t - hb) / (ht - hb)
        sh = (1.0 - (2.0 * uh - 1.0) ** 2) ** 0.4
        fat = max(3.5, px)
        p.ellipse(hx, hy, hax * sh + fat, hay * sh + fat, PERICARDIAL_FAT, angle=ang)
        p.ellipse(hx, hy, hax * sh, hay * sh, HEART, angle=ang)

    # airways: trachea above the carina, two main bronchi just below it
    wall = max(2.0, px)
    if t >= 0.62:
        ty = 8.0 - 6.0 * (t - 0.62)
        p.ellipse(0.0, ty, 8.5 + wall, 8.5 + wall, MUSCLE)
        p.ellipse(0.0, ty, 8.5, 8.5, AIR)
    elif t >= 0.48:
        off = (0.62 - t) / 0.14 * 38.0
        for sgn in (-1.0, 1.0):
            p.ellipse(sgn * off, 8.0, 6.0 + wall, 6.0 + wall, MUSCLE)
        for sgn in (-1.0, 1.0):
            p.ellipse(sgn * off, 8.0, 6.0, 6.0, AIR)

    # aorta (contrast): descending, ascending, arch, then the great vessels above it
    asc, desc = (-10.0, -30.0), (32.0, 18.0)
    if t < 0.77:
        p.ellipse(*desc, 12.0, 12.0, CONTRAST)
    if 0.50 <= t < 0.77:
        p.ellipse(*asc, 15.0, 15.0, CONTRAST)
    arch = _bump(t - 0.77, 0.035)
    if arch > 0:
        p.capsule(asc, desc, 12.0 * math.sqrt(arch), CONTRAST)
    if t > 0.79:
        spread = (t - 0.79) * 60.0
        for bx, by, br in ((-8.0, -22.0, 6.5), (6.0, -18.0, 4.5), (20.0, -8.0, 5.5)):
            p.ellipse(bx + math.copysign(spread, bx), by, br, br, CONTRAST)

    # spine: vertebral body (cortex + cancellous bone, blending smoothly into a disc
    # between levels), canal in its bony arch, spinous and transverse processes
    vx, vy, vax, vay = _VERTEBRA
    phase = (t / _VERTEBRAL_PERIOD) % 1.0
    disc = _bump(min(phase, 1.0 - phase), 0.14)
    p.ellipse(0.0, 62.0, 14.0, 13.0, POSTERIOR_BONE)
    p.ellipse(0.0, 80.0, 4.0, 11.0, POSTERIOR_BONE)
    for sgn in (-1.0, 1.0):
        p.ellipse(sgn * 22.0, 60.0, 11.0, 5.5, POSTERIOR_BONE, angle=sgn * math.radians(20.0))
    p.ring(vx, vy, vax, vay, 2.0,
           CORTICAL * (1 - disc) + DISC * disc, CANCELLOUS * (1 - disc) + DISC * disc)
    p.ellipse(*_CANAL, CANAL)

    # sternum
    if 0.25 < t < 0.92:
        sw = 10.0 + 6.0 * (t - 0.25) / 0.67
        p.ring(0.0, _BODY_CY - ay + _FAT_Y + 9.0, sw, 6.0, 1.5, POSTERIOR_BONE, CANCELLOUS)

    # ribs: each runs down from the spine to the front, so in a slice its cross
    # section sits where the rib passes this height and slides round as z changes
    phi0, phi1 = _RIB_PHI
    arc = 0.0
    for i in range(16):
        a0, a1 = phi0 + (phi1 - phi0) * i / 16, phi0 + (phi1 - phi0) * (i + 1) / 16
        x0, y0 = _rib_point(a0, 1.0, ax)
        x1, y1 = _rib_point(a1, 1.0, ax)
        arc += math.hypot(x1 - x0, y1 - y0)
    half_len = min(14.0, max(6.0, 5.0 * arc / (_RIB_DROP * extent_mm)))
    half_len = max(half_len, 0.9 * px)
    half_thick = max(4.2, 0.7 * px)
    for j in range(_N_RIBS):
        tj = 1.02 - j * _RIB_STEP
        f = (tj - t) / _RIB_DROP
        if not 0.0 <= f <= 1.0:
            continue
        phi = phi0 + f * (phi1 - phi0)
        cartilage = _bump(1.0 - f, 0.15) if f > 0.85 else 0.0   # fades into costal cartilage
        outer = CORTICAL * (1 - cartilage) + CARTILAGE * cartilage
        inner = RIB_MARROW * (1 - cartilage) + CARTILAGE * cartilage
        for side in (-1.0, 1.0):
            cx, cy = _rib_point(phi, side, ax)
            ex, ey = _rib_point(phi + 1e-3, side, ax)
            ang = math.atan2(ey - cy, ex - cx)
            p.ring(cx, cy, half_len, half_thick, 1.3, outer, inner, angle=ang)


def _smooth_round(img: np.ndarray, tmp: np.ndarray) -> None:
    """Blur [1 2 1]/4 along rows and columns (partial volume at edges), round, clip, in place."""
    np.multiply(img, 2.0, out=tmp)
    tmp[1:, :] += img[:-1, :]
    tmp[:-1, :] += img[1:, :]
    tmp[0, :] += img[0, :]
    tmp[-1, :] += img[-1, :]
    np.multiply(tmp, 2.0, out=img)
    img[:, 1:] += tmp[:, :-1]
    img[:, :-1] += tmp[:, 1:]
    img[:, 0] += tmp[:, 0]
    img[:, -1] += tmp[:, -1]
    img *= 1.0 / 16.0
    np.rint(img, out=img)
    np.clip(img, HU_MIN, HU_MAX, out=img)


def _check_geometry(slices: int, size: int, spacing_mm) -> tuple[float, float, float]:
    if int(slices) != slices or slices < 1:
        raise ValueError("slices must be a positive integer")
    if int(size) != size or size < 16:
        raise ValueError("size must be an integer of at least 16")
    dz, dy, dx = (float(v) for v in spacing_mm)
    if not all(math.isfinite(v) and v > 0 for v in (dz, dy, dx)):
        raise ValueError("spacing_mm must hold three positive numbers")
    return dz, dy, dx


def _phantom(slices: int, size: int, spacing_mm, seed: int, want_body: bool):
    dz, dy, dx = _check_geometry(slices, size, spacing_mm)
    vol = np.empty((slices, size, size), np.float32)
    body = np.empty(vol.shape, bool) if want_body else None
    tmp = np.empty((size, size), np.float32)
    anatomy = _random_anatomy(slices, seed)
    extent = slices * dz
    for k in range(slices):
        img = vol[k]
        img.fill(AIR)
        p = _Slice(img, dy, dx)
        _paint_slice(p, (k + 0.5) / slices, k, dz, extent, anatomy,
                     None if body is None else body[k])
        _smooth_round(img, tmp)
    return vol, body


def chest_phantom(slices: int, size: int, *, spacing_mm: tuple[float, float, float],
                  seed: int) -> np.ndarray:
    """Noise-free synthetic chest CT in HU.

    Air, a body with a subcutaneous fat layer, tapering lungs with drifting
    vessels and a few nodules, heart in pericardial fat, trachea and main
    bronchi, a contrast-filled aorta with its arch and great vessels, liver
    under the right dome, vertebrae (cortex, cancellous bone, discs, canal,
    posterior elements), sternum, ribs that slide round the wall along z, and
    the patient table. Edges get a one-pixel partial-volume blur.

    Parameters
    ----------
    slices, size : int
        Output shape is ``(slices, size, size)``.
    spacing_mm : tuple of float
        ``(dz, dy, dx)``. In-plane the anatomy is in mm, so the field of view
        ``size * dx`` should be about 350 mm (the body is ~336 x 225 mm).
        Along z the anatomy spans the scanned range whatever its length.
    seed : int
        Seeds the vessel paths and the nodules; all else is fixed.

    Returns
    -------
    ndarray, float32
        Integer-valued HU clipped to [-1024, 3071]. Slice 0 is the lowest
        (toward the feet); rows run front to back, columns right to left of
        the patient (the usual radiological display).
    """
    return _phantom(slices, size, spacing_mm, seed, want_body=False)[0]


def landmarks(slices: int, size: int, *, spacing_mm: tuple[float, float, float]
              ) -> dict[str, tuple[int, int, int]]:
    """``(slice, row, col)`` of points in known tissue of :func:`chest_phantom`.

    Keys: ``right_lung``, ``left_lung`` (centre of each lung at its widest; a
    vessel may cross the exact point, so judge a small region by its median),
    ``vertebral_body`` (cancellous bone mid-level, away from a disc),
    ``heart`` (centre of a uniform 45 HU region at least 30 mm across),
    ``liver`` (55 HU, lowest slices), ``air`` (in front of the body).
    """
    dz, dy, dx = _check_geometry(slices, size, spacing_mm)

    def at(t, x, y):
        k = min(slices - 1, max(0, round(t * slices - 0.5)))
        return (k, int(round(y / dy + (size - 1) / 2)), int(round(x / dx + (size - 1) / 2)))

    out = {}
    for side, (_, _, _, _, base, apex) in _LUNGS.items():
        t = base + _LUNG_WIDEST_U * (apex - base)
        cx, cy, _, _ = _lung_geometry(side, t)
        out[f"{side}_lung"] = at(t, cx, cy)
    # mid-level of the vertebra nearest the middle of the scan
    level = round(0.5 / _VERTEBRAL_PERIOD - 0.5)
    out["vertebral_body"] = at((level + 0.5) * _VERTEBRAL_PERIOD, _VERTEBRA[0], _VERTEBRA[1])
    out["heart"] = at(_HEART[5] + 0.5 * (_HEART[6] - _HEART[5]), _HEART[0], _HEART[1])
    out["liver"] = at(0.02, -50.0, -8.0)
    out["air"] = at(0.5, 0.0, _BODY_CY - _BODY_AY - 25.0)
    return out


# --------------------------------------------------------------------------- noise


def nps_amplitude(rows: int, cols: int, *, cutoff: float = 0.35) -> np.ndarray:
    """Square root of the FBP noise power spectrum on the ``rfft2`` half plane.

    NPS(f) = |f| exp(-(|f| / f_c)^2) with ``|f|`` and ``f_c = cutoff`` in
    units of the Nyquist frequency: a ramp (no power at DC, as FBP removes it)
    rolled off by the reconstruction kernel. Scaled so that white complex
    Gaussian coefficients with unit real and imaginary variance give, through
    ``irfft2``, noise of unit variance.
    """
    fy = np.fft.fftfreq(rows)[:, None]
    fx_full = np.fft.fftfreq(cols)[None, :]
    fx_half = np.fft.rfftfreq(cols)[None, :]

    def nps(fx):
        f = np.sqrt(fx * fx + fy * fy) / 0.5
        return f * np.exp(-(f / cutoff) ** 2)

    # irfft2 output variance = mean of |H|^2 over the full grid, for E|X|^2 = rows*cols
    mean_full = nps(fx_full).mean()
    return (np.sqrt(nps(fx_half) / mean_full) * math.sqrt(rows * cols / 2.0)).astype(np.float32)


def low_dose_noise(shape, *, sigma_hu: float, body_mask: np.ndarray | None, seed: int,
                   attenuation: np.ndarray | None = None, air_factor: float = 0.25,
                   cutoff: float = 0.35) -> np.ndarray:
    """Correlated, non-stationary noise that looks like low-dose FBP CT.

    Each slice gets independent Gaussian noise shaped by the FBP noise power
    spectrum (:func:`nps_amplitude`), made in the Fourier domain. Its
    amplitude follows the X-ray path: with ``L`` the attenuation line
    integral along the pixel's row plus along its column, the standard
    deviation is ``sigma_hu * sqrt(L / L_mean)`` clipped to [0.6, 1.4] times
    ``sigma_hu``, where ``L_mean`` is the mean of ``L`` over the body. So
    ``sigma_hu`` is the noise of a soft-tissue region with an average path;
    long paths (centre, shoulders) are noisier. Outside the body the noise is
    multiplied by ``air_factor``.

    Parameters
    ----------
    shape : tuple of int
        ``(slices, rows, cols)`` or ``(rows, cols)``.
    sigma_hu : float
        Noise standard deviation at the average path length (HU).
    body_mask : ndarray of bool or None
        Where the body (and table) is. ``None`` gives stationary noise of
        standard deviation ``sigma_hu`` everywhere.
    seed : int
        Seeds the noise; the same seed gives the same noise.
    attenuation : ndarray or None
        Attenuation relative to water, same shape (e.g. ``(HU + 1000) / 1000``
        clipped at 0). Defaults to the body mask as water.
    air_factor : float
        Relative noise outside the body.
    cutoff : float
        Apodisation cut-off as a fraction of the Nyquist frequency.

    Returns
    -------
    ndarray, float32
        The noise, of the given shape (not rounded).
    """
    shape = tuple(int(n) for n in shape)
    flat = len(shape) == 2
    if flat:
        shape = (1, *shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError("shape must be (slices, rows, cols) or (rows, cols)")
    if not (math.isfinite(sigma_hu) and sigma_hu >= 0):
        raise ValueError("sigma_hu must be a non-negative number")
    n_slices, rows, cols = shape

    weight_parts = None
    if body_mask is not None:
        body = np.asarray(body_mask, bool).reshape(shape)
        mu = body.astype(np.float32) if attenuation is None else \
            np.asarray(attenuation, np.float32).reshape(shape)
        # L[s, r, c] = row_sum[s, r] + col_sum[s, c]; only the sums are kept
        row_sum = mu.sum(axis=2, dtype=np.float64)
        col_sum = mu.sum(axis=1, dtype=np.float64)
        n_body = body.sum()
        if n_body:
            l_mean = ((row_sum * body.sum(axis=2)).sum()
                      + (col_sum * body.sum(axis=1)).sum()) / n_body
        else:
            l_mean = 0.0
        weight_parts = (body, row_sum, col_sum, l_mean if l_mean > 0 else 1.0)

    rng = np.random.default_rng(np.random.SeedSequence([seed, 2]))
    amp = nps_amplitude(rows, cols, cutoff=cutoff)
    out = np.empty(shape, np.float32)
    chunk = max(1, (1 << 22) // (rows * cols))   # bounded memory, same stream for a given shape
    for s0 in range(0, n_slices, chunk):
        s1 = min(n_slices, s0 + chunk)
        z = rng.standard_normal((s1 - s0, rows, cols // 2 + 1, 2), dtype=np.float32)
        spec = z.view(np.complex64)[..., 0]
        spec *= amp
        block = np.fft.irfft2(spec, s=(rows, cols)).astype(np.float32, copy=False)
        if weight_parts is None:
            block *= sigma_hu
        else:
            body, row_sum, col_sum, l_mean = weight_parts
            path = (row_sum[s0:s1, :, None] + col_sum[s0:s1, None, :]) / l_mean
            w = np.clip(np.sqrt(path), 0.6, 1.4).astype(np.float32)
            w *= np.where(body[s0:s1], np.float32(sigma_hu), np.float32(sigma_hu * air_factor))
            block *= w
        out[s0:s1] = block
    return out[0] if flat else out


# --------------------------------------------------------------------------- DICOM


def _uid(seed: int, kind: str, index: int = 0) -> str:
    """A deterministic UID under :data:`UID_ROOT` (no leading zeros, < 64 chars)."""
    digest = hashlib.sha256(f"ctsvd-demo:{seed}:{kind}:{index}".encode()).hexdigest()
    number = str(int(digest, 16))[:24]
    branch = {"study": 1, "series": 2, "frame_of_reference": 3, "sop": 4}[kind]
    return f"{UID_ROOT}{branch}.{number}"


def slice_dataset(path: Path, ident: DemoIdentity, uids: dict, i: int, *, rows: int, cols: int,
                  spacing: tuple[float, float, float], origin_xy: tuple[str, str], z: str,
                  instance: int, acq_seconds: float, slope: str, intercept: str,
                  stored: np.ndarray) -> FileDataset:
    """Slice ``i`` of the demo series: a full CT header carrying ``ident``'s PHI, and ``stored``.

    ``uids`` holds "study", "series", "frame_of_reference" and "sop_instances";
    the numbers that go into DS and TM elements come as the strings to write
    (see :mod:`ctsvd_testdata.dicom`). The other exams start from it.
    """
    sops = uids["sop_instances"]
    sop = sops[i]

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.SourceApplicationEntityTitle = ident.ae_title

    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    date, t0 = ident.study_date, ident.study_time
    acq = clock(t0, 180.0 + acq_seconds)

    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceCreationDate = date
    ds.InstanceCreationTime = clock(t0, 240.0 + acq_seconds)
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = date
    ds.StudyTime = t0
    ds.SeriesTime = clock(t0, 175.0)
    ds.AcquisitionTime = acq
    ds.ContentTime = acq
    ds.AccessionNumber = ident.accession_number
    ds.Modality = "CT"
    ds.Manufacturer = "ACME Medical Systems"
    ds.InstitutionName = ident.institution
    ds.InstitutionAddress = ident.institution_address
    ds.ReferringPhysicianName = ident.referring_physician
    ds.StationName = ident.station_name
    ds.StudyDescription = "CT CHEST LOW DOSE"
    ds.SeriesDescription = "LUNG 2.5mm LOW DOSE"
    ds.InstitutionalDepartmentName = "RADIOLOGY"
    ds.PerformingPhysicianName = ident.performing_physician
    ds.OperatorsName = ident.operator_name
    ds.ManufacturerModelName = "Helix 64"
    if len(sops) > 1:   # the next slice along the normal (the previous one for the last)
        ref = Dataset()
        ref.ReferencedSOPClassUID = CT_IMAGE_STORAGE
        ref.ReferencedSOPInstanceUID = sops[i + 1] if i + 1 < len(sops) else sops[i - 1]
        ds.ReferencedImageSequence = Sequence([ref])

    ds.PatientName = ident.patient_name
    ds.PatientID = ident.patient_id
    ds.PatientBirthDate = ident.birth_date
    ds.PatientSex = ident.patient_sex
    ds.OtherPatientIDs = ident.other_patient_id
    ds.PatientAge = ident.patient_age
    ds.PatientAddress = ident.patient_address
    ds.PatientTelephoneNumbers = ident.patient_telephone

    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = ds_string(spacing[0])
    ds.KVP = "100"
    ds.SpacingBetweenSlices = ds_string(spacing[0])
    ds.DataCollectionDiameter = "500"
    ds.DeviceSerialNumber = ident.device_serial_number
    ds.SoftwareVersions = "HX-VA40"
    ds.ProtocolName = "LDCT LUNG SCREENING"
    ds.ReconstructionDiameter = ds_string(cols * spacing[2])
    ds.DistanceSourceToDetector = "1040"
    ds.DistanceSourceToPatient = "570"
    ds.GantryDetectorTilt = "0"
    ds.TableHeight = "160"
    ds.RotationDirection = "CW"
    ds.ExposureTime = 500
    ds.XRayTubeCurrent = 30
    ds.Exposure = 15
    ds.FilterType = "FLAT"
    ds.GeneratorPower = 3
    ds.FocalSpots = "0.7"
    ds.ConvolutionKernel = "B30f"
    ds.PatientPosition = "HFS"
    ds.CTDIvol = 1.2

    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["series"]
    ds.StudyID = ident.study_id
    ds.SeriesNumber = 2
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [origin_xy[0], origin_xy[1], z]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = uids["frame_of_reference"]
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = z
    ds.ImageComments = (f"LDCT screening {ident.patient_display_name} "
                        f"MRN {ident.patient_id}: follow-up of RUL nodule")

    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.PixelSpacing = [ds_string(spacing[1]), ds_string(spacing[2])]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.WindowCenter = "-600"
    ds.WindowWidth = "1500"
    ds.WindowCenterWidthExplanation = "LUNG"
    ds.RescaleIntercept = intercept
    ds.RescaleSlope = slope
    ds.RescaleType = "HU"
    ds.LossyImageCompression = "00"

    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    block.add_new(0x10, "LO", ident.patient_name)
    block.add_new(0x11, "LO", ident.patient_id)

    ds.add_new(0x7FE00010, "OW", np.ascontiguousarray(stored, dtype="<i2").tobytes())
    return ds


def write_demo_series(outdir: Path, *, slices: int = 64, size: int = 256, noise_hu: float = 25.0,
                      seed: int = 0, rescale_slope: float = 1.0, rescale_intercept: float = -1024.0,
                      reverse_z: bool = True, identity: DemoIdentity | None = None) -> DemoSeries:
    """Write a synthetic low-dose chest CT series as DICOM files.

    The files go to ``outdir / "CT-chest-lowdose" / "IM-0001-NNNN.dcm"``;
    that folder must not exist or be empty. File numbers are a seeded
    shuffle, so file order is not slice order; with ``reverse_z`` the
    InstanceNumber grows from head to feet (z decreasing), so InstanceNumber
    order is not the order along the slice normal either.

    Parameters
    ----------
    outdir : Path
        Parent folder of the series folder.
    slices, size : int
        Number of slices and the in-plane matrix (pixel spacing 350/size mm,
        so the field of view stays 350 mm; slices 2.5 mm apart and thick).
    noise_hu : float
        Noise standard deviation for an average path (see :func:`low_dose_noise`);
        0 writes the clean phantom.
    seed : int
        Seeds anatomy, noise, UIDs and the file-name shuffle.
    rescale_slope, rescale_intercept : float
        Written as RescaleSlope and RescaleIntercept; stored values are
        ``round((HU - intercept) / slope)`` as int16.
    reverse_z : bool
        Number instances head to feet (the usual scan direction).
    identity : DemoIdentity, optional
        The made-up identity; the default one if not given.

    Returns
    -------
    DemoSeries
        The files and the exact values written, in order along the normal.

    Raises
    ------
    ValueError
        If the HU range [-1024, 3071] does not fit int16 with the slope and
        intercept, or a parameter is out of range.
    FileExistsError
        If the series folder already holds files.
    """
    ident = identity or DemoIdentity()
    if not (math.isfinite(rescale_slope) and rescale_slope > 0 and math.isfinite(rescale_intercept)):
        raise ValueError("rescale_slope must be positive and both rescale values finite")
    if not (math.isfinite(noise_hu) and noise_hu >= 0):
        raise ValueError("noise_hu must be a non-negative number")
    _check_geometry(slices, size, (SLICE_SPACING_MM, 1.0, 1.0))
    if slices > 9999:
        raise ValueError("at most 9999 slices (four-digit file numbers)")
    # parse the DS strings back, so every number returned is the one in the header
    slope_s, intercept_s = ds_string(rescale_slope), ds_string(rescale_intercept)
    slope, intercept = float(slope_s), float(intercept_s)
    stored_range(slope, intercept)                       # fail before any work
    ps = float(ds_string(FOV_MM / size))
    spacing = (SLICE_SPACING_MM, ps, ps)

    series_dir = Path(outdir) / SERIES_FOLDER
    if series_dir.exists() and any(series_dir.iterdir()):
        raise FileExistsError(f"{series_dir} already holds files")

    clean, body = _phantom(slices, size, spacing, seed, want_body=True)
    if noise_hu > 0:
        attenuation = np.maximum(clean + 1000.0, 0.0)
        attenuation *= 1.0 / 1000.0
        noisy = low_dose_noise(clean.shape, sigma_hu=noise_hu, body_mask=body, seed=seed,
                               attenuation=attenuation)
        del attenuation
        noisy += clean
    else:
        noisy = clean.copy()
    del body
    np.clip(noisy, HU_MIN, HU_MAX, out=noisy)
    stored = quantise(noisy, slope, intercept)
    del noisy
    hu = np.empty(stored.shape, np.float32)
    for k in range(slices):                              # the same float64 sum a reader does
        hu[k] = stored[k].astype(np.float64) * slope + intercept

    uids = {
        "study": _uid(seed, "study"),
        "series": _uid(seed, "series"),
        "frame_of_reference": _uid(seed, "frame_of_reference"),
        "sop_instances": [_uid(seed, "sop", i) for i in range(slices)],
    }
    z_top = -35.0
    z_mm = z_top - (slices - 1 - np.arange(slices)) * SLICE_SPACING_MM
    origin = (ds_string(-(size - 1) / 2 * ps), ds_string(-(size - 1) / 2 * ps))
    instances = [slices - i if reverse_z else i + 1 for i in range(slices)]
    perm = np.random.default_rng(np.random.SeedSequence([seed, 3])).permutation(slices)
    if slices > 1 and np.all(perm == np.arange(slices)):
        perm = np.roll(perm, 1)                          # file order must not be slice order

    series_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(slices):
        path = series_dir / f"IM-0001-{perm[i] + 1:04d}.dcm"
        ds = slice_dataset(path, ident, uids, i, rows=size, cols=size, spacing=spacing,
                           origin_xy=origin, z=ds_string(z_mm[i]), instance=instances[i],
                           acq_seconds=0.1 * (instances[i] - 1), slope=slope_s,
                           intercept=intercept_s, stored=stored[i])
        ds.save_as(path, enforce_file_format=True)
        files.append(path)

    return DemoSeries(files=files, hu=hu, clean_hu=clean, identity=ident, uids=uids,
                      series_dir=series_dir, spacing_mm=spacing, z_mm=z_mm.astype(np.float64),
                      rescale_slope=slope, rescale_intercept=intercept)
