"""Denoising quality under several noise conditions: our local SVD denoiser against classical ones.

    .venv/bin/python benchmarks/denoise_quality.py [--conditions a,b,c,d,e,f] [--slices 48] [--size 256]
        [--skip bm3d,bm4d] [--json PATH] [--montage PATH.png] [--save-stacks DIR]

A denoiser tuned on one simulation can fail on the rest (issue 16), so each
condition gets its own table, every peer measured in the same run:

a. today's phantom (:func:`ctsvd_testdata.lowdose.simulate_low_dose`: Poisson
   counts on parallel-beam sinograms, ramp FBP) at I0 = 1e4 and 2.5e3;
b. the same with 3-D texture in the soft tissue
   (:func:`ctsvd_testdata.conditions.textured_phantom`), scanned the same way;
c. white Gaussian noise on the noiseless FBP of (a);
d. noise shared between neighbouring slices (filtered along z to a
   correlation of 0.6, measured and printed);
e. non-stationary noise, twice as strong at the edge of the field as at its centre;
f. the shared real exam ``../shared/data/dcm-qa-ct-stereotaxis`` (series
   S2010 and S3010), without a reference (skipped with one line when absent).

Scores, where there is a reference (a-e):

* PSNR over the window [-1024, 1500] HU (data range 2524), SSIM the mean over slices;
* for d, e, f: the noise left in uniform regions (denoised / noisy), the
  signal lost at edges (top 5 % of gradients; :func:`denoise_metrics.edge_loss`)
  and the *ghost*: a +100 HU disc planted in three slices must not show in
  the others (each method runs again, same parameter, without the disc).

On (f) there is no reference: uniform regions and edges are found in the
smoothed original, and Gaussian and TV get the parameter that leaves the
same noise as ours, so their edge loss compares at equal noise reduction.

Peers are tuned against the reference (their best case): Gaussian 3-D and TV
3-D (Chambolle) on a log grid refined to steps of 2^(1/4), widened until its
best is inside it; BM3D (per slice) and BM4D are given the true noise PSD,
measured from ``noisy - reference`` (in-plane spectrum times the measured
slice correlation), and run on a subset (a few slices; a central crop) as
they take minutes. Ours runs with no tuning: ``ssvd_denoise.local.denoise``.
Under each table, a PASS/FAIL line per target of issue 16.

Needs ``benchmarks/requirements.txt`` (scikit-image, scipy, bm3d, bm4d).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ctsvd_testdata import conditions as cond
from ctsvd_testdata.lowdose import DATA_RANGE_HU, WINDOW_HU, psnr, scan_phantom, simulate_low_dose
from ctsvd_testdata.shared import data_dir

sys.path.insert(0, str(Path(__file__).resolve().parent))
import denoise_metrics as dm  # noqa: E402  (a sibling module of this script)

CONDITIONS = ("a", "b", "c", "d", "e", "f")
PEERS = ("gaussian", "tv", "bm3d", "bm4d", "global")
DOSES = (1e4, 2.5e3)
REAL_EXAM = "dcm-qa-ct-stereotaxis"   # in ../shared/data beside the clone
REAL_SERIES = ("S2010", "S3010")
GAUSSIAN_SIGMA_Z = (0.0, 0.5, 1.0, 1.5, 2.0)    # slices; in-plane sigma is searched for each
TV_START = (0.005, 0.01, 0.02, 0.04, 0.08)       # on HU / 2524; widened, then refined
GAUSSIAN_XY_START = (0.5, 1.0, 2.0)              # pixels
FINEST_STEP = 2 ** 0.25
DISC_HU, DISC_SLICES = 100.0, 3

# Targets of issue 16
TV_MARGIN_DB = 0.5
NOISE_RATIO_MAX = 0.6
EDGE_LOSS_MAX_HU = 20.0
GHOST_MAX_HU = 2.0
NOISE_REPORT_TOLERANCE = 0.15


# --------------------------------------------------------------------------- conditions


@dataclass
class Condition:
    """One noisy volume, what it should be, and where to measure."""

    key: str
    title: str
    noisy: np.ndarray
    reference: np.ndarray | None          # None: a real scan
    meta: dict = field(default_factory=dict)
    disc: tuple[range, np.ndarray] | None = None   # ghost check: slices and in-plane mask
    psd_noise: np.ndarray | None = None   # a noise realisation to measure the PSD from (oracle)
    flat: np.ndarray | None = None
    edges: np.ndarray | None = None
    true_noise_hu: float = math.nan

    @property
    def structural(self) -> bool:
        """Conditions scored for uniform-region noise, edges and ghosts too (d, e, f)."""
        return self.key[0] in "def"

    def without_disc(self) -> np.ndarray:
        slices, disc = self.disc
        out = self.noisy.copy()
        for k in slices:
            out[k][disc] -= np.float32(DISC_HU)
        return out


def _finish(c: Condition) -> Condition:
    """Masks and the true noise level, from the reference (or from the original on a real scan)."""
    if c.reference is not None:
        c.flat, c.edges = dm.flat_mask(c.reference), dm.edge_mask(c.reference)
        c.true_noise_hu = cond.true_noise_level(c.noisy, c.reference)
        c.psd_noise = c.noisy - c.reference
    else:
        c.flat, c.edges = dm.flat_mask(c.noisy, sigma_px=3.0), dm.edge_mask(c.noisy, sigma_px=1.5)
        c.true_noise_hu = dm.cell_noise(c.noisy, c.flat)      # an estimate: the noise of uniform regions
    return c


def disc_site(reference: np.ndarray, slices: range, radius: int) -> tuple[int, int]:
    """Where to plant the ghost-check disc: the flattest soft-tissue spot near the centre of ``slices``."""
    from scipy.ndimage import uniform_filter

    k = list(range(max(0, slices.start - 3), min(len(reference), slices.stop + 3)))
    ref = reference[k].astype(np.float32)
    box = (1, 4 * radius + 1, 4 * radius + 1)
    mean = uniform_filter(ref, box)
    var = np.maximum(uniform_filter(ref * ref, box) - mean * mean, 0).max(axis=0)
    soft = ((mean > cond.SOFT_TISSUE_HU[0]) & (mean < cond.SOFT_TISSUE_HU[1])).all(axis=0)
    n = reference.shape[-1]
    yy, xx = np.mgrid[:n, :n]
    near = (yy - n / 2) ** 2 + (xx - n / 2) ** 2 <= (n / 4) ** 2
    score = np.where(soft & near, var, np.inf)
    y, x = np.unravel_index(np.argmin(score), score.shape)
    return int(y), int(x)


def with_disc(c: Condition) -> Condition:
    """Plant the +100 HU disc in the middle three slices (in reference and noisy alike)."""
    m = c.noisy.shape[0]
    slices = range(max(0, m // 2 - 1), min(m, m // 2 - 1 + DISC_SLICES))
    radius = max(2, round(c.noisy.shape[-1] / 50))
    site = disc_site(c.reference if c.reference is not None else c.noisy, slices, radius)
    c.noisy, disc = cond.plant_disc(c.noisy, slices, site, radius, DISC_HU)
    if c.reference is not None:
        c.reference, _ = cond.plant_disc(c.reference, slices, site, radius, DISC_HU)
    c.disc = (slices, disc)
    c.meta["ghost_disc"] = {"slices": [slices.start, slices.stop - 1], "centre": list(site),
                            "radius_px": radius, "hu": DISC_HU}
    return c


class Conditions:
    """Builds the conditions one at a time (a few volumes in memory), sharing the simulation of (a)."""

    def __init__(self, a: argparse.Namespace):
        self.a = a
        self._base = None

    def _simulate(self, i0: float):
        a = self.a
        return simulate_low_dose(a.slices, a.size, i0=i0, angles=a.angles, seed=a.seed, workers=a.workers)

    def base_reference(self) -> np.ndarray:
        """The noiseless FBP of today's phantom: the clean stack of (c), (d) and (e)."""
        if self._base is None:
            self._base = self._simulate(DOSES[0]).reference_hu
        return self._base

    def build(self, key: str) -> list[Condition]:
        a = self.a
        shape = (a.slices, a.size, a.size)
        if key == "a":
            out = []
            for i0 in DOSES:
                s = self._simulate(i0)
                if self._base is None:
                    self._base = s.reference_hu
                out.append(Condition(f"a-{i0:g}", f"(a) today's phantom, I0 = {i0:g}", s.noisy_hu,
                                     s.reference_hu, {"i0": i0, "angles": s.angles}))
            return [_finish(c) for c in out]
        if key == "b":
            clean, spacing = cond.textured_phantom(a.slices, a.size, seed=a.seed, texture_hu=a.texture)
            out = []
            for i0 in DOSES:
                s = scan_phantom(clean, spacing, i0=i0, angles=a.angles, seed=a.seed, workers=a.workers)
                out.append(Condition(f"b-{i0:g}", f"(b) textured soft tissue ({a.texture:g} HU), I0 = {i0:g}",
                                     s.noisy_hu, s.reference_hu, {"i0": i0, "texture_hu": a.texture}))
            return [_finish(c) for c in out]
        if key == "f":
            exam = data_dir(REAL_EXAM)
            if exam is None:
                print(f"(f) skipped: ../shared/data/{REAL_EXAM} is not beside this clone")
                return []
            out = []
            for series in REAL_SERIES:
                volume, spacing = cond.read_series_hu(exam / series)
                volume = central_crop(volume, a.real_slices, a.real_size)
                c = with_disc(Condition(f"f-{series}", f"(f) real exam, series {series}, "
                                        f"{volume.shape[0]} x {volume.shape[1]}x{volume.shape[2]}, "
                                        f"{spacing[0]:g} mm slices", volume, None,
                                        {"series": series, "spacing_mm": list(spacing)}))
                out.append(_finish(c))
            return out
        ref = self.base_reference()
        if key == "c":
            noise = cond.white_noise(shape, a.sigma, seed=a.seed)
            return [_finish(Condition("c", f"(c) white Gaussian noise, sigma {a.sigma:g} HU", ref + noise, ref,
                                      {"sigma_hu": a.sigma}))]
        if key == "d":
            noise = cond.slice_correlated_noise(shape, a.sigma, rho=a.rho, seed=a.seed)
            c = with_disc(Condition("d", f"(d) slice-correlated noise, sigma {a.sigma:g} HU", ref + noise, ref,
                                    {"sigma_hu": a.sigma, "rho_target": a.rho}))
            c = _finish(c)
            body = c.reference > cond.BODY_HU
            c.meta["slice_correlation"] = cond.slice_correlation(c.noisy - c.reference, body)
            c.title += f", neighbouring slices correlate at {c.meta['slice_correlation']:.2f}"
            return [c]
        if key == "e":
            noise = cond.nonstationary_noise(shape, a.sigma / 1.5, seed=a.seed)
            c = _finish(with_disc(Condition(
                "e", f"(e) non-stationary noise, sigma {a.sigma / 1.5:.3g} HU at the centre", ref + noise, ref,
                {"sigma_centre_hu": a.sigma / 1.5})))
            c.meta["centre_to_edge"] = centre_to_edge(c.noisy - c.reference)
            c.title += f", x{c.meta['centre_to_edge']:.2f} at the edge"
            return [c]
        raise ValueError(key)


def central_crop(volume: np.ndarray, slices: int | None, size: int | None) -> np.ndarray:
    m, rows, cols = volume.shape
    dz = m if not slices else min(m, slices)
    dy, dx = (rows, cols) if not size else (min(rows, size), min(cols, size))
    z0, y0, x0 = (m - dz) // 2, (rows - dy) // 2, (cols - dx) // 2
    return np.ascontiguousarray(volume[z0:z0 + dz, y0:y0 + dy, x0:x0 + dx])


def centre_to_edge(noise: np.ndarray) -> float:
    """How much stronger the noise is at the edge of the scan circle than at its centre: the noise std
    in rings 0.1 R wide, fitted by a line in the radius, at R over at 0."""
    n = noise.shape[-1]
    c = n // 2
    yy, xx = np.ogrid[:n, :n]
    r = np.sqrt((yy - c) ** 2 + (xx - c) ** 2) / c
    edges = np.linspace(0.0, 1.0, 11)
    mids = (edges[:-1] + edges[1:]) / 2
    stds = [noise[:, (r >= lo) & (r < hi)].std() for lo, hi in zip(edges[:-1], edges[1:])]
    slope, intercept = np.polyfit(mids, stds, 1)
    return float((intercept + slope) / intercept)


# --------------------------------------------------------------------------- rows and scoring


@dataclass
class Row:
    """One line of a table."""

    method: str
    psnr_db: float | None = None
    ssim: float | None = None
    seconds: float | None = None       # one run at the chosen parameter, on what the row is scored on
    tune_seconds: float = 0.0          # picking the parameter, on top
    noise_ratio: float | None = None   # uniform regions: denoised / noisy noise
    edge_loss_hu: float | None = None
    ghost_hu: float | None = None
    disc_kept_hu: float | None = None  # the disc's mean in its own slices after denoising (of 100)
    removed_flat_hu: float | None = None   # (f): RMS removed in uniform regions, at edges
    removed_edge_hu: float | None = None
    parameter: str = ""
    note: str = ""
    reported_noise_hu: float | None = None


@dataclass
class Result:
    """A method's output on ``region`` of the condition, and how to run it again (for the ghost check)."""

    row: Row
    out: np.ndarray
    region: tuple = (...,)
    again: Callable[[np.ndarray], np.ndarray] | None = None


def timed(fn: Callable[[], np.ndarray]):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def score(c: Condition, r: Result) -> Row:
    """Fill a row's scores from its output (on its region of the condition)."""
    row, region = r.row, r.region
    noisy = c.noisy[region]
    ref = c.reference[region] if c.reference is not None else None
    if ref is not None:
        row.psnr_db, row.ssim = psnr(r.out, ref), dm.ssim(r.out, ref)
    if c.structural:
        flat, edges = c.flat[region], c.edges[region]
        row.noise_ratio = dm.noise_ratio(noisy, r.out, flat, ref)
        if ref is not None:
            left_at_edges = row.noise_ratio * dm.rms((noisy - ref)[edges])
            row.edge_loss_hu = dm.edge_loss(r.out - ref, edges, left_at_edges)
        else:
            removed = noisy - r.out
            row.removed_flat_hu, row.removed_edge_hu = dm.rms(removed[flat]), dm.rms(removed[edges])
            row.edge_loss_hu = dm.edge_loss(removed, edges, row.removed_flat_hu)
        if c.disc is not None and r.again is not None:
            slices, disc = c.disc
            disc = disc[region[1:]] if len(region) == 3 else disc
            row.ghost_hu, row.disc_kept_hu = dm.ghost(r.out, r.again(c.without_disc()[region]), disc, slices)
    return row


def tune_log(run: Callable[[float], np.ndarray], fitness: Callable[[np.ndarray], float], start: tuple,
             *, lowest: float = 0.0, name: str = "parameter"):
    """Maximise ``fitness(run(p))`` over p > 0 on a log scale.

    Starts on ``start`` (a geometric grid), widens it while the best is at an
    edge (so the best ends inside the grid), then halves the log step around
    the best down to :data:`FINEST_STEP`. ``lowest`` is a value p may take
    below the grid (e.g. 0, no smoothing), scored too. Returns
    ``(best p, its output, its run seconds, {p: fitness})``.
    """
    scores, best = {}, None

    def visit(p):
        nonlocal best
        if p in scores:
            return
        out, dt = timed(lambda: run(p))
        scores[p] = fitness(out)
        if best is None or scores[p] > scores[best[0]]:
            best = (p, out, dt)

    for p in start:
        visit(p)
    step = start[1] / start[0]
    for _ in range(8):                                    # widen: 2^8 either way is plenty
        grid = sorted(scores)
        if best[0] == grid[-1]:
            visit(grid[-1] * step)
        elif best[0] == grid[0] and grid[0] > lowest:
            visit(grid[0] / step)
        else:
            break
    if best[0] in (min(scores), max(scores)):
        print(f"  note: {name} {best[0]:g} is still at the edge of {sorted(scores)}", flush=True)
    while step > FINEST_STEP * 1.0001:
        step = math.sqrt(step)
        centre = best[0]
        visit(centre / step)
        visit(centre * step)
    return best[0], best[1], best[2], scores


def search_matching(run: Callable[[float], np.ndarray], measure: Callable[[np.ndarray], float], target: float,
                    lo: float, hi: float, steps: int = 5):
    """The p in [lo, hi] (log bisection) whose ``measure(run(p))`` is closest to ``target``,
    for a measure that falls as p grows. Returns ``(p, output, seconds of its run, its measure)``."""
    best = None
    for _ in range(steps):
        p = math.sqrt(lo * hi)
        out, dt = timed(lambda: run(p))
        m = measure(out)
        if best is None or abs(m - target) < abs(best[3] - target):
            best = (p, out, dt, m)
        lo, hi = (p, hi) if m > target else (lo, p)
    return best


# --------------------------------------------------------------------------- peers


def to_unit(hu: np.ndarray) -> np.ndarray:
    """HU -> window units, ``(HU + 1024) / 2524``; not clipped, so air noise is not biased."""
    return ((hu.astype(np.float32) - WINDOW_HU[0]) / DATA_RANGE_HU).astype(np.float32)


def from_unit(x: np.ndarray) -> np.ndarray:
    return (np.asarray(x, np.float32) * DATA_RANGE_HU + WINDOW_HU[0]).astype(np.float32)


def gaussian(volume: np.ndarray, sz: float, sxy: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(volume, sigma=(sz, sxy, sxy))


def tv(volume: np.ndarray, weight: float) -> np.ndarray:
    from skimage.restoration import denoise_tv_chambolle

    return from_unit(denoise_tv_chambolle(to_unit(volume), weight=weight))


def run_gaussian(c: Condition) -> Result:
    """3-D Gaussian: for each sigma along z, the in-plane sigma searched by PSNR (oracle)."""
    t0 = time.perf_counter()
    best = None
    for sz in GAUSSIAN_SIGMA_Z:
        sxy, out, dt, _ = tune_log(lambda s: gaussian(c.noisy, sz, s), lambda o: psnr(o, c.reference),
                                   GAUSSIAN_XY_START, name=f"gaussian sigma xy (z={sz:g})")
        p = psnr(out, c.reference)
        if best is None or p > best[0]:
            best = (p, sz, sxy, out, dt)
    _, sz, sxy, out, dt = best
    if sz in (GAUSSIAN_SIGMA_Z[0], GAUSSIAN_SIGMA_Z[-1]) and sz != 0.0:
        print(f"  note: gaussian sigma z {sz:g} is at the edge of {GAUSSIAN_SIGMA_Z}", flush=True)
    row = Row("gaussian 3-D", seconds=dt, tune_seconds=time.perf_counter() - t0,
              parameter=f"sigma z={sz:g} xy={sxy:.3g} vox", note="oracle: best PSNR")
    return Result(row, out, again=lambda v: gaussian(v, sz, sxy))


def run_tv(c: Condition) -> Result:
    """3-D TV (Chambolle) on window units, weight searched by PSNR (oracle)."""
    t0 = time.perf_counter()
    w, out, dt, scores = tune_log(lambda w: tv(c.noisy, w), lambda o: psnr(o, c.reference), TV_START,
                                  name="TV weight")
    row = Row("TV 3-D Chambolle", seconds=dt, tune_seconds=time.perf_counter() - t0,
              parameter=f"weight={w:.4g} (HU/2524 units)",
              note=f"oracle: best PSNR of {len(scores)} weights in {min(scores):.3g}-{max(scores):.3g}")
    return Result(row, out, again=lambda v: tv(v, w))


def inplane_psd_shape(noise: np.ndarray) -> np.ndarray:
    """The in-plane noise power spectrum, ``|fft2(n)|^2`` averaged over slices, scaled to mean 1.

    bm3d/bm4d take ``PSD = shape * voxels * variance`` (white noise of std s
    is ``s^2 * voxels`` at every frequency), so the variance is given apart:
    that of the noise inside the body, not diluted by the air around it.
    """
    psd = np.mean(np.abs(np.fft.fft2(noise.astype(np.float64))) ** 2, axis=0)
    return psd / psd.mean()


def body_variance(noise: np.ndarray, reference: np.ndarray | None) -> float:
    inside = noise if reference is None or (reference > cond.BODY_HU).sum() < 64 else noise[reference > cond.BODY_HU]
    return float(inside.var(dtype=np.float64))


def z_spectrum(noise: np.ndarray) -> np.ndarray:
    """The slice-to-slice power spectrum (mean 1) from the measured correlations at lags 1 and 2."""
    r1, r2 = (cond.slice_correlation(noise, lag=lag) if noise.shape[0] > lag else 0.0 for lag in (1, 2))
    f = np.fft.fftfreq(noise.shape[0])
    return np.maximum(1.0 + 2 * r1 * np.cos(2 * np.pi * f) + 2 * r2 * np.cos(4 * np.pi * f), 1e-3)


def _numpy_for_bm4d() -> None:
    """bm4d 4.2.5 calls ``np.trapz`` when given a PSD; NumPy 2.4 removed it (``trapezoid`` is the same)."""
    if not hasattr(np, "trapz"):
        np.trapz = np.trapezoid


def run_bm3d(c: Condition, slices: int) -> Result:
    """BM3D slice by slice on ``slices`` slices spread over the stack, each given the true in-plane PSD
    scaled to that slice's noise variance."""
    import bm3d

    _numpy_for_bm4d()
    m = c.noisy.shape[0]
    picks = np.unique(((np.arange(min(slices, m)) + 0.5) * m / min(slices, m)).astype(int))
    noise = c.psd_noise
    shape = inplane_psd_shape(noise) * noise[0].size / DATA_RANGE_HU ** 2
    var = [body_variance(noise[k], c.reference[k]) for k in range(m)]

    def run(volume, ks):
        return from_unit(np.stack([bm3d.bm3d(to_unit(volume[i]), shape * var[k]) for i, k in enumerate(ks)]))

    out, dt = timed(lambda: run(c.noisy[picks], picks))
    row = Row("BM3D per slice", seconds=dt, parameter="true PSD of each slice (not tuned)",
              note=f"on {len(picks)} of {m} slices {picks.tolist()}")
    return Result(row, out, region=(picks,))


def run_bm4d(c: Condition, crop: int) -> Result:
    """BM4D on every slice of a crop (centred on the ghost disc, if any), given the true 3-D PSD."""
    import bm4d

    _numpy_for_bm4d()
    m, rows, cols = c.noisy.shape
    centre = (rows // 2, cols // 2) if c.disc is None else tuple(c.meta["ghost_disc"]["centre"])
    y0 = min(max(0, centre[0] - crop // 2), max(0, rows - crop))
    x0 = min(max(0, centre[1] - crop // 2), max(0, cols - crop))
    region = (slice(None), slice(y0, y0 + crop), slice(x0, x0 + crop))
    noise = c.psd_noise[region]
    psd_unit = (inplane_psd_shape(noise)[None] * z_spectrum(noise)[:, None, None]
                * noise.size * body_variance(noise, c.reference[region]) / DATA_RANGE_HU ** 2)

    def run(volume):
        return from_unit(bm4d.bm4d(to_unit(volume), psd_unit))

    out, dt = timed(lambda: run(c.noisy[region]))
    row = Row("BM4D", seconds=dt, parameter="true 3-D PSD (not tuned)",
              note="on all slices x {}x{} crop at ({}, {})".format(*out.shape[1:], y0, x0))
    return Result(row, out, region=region, again=run)


def gavish_donoho_rank(s: np.ndarray, m: int, n: int) -> int:
    """Rank kept by the optimal hard threshold for unknown noise (Gavish & Donoho 2014)."""
    b = min(m, n) / max(m, n)
    omega = 0.56 * b ** 3 - 0.95 * b ** 2 + 1.82 * b + 1.43
    return int(np.count_nonzero(s > omega * np.median(s)))


def run_global_svd(c: Condition) -> Result:
    """Truncated exact SVD of the slices x pixels matrix at the Gavish-Donoho rank."""
    def run(volume):
        matrix = volume.reshape(volume.shape[0], -1).astype(np.float64)
        u, s, vt = np.linalg.svd(matrix, full_matrices=False)
        k = gavish_donoho_rank(s, *matrix.shape)
        return ((u[:, :k] * s[:k]) @ vt[:k]).astype(np.float32).reshape(volume.shape), k

    (out, k), dt = timed(lambda: run(c.noisy))
    row = Row("ours: global SVD, GD rank", seconds=dt, parameter=f"rank={k} of {c.noisy.shape[0]}",
              note="automatic (Gavish-Donoho, unknown noise)")
    return Result(row, out, again=lambda v: run(v)[0])


def reported_noise(record) -> float | None:
    """The noise level ``local.denoise`` reports (HU): the uniform regions' σ,
    ``record["noise"]["sigma_hu"]["uniform"]``, else the median of its σ map, else the older
    ``record["median"]``."""
    try:
        sigma = record["noise"]["sigma_hu"]
        return float(sigma.get("uniform", sigma["median"]))
    except (KeyError, TypeError, ValueError):
        pass
    try:
        return float(record["median"])
    except (KeyError, TypeError, ValueError):
        return None


def run_local(c: Condition) -> Result:
    from ssvd_denoise import local

    (out, record), dt = timed(lambda: local.denoise(c.noisy))
    row = Row("ours: local SVD", seconds=dt, parameter="automatic", note="ssvd_denoise.local.denoise",
              reported_noise_hu=reported_noise(record))
    return Result(row, out, again=lambda v: local.denoise(v)[0])


# --------------------------------------------------------------------------- tables and targets


COLUMNS = [("PSNR dB", "psnr_db", ".2f"), ("SSIM", "ssim", ".4f"), ("time s", "seconds", ".1f"),
           ("tune s", "tune_seconds", ".1f"), ("noise x", "noise_ratio", ".2f"),
           ("edge loss HU", "edge_loss_hu", ".1f"), ("ghost HU", "ghost_hu", ".2f"),
           ("removed flat HU", "removed_flat_hu", ".1f"), ("removed edge HU", "removed_edge_hu", ".1f")]


def format_table(rows: list[Row]) -> str:
    """Aligned text table of the rows: the columns any row fills, then parameter and note."""
    def fmt(v, spec):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)

    cols = [(h, k, s) for h, k, s in COLUMNS if any(getattr(r, k) not in (None, 0.0) for r in rows)]
    head = ("method", *(h for h, _, _ in cols), "parameter; note")
    body = [(r.method, *(fmt(getattr(r, k) or (None if k == "tune_seconds" else getattr(r, k)), s)
                         for _, k, s in cols), "; ".join(x for x in (r.parameter, r.note) if x)) for r in rows]
    widths = [max(len(line[i]) for line in (head, *body)) for i in range(len(head) - 1)]
    lines = []
    for line in (head, *body):
        cells = [line[0].ljust(widths[0])] + [v.rjust(w) for v, w in zip(line[1:-1], widths[1:])]
        lines.append("  ".join(cells + [line[-1]]).rstrip())
    lines.insert(1, "-" * max(len(x) for x in lines))
    return "\n".join(lines)


def checks(c: Condition, rows: list[Row]) -> list[tuple[str, bool | None, str]]:
    """Issue 16's targets on this condition: (target, passed or None if it cannot be told, figures)."""
    by = {r.method: r for r in rows}
    ours = by.get("ours: local SVD")
    if ours is None or (ours.psnr_db is None and c.reference is not None):
        return [("ours ran", False, ours.note if ours else "not run")]
    out = []

    def compare(target, mine, theirs, ok, text):
        if mine is None or theirs is None:
            out.append((target, None, "a peer is missing"))
        else:
            out.append((target, bool(ok(mine, theirs)), text.format(mine, theirs)))

    if c.reference is not None:
        tv_row, g_row = by.get("TV 3-D Chambolle"), by.get("gaussian 3-D")
        compare(f"PSNR >= oracle TV 3-D + {TV_MARGIN_DB} dB", ours.psnr_db, tv_row and tv_row.psnr_db,
                lambda a, b: a >= b + TV_MARGIN_DB, "{:.2f} vs {:.2f} dB")
        compare("PSNR >= oracle Gaussian 3-D", ours.psnr_db, g_row and g_row.psnr_db,
                lambda a, b: a >= b, "{:.2f} vs {:.2f} dB")
        compare("SSIM >= oracle TV 3-D", ours.ssim, tv_row and tv_row.ssim, lambda a, b: a >= b,
                "{:.4f} vs {:.4f}")
    if c.structural:
        for target, v, limit in ((f"noise in uniform regions <= x{NOISE_RATIO_MAX}", ours.noise_ratio,
                                  NOISE_RATIO_MAX),
                                 (f"edges lose <= {EDGE_LOSS_MAX_HU:g} HU RMS", ours.edge_loss_hu, EDGE_LOSS_MAX_HU),
                                 (f"ghost <= {GHOST_MAX_HU:g} HU", ours.ghost_hu, GHOST_MAX_HU)):
            ok = None if v is None or math.isnan(v) else v <= limit
            out.append((target, ok, "-" if ok is None else f"{v:.2f}"))
    truth = "true" if c.reference is not None else "uniform-region estimate"
    rep, true = ours.reported_noise_hu, c.true_noise_hu
    if rep is None or math.isnan(true):
        out.append((f"reported noise within {NOISE_REPORT_TOLERANCE:.0%} of {truth}", None,
                    f"reported {rep}, {truth} {true:.1f} HU"))
    else:
        out.append((f"reported noise within {NOISE_REPORT_TOLERANCE:.0%} of {truth}",
                    abs(rep / true - 1) <= NOISE_REPORT_TOLERANCE,
                    f"reported {rep:.1f} HU, {truth} {true:.1f} HU (x{rep / true:.2f})"))
    return out


def subset_comparison(c: Condition, result: Result, ours: Result | None) -> str:
    """For a peer run on a subset: ours scored on the same voxels, so the two compare."""
    if ours is None or c.reference is None:
        return ""
    sub = ours.out[result.region]
    return f"; ours there: {psnr(sub, c.reference[result.region]):.2f} dB, SSIM {dm.ssim(sub, c.reference[result.region]):.4f}"


# --------------------------------------------------------------------------- (f) without a reference


# A peer whose closest uniform-region noise is further than this from ours is said not to reach it.
MATCH_TOLERANCE = 0.05


def matched_note(reached: float, target: float) -> str:
    """What a matched peer's row says: matched, or how close it could come (smoothing across slices
    that do not line up, as on the real exam's tilted series, can add more than it removes)."""
    if abs(reached - target) <= MATCH_TOLERANCE:
        return "matched to ours' uniform-region noise"
    return f"cannot reach ours' uniform-region noise (x{target:.2f}): closest x{reached:.2f}"


def run_matched(c: Condition, ours: Row, skip: set) -> list[tuple[str, Result]]:
    """Gaussian and TV at the parameter leaving the same uniform-region noise as ours (no reference)."""
    if ours.noise_ratio is None or math.isnan(ours.noise_ratio):
        return []
    spacing = c.meta.get("spacing_mm", [1.0, 1.0, 1.0])
    z_per_xy = spacing[2] / spacing[0]

    def measure(out):
        return dm.noise_ratio(c.noisy, out, c.flat)

    results = []
    if "gaussian" not in skip:
        t0 = time.perf_counter()
        s, out, dt, m = search_matching(lambda s: gaussian(c.noisy, s * z_per_xy, s), measure, ours.noise_ratio,
                                        0.2, 8.0)
        results.append(("gaussian", Result(
            Row("gaussian 3-D", seconds=dt, tune_seconds=time.perf_counter() - t0,
                parameter=f"sigma xy={s:.3g} px (isotropic in mm)", note=matched_note(m, ours.noise_ratio)),
            out, again=lambda v: gaussian(v, s * z_per_xy, s))))
    if "tv" not in skip:
        t0 = time.perf_counter()
        w, out, dt, m = search_matching(lambda w: tv(c.noisy, w), measure, ours.noise_ratio, 1e-4, 0.05)
        results.append(("tv", Result(
            Row("TV 3-D Chambolle", seconds=dt, tune_seconds=time.perf_counter() - t0,
                parameter=f"weight={w:.4g}", note=matched_note(m, ours.noise_ratio)),
            out, again=lambda v: tv(v, w))))
    return results


def montage_tile(c: Condition, local_out: np.ndarray) -> np.ndarray:
    """A slice near the middle, clear of the ghost-check disc: original | local | original - local,
    8-bit, in a W 100 window (around the tissue level for the first two, around 0 for the difference)."""
    k = c.noisy.shape[0] // 2 if c.disc is None else max(0, c.disc[0].start - 4)
    level = float(np.median(c.noisy[k][c.flat[k]])) if c.flat[k].any() else 40.0

    def window(img, centre, width=100.0):
        return (np.clip((img - (centre - width / 2)) / width, 0, 1) * 255).astype(np.uint8)

    return np.hstack([window(c.noisy[k], level), window(local_out[k], level),
                      window(c.noisy[k] - local_out[k], 0.0)])


def write_montage(path: Path, tiles: list[np.ndarray]) -> None:
    """One row per series, staged then renamed (never half-written)."""
    from PIL import Image

    width = max(t.shape[1] for t in tiles)
    sheet = np.vstack([np.pad(t, ((0, 0), (0, width - t.shape[1]))) for t in tiles])
    path.parent.mkdir(parents=True, exist_ok=True)
    stage = path.with_name(path.name + ".part")
    Image.fromarray(sheet).save(stage, format="PNG")
    stage.replace(path)


# --------------------------------------------------------------------------- driver


def evaluate(c: Condition, a: argparse.Namespace) -> tuple[list[Row], Result | None]:
    """Every method on one condition, scored; also ours' result (for the montage)."""
    results: list[Result] = []

    def attempt(name, fn):
        if name in a.skip:
            print(f"  {name}: skipped", flush=True)
            return None
        try:
            r = fn()
        except Exception as exc:                      # one peer failing must not lose the others
            print(f"  {name}: failed: {type(exc).__name__}: {exc}", flush=True)
            results.append(Result(Row(name, note=f"failed: {exc}"), c.noisy))
            return None
        score(c, r)
        results.append(r)
        row = r.row
        figures = ", ".join(f"{h} {format(getattr(row, k), s)}" for h, k, s in COLUMNS
                            if getattr(row, k) is not None and k != "tune_seconds")
        print(f"  {row.method}: {figures}", flush=True)
        return r

    attempt("noisy", lambda: Result(Row("noisy input", seconds=0.0), c.noisy, again=lambda v: v))
    ours = attempt("local", lambda: run_local(c))
    if c.reference is not None:
        attempt("gaussian", lambda: run_gaussian(c))
        attempt("tv", lambda: run_tv(c))
        attempt("global", lambda: run_global_svd(c))
        for name, fn in (("bm3d", lambda: run_bm3d(c, a.bm3d_slices)), ("bm4d", lambda: run_bm4d(c, a.bm4d_crop))):
            r = attempt(name, fn)
            if r is not None:
                r.row.note += subset_comparison(c, r, ours)
    elif ours is not None:
        for name, r in run_matched(c, ours.row, a.skip):
            score(c, r)
            results.append(r)
    return [r.row for r in results], ours


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--conditions", default=",".join(CONDITIONS),
                   help="comma list of conditions to run: a,b,c,d,e,f (default all)")
    p.add_argument("--slices", type=int, default=48, help="slices of the simulated stacks")
    p.add_argument("--size", type=int, default=256, help="rows = cols of the simulated stacks")
    p.add_argument("--angles", type=int, default=None, help="views over 180 degrees; default ceil(size*pi/2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="processes for the simulation (default: CPUs)")
    p.add_argument("--sigma", type=float, default=40.0, help="noise std (HU) of (c) and (d); (e) is 2/3 of it "
                   "at the centre, 4/3 at the edge")
    p.add_argument("--rho", type=float, default=0.6, help="correlation between neighbouring slices in (d)")
    p.add_argument("--texture", type=float, default=25.0, help="std (HU) of the soft-tissue texture in (b)")
    p.add_argument("--real-slices", type=int, default=None, help="(f): central crop of this many slices")
    p.add_argument("--real-size", type=int, default=None, help="(f): central in-plane crop of this size")
    p.add_argument("--skip", default="", help=f"comma list of peers to skip: {','.join(PEERS)}")
    p.add_argument("--bm3d-slices", type=int, default=4, help="slices BM3D runs on (spread over the stack)")
    p.add_argument("--bm4d-crop", type=int, default=64, help="in-plane crop BM4D runs on (every slice)")
    p.add_argument("--json", metavar="PATH", help="also write the tables as JSON")
    p.add_argument("--montage", metavar="PATH.png", help="(f): write original | local | difference (W 100)")
    p.add_argument("--save-stacks", metavar="DIR", help="write each condition's noisy and reference volumes (npz)")
    a = p.parse_args(argv)
    a.skip = {s.strip().lower() for s in a.skip.split(",") if s.strip()}
    unknown = a.skip - set(PEERS)
    if unknown:
        p.error(f"--skip: unknown peer(s) {', '.join(sorted(unknown))}; choose from {', '.join(PEERS)}")
    a.conditions = [s.strip().lower() for s in a.conditions.split(",") if s.strip()]
    wrong = set(a.conditions) - set(CONDITIONS)
    if wrong or not a.conditions:
        p.error(f"--conditions: unknown condition(s) {', '.join(sorted(wrong)) or '(none given)'}; "
                f"choose from {','.join(CONDITIONS)}")
    if not 0 <= a.rho <= 0.7:
        p.error("--rho must be in [0, 0.7]")
    if a.slices < 4 or a.size < 32:
        p.error("--slices must be >= 4 and --size >= 32")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    maker = Conditions(a)
    report, tiles, t_start = {}, [], time.perf_counter()
    for key in a.conditions:
        for c in maker.build(key):
            print(f"\n== {c.title}", flush=True)
            print(f"   {c.noisy.shape[0]} x {c.noisy.shape[1]}x{c.noisy.shape[2]}, noise "
                  f"{'true' if c.reference is not None else 'uniform-region estimate'} {c.true_noise_hu:.1f} HU "
                  f"(median over cells inside the body)", flush=True)
            if a.save_stacks:
                folder = Path(a.save_stacks)
                folder.mkdir(parents=True, exist_ok=True)
                arrays = {"noisy_hu": c.noisy} | ({} if c.reference is None else {"reference_hu": c.reference})
                np.savez(folder / f"{c.key}.npz", meta=json.dumps(c.meta), **arrays)
            rows, ours = evaluate(c, a)
            print()
            print(format_table(rows))
            results = checks(c, rows)
            for target, ok, figures in results:
                print(f"{'PASS' if ok else 'FAIL' if ok is False else 'N/A '}  {target}: {figures}")
            report[c.key] = {"title": c.title, "meta": c.meta, "true_noise_hu": c.true_noise_hu,
                             "rows": [asdict(r) for r in rows],
                             "targets": [{"target": t, "pass": ok, "figures": f} for t, ok, f in results]}
            if c.reference is None and ours is not None and a.montage:
                tiles.append(montage_tile(c, ours.out))
    if a.montage and tiles:
        write_montage(Path(a.montage), tiles)
        print(f"\nmontage: {a.montage} (rows: series; columns: original, local, original - local; W 100)")
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    if a.json:
        path = Path(a.json)
        stage = path.with_name(path.name + ".part")
        stage.write_text(json.dumps({"window_hu": list(WINDOW_HU), "args": {
            k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(a).items()}, "conditions": report},
            indent=2, default=float) + "\n")
        stage.replace(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
