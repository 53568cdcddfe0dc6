"""A CT noise model measured from the series itself: a σ map, an in-plane noise power spectrum and
the correlation between slices.

Reconstructed CT noise is neither white nor stationary. The reconstruction
kernel shapes its in-plane noise power spectrum (NPS); thin or overlapping
slices share it (neighbouring slices of real series correlate at 0.3–0.7);
and its level changes across the field (centre against periphery, behind
bone) and along the table. A denoiser that assumes white noise of one level
reads shared noise as signal and keeps it. This module measures the model

    noise(z, y, x) ≈ σ(z, y, x) · n(z, y, x),

with σ a smooth map on a coarse grid and n a stationary Gaussian process of
unit variance whose autocorrelation is separable into an in-plane part (the
normalised 2-D NPS) and a slice part (ρ_k, the correlation of slices k
apart). How it is measured, in the spirit of the standard NPS method of CT
physics (uniform ROIs, detrended, periodogram averaged: Boedeker et al.,
Med. Phys. 34:3, 2007; ICRU Report 87; AAPM TG-233), made automatic:

1. **High-pass residual.** Each slice minus its 5 × 5 in-plane box mean,
   r = x − B₅x. Anatomy that is smooth over 5 pixels is gone; noise (mostly)
   and edges remain.
2. **Noise-only ROIs.** The volume is cut into ROIs of 16 × 16 pixels
   through 8 slices. An ROI's ratio is the variance of its detrended values
   over the robust variance (1.4826·MAD)² of its residual: noise of one
   spectrum gives the same ratio whatever its level, and anatomy raises it.
   ROIs with an edge (residual variance over 1.3 × its robust variance) or a
   ratio no CT kernel's noise gives (over 8) are never noise-only; of the
   rest, those within 30 % of the low end of the ratios (their 10th
   percentile) whose level is within 4 × the low end of the levels are.
   The object's ROIs (mean above −500 HU) are ranked on their own and used
   when 12 or more pass: a scanner's noise in air can have another spectrum
   and slice correlation than in tissue (on the shared real exam, adjacent
   slices correlate at 0.05 in the inserts and 0.3 in air).
3. **NPS and slice correlation.** Over those ROIs, each scaled by its
   robust residual variance: the mean periodogram of the detrended slices
   gives the in-plane NPS, and the correlation of r between slices k apart
   gives ρ_k (the in-plane filter is the same on every slice, so it leaves
   ρ_k as it is under the separable model). The median σ of the object's
   ROIs is the series' noise in uniform regions, the figure a physicist's
   ROI reads (the σ map's median over the object when they are too few).
   The fraction g of the noise power the high-pass keeps comes from the
   same ROIs' differences between slices ``MAX_LAG`` apart, the subtraction
   method of CT physics turned along the table: same structure, nearly
   independent noise, every in-plane frequency (a soft kernel's noise lies
   largely below a 16-pixel ROI's lowest frequency, where its spectrum
   cannot see it). When the object has too few ROIs for a spectrum but
   enough for this ratio (:data:`GAIN_ROIS`), g is the object's.
4. **σ map.** On each cell of a coarse grid (32 × 32 pixels × 16 slices),
   σ² = (1.4826·MAD(r))² / g. Cells are measured slab by slab as the
   volume is read, so memory does not grow with the series. The MAD is robust to the
   sparse edges a cell holds (Donoho & Johnstone 1994 use it the same way on
   wavelet detail coefficients). Voxels whose 3 × 3 neighbourhood is exactly
   constant (padding outside the reconstruction circle) are left out; cells
   with too few measurable voxels take the series' median.

Everything is deterministic and numpy-only, so the driver and a Spark
executor that rebuild a model from its record get the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

RESIDUAL_BOX = 5          # pixels: the in-plane box whose mean is removed (step 1)
ROI = (8, 16, 16)         # slices, rows, cols of the NPS ROIs (step 2): small enough to fit inside organs
CELL = (16, 32, 32)       # slices, rows, cols of the σ map's cells (step 4)
MAX_LAG = 4               # slice correlation measured to this lag; taken as 0 beyond
NOISE_ONLY_QUANTILE = 0.1  # the low end of the ROIs' ratios (step 2) ...
NOISE_ONLY_RATIO = 1.3     # ... and how far above it a noise-only ROI's ratio may lie: the spread of the
                           # ratio of 16 x 16 x 8 voxels of correlated noise
TISSUE_HU = -500.0         # cells mostly above this are the object, where the summary's σ is taken
FEW_ROIS = 32              # fewer noise-only ROIs than this: the noise is taken as white (see spectrum())
FEW_OBJECT_ROIS = 12       # the object's own ROIs are used from this many (24,576 voxels)
GAIN_ROIS = 4              # ... and for its level alone (a ratio, not a spectrum) from this many: the median
                           # of 4 ROIs' ratios, each over 4 x 256 slice differences
KEEP_PER_SLAB = 64         # at most this many ROIs kept per slab for step 3 ...
SLAB_BOUND = 2.0           # ... among those within this factor of the slab's low end
EDGE_FREE_RATIO = 1.3      # var / robust var of the residual above which an ROI holds an edge
MAX_NOISE_RATIO = 8.0      # noise keeps at least 1/8 of its power through the high-pass (the softest kernels)
LEVEL_SPREAD = 4.0         # a noise-only ROI's σ is at most this many times the low end of theirs
MAD_TO_SIGMA = 1.4826     # σ of a Gaussian from its median absolute deviation
EDGE_REACH = 4            # pixels each side over which the edge step is taken
EDGE_STEP = 4.0           # × σ: a box-mean step this large marks an edge (second look of step 4)
DETREND_ITERATIONS = 3     # fixed-point steps of the detrending-loss correction (step 3)
MAX_ROIS = 256            # spread over the series: enough for a smooth NPS
MIN_MEASURABLE = 0.95     # an ROI with more padding than this is left out of the NPS
STRIDE = 2                # the σ map's MADs use every other voxel each way: thousands per cell still


@dataclass(frozen=True)
class NoiseModel:
    """The measured noise of one series (see the module's docstring).

    ``sigma_map`` (HU) is on a grid of ``cell``-sized cells over a volume of
    ``shape``; ``nps`` is the in-plane NPS on a ``ROI``-sized frequency grid,
    normalised to mean 1 (unit variance); ``slice_correlation`` is ρ_0 = 1,
    ρ_1, …, ρ_MAX_LAG; ``tissue`` marks the cells mostly above −500 HU (the
    object, not the air around it), where the summary's percentiles of σ are
    taken; ``uniform`` is the median σ of the noise-only ROIs, the level of
    the noise in uniform regions (what a physicist's ROI would read).
    """

    sigma_map: np.ndarray
    cell: tuple[int, int, int]
    shape: tuple[int, int, int]
    nps: np.ndarray
    slice_correlation: np.ndarray
    rois: int
    tissue: np.ndarray | None = None
    uniform: float | None = None
    measured: bool = True                      # False: too few noise-only ROIs, taken as white

    # ------------------------------------------------------------------ what denoisers ask of it

    def sigma_at(self, z, y, x) -> np.ndarray:
        """σ (HU) at voxel coordinates (arrays broadcast): the value of the cell that holds them."""
        return cell_values(self.sigma_map, self.cell, (z, y, x))

    @property
    def autocorrelation(self) -> np.ndarray:
        """The in-plane autocorrelation R(dy, dx) of unit-variance noise, lags wrapped as in an FFT."""
        return np.fft.ifft2(self.nps).real

    def correlation(self, axis: int, lags: int) -> np.ndarray:
        """ρ(0 … lags−1) along volume ``axis`` (0 slices, 1 rows, 2 cols)."""
        if axis == 0:
            rho = np.zeros(lags)
            n = min(lags, len(self.slice_correlation))
            rho[:n] = self.slice_correlation[:n]
            return rho
        r = self.autocorrelation
        line = r[:, 0] if axis == 1 else r[0, :]
        half = len(line) // 2
        rho = np.zeros(lags)
        n = min(lags, half)
        rho[:n] = line[:n]
        return rho

    def covariance(self, axis: int, length: int) -> np.ndarray:
        """The correlation matrix (Toeplitz) of ``length`` voxels in a line along ``axis``."""
        rho = self.correlation(axis, length)
        idx = np.abs(np.subtract.outer(np.arange(length), np.arange(length)))
        # A correlation measured to a few lags and cut there need not be positive semi-definite:
        # its negative eigenvalues are set to 0, as no noise can have them.
        lam, vec = np.linalg.eigh(rho[idx])
        return (vec * np.clip(lam, 0.0, None)) @ vec.T

    def plane_correlation_energy(self, axes: tuple[int, int], shape: tuple[int, int]) -> float:
        """Σ C_ij² over the voxel pairs of a ``shape`` patch in the plane of ``axes``, C their
        correlation: (tr C)² / Σ C² is the patch's effective number of independent voxels.
        Lags the model does not reach (beyond half its NPS grid) count as uncorrelated."""
        (a, b), (p, q) = axes, shape
        lag_a, lag_b = np.arange(-p + 1, p), np.arange(-q + 1, q)
        count = np.outer(p - np.abs(lag_a), q - np.abs(lag_b))
        if axes == (1, 2):
            r = self.autocorrelation
            reach = (np.abs(lag_a)[:, None] <= r.shape[0] // 2) & (np.abs(lag_b)[None, :] <= r.shape[1] // 2)
            rr = np.where(reach, r[np.ix_(lag_a % r.shape[0], lag_b % r.shape[1])], 0.0)
        else:
            rr = np.outer(self.correlation(a, p)[np.abs(lag_a)], self.correlation(b, q)[np.abs(lag_b)])
        return float(np.sum(count * rr ** 2))

    def line_spectrum(self, axis: int, size: int) -> np.ndarray:
        """The noise's 1-D power spectrum along ``axis`` on ``size`` frequencies (mean 1)."""
        rho = self.correlation(axis, size // 2 + 1)
        full = np.zeros(size)
        full[:len(rho)] = rho
        full[size - len(rho) + 1:] = rho[1:][::-1]
        return np.clip(np.fft.fft(full).real, 0.0, None)

    # ------------------------------------------------------------------ what a person reads

    def summary(self) -> dict:
        """The model as ``local.json`` and ``noise.json`` record it (plain JSON)."""
        sig = self.sigma_map
        if self.tissue is not None and self.tissue.any():
            sig = sig[self.tissue]
        p10, median, p90 = (round(float(v), 2) for v in np.percentile(sig, [10, 50, 90]))
        freq, radial = radial_profile(self.nps)
        return {
            "method": "in-plane NPS and slice correlation from noise-only ROIs of the 5x5 high-pass residual; "
                      f"sigma map from its MAD on {'x'.join(map(str, self.cell[::-1]))} cells, scaled by the "
                      f"ROIs' differences between slices {MAX_LAG} apart (ctsvd_common.noise)",
            "sigma_hu": {"p10": p10, "median": median, "p90": p90, "over": "cells mostly above -500 HU"
                         if self.tissue is not None and self.tissue.any() else "every cell",
                         "uniform": round(float(median if self.uniform is None else self.uniform), 2),
                         "uniform_over": "the object's noise-only ROIs (uniform regions)" if self.uniform is not None
                         else "the sigma map's median (too few noise-only ROIs in the object)"},
            "sigma_map": {"cell": list(self.cell), "shape": list(self.shape),
                          "values_hu": np.round(self.sigma_map, 2).tolist(),
                          "tissue": None if self.tissue is None else self.tissue.astype(int).tolist()},
            "slice_correlation": [round(float(v), 3) for v in self.slice_correlation],
            "nps": {"roi": list(self.nps.shape), "frequency_cycles_per_pixel": [round(float(f), 4) for f in freq],
                    "radial_normalised": [round(float(v), 4) for v in radial],
                    "peak_cycles_per_pixel": round(float(freq[int(np.argmax(radial))]), 4),
                    "measured": bool(self.measured),
                    "values": np.round(self.nps, 4).tolist()},
            "rois": self.rois,
        }

    @classmethod
    def from_summary(cls, d: dict) -> "NoiseModel":
        """The model back from :meth:`summary` (what render and a remote executor read)."""
        tissue = d["sigma_map"].get("tissue")
        return cls(np.asarray(d["sigma_map"]["values_hu"], float), tuple(d["sigma_map"]["cell"]),
                   tuple(d["sigma_map"]["shape"]), np.asarray(d["nps"]["values"], float),
                   np.asarray(d["slice_correlation"], float), int(d["rois"]),
                   None if tissue is None else np.asarray(tissue, bool), d["sigma_hu"].get("uniform"),
                   bool(d["nps"].get("measured", True)))


# --------------------------------------------------------------------------- measuring it


def cell_values(values: np.ndarray, cell: tuple[int, int, int], coords) -> np.ndarray:
    """The value of the cell (of ``cell`` voxels, on the grid of ``values``) holding each voxel of
    ``coords`` (three arrays that broadcast); voxels past the grid take its last cell."""
    index = tuple(np.clip(np.asarray(c) // n, 0, m - 1) for c, n, m in zip(coords, cell, values.shape))
    return values[index]


def box_mean(plane_stack: np.ndarray, size: int) -> np.ndarray:
    """The mean over a ``size`` × ``size`` in-plane box, per slice (edges reflected), in float32."""
    h = size // 2
    a = np.pad(np.asarray(plane_stack, np.float32), ((0, 0), (h, h), (h, h)), mode="reflect")
    rows, cols = plane_stack.shape[1:]
    band = sum(a[:, i:i + rows] for i in range(size))
    return sum(band[:, :, j:j + cols] for j in range(size)) / np.float32(size * size)


def box_response(size: int, rows: int, cols: int) -> np.ndarray:
    """|1 − B̂(f)|² of the residual x − B·x on a rows × cols frequency grid."""
    def line(n):
        h = size // 2
        taps = np.zeros(n)
        taps[np.r_[0:h + 1, n - h:n]] = 1.0 / size
        return np.fft.fft(taps).real
    return np.square(1.0 - np.outer(line(rows), line(cols)))


def residual(volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The high-pass residual r = x − B₅x (float32) and the mask of measurable voxels: those not
    equal to all four neighbours (an exactly constant neighbourhood is padding, not tissue)."""
    v = np.asarray(volume, np.float32)
    flat = np.zeros(v.shape, bool)
    flat[:, 1:-1, 1:-1] = ((v[:, 1:-1, 1:-1] == v[:, :-2, 1:-1]) & (v[:, 1:-1, 1:-1] == v[:, 2:, 1:-1])
                           & (v[:, 1:-1, 1:-1] == v[:, 1:-1, :-2]) & (v[:, 1:-1, 1:-1] == v[:, 1:-1, 2:]))
    return v - box_mean(v, RESIDUAL_BOX), ~flat


def robust_sigma(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """1.4826 · median(|v − median v|) along ``axis``: σ of the Gaussian part of ``values``; NaNs are
    left out, and an all-NaN line gives NaN."""
    return MAD_TO_SIGMA * _nanmedian(np.abs(values - np.expand_dims(_nanmedian(values, axis), axis)), axis)


def _nanmedian(values: np.ndarray, axis: int) -> np.ndarray:
    """The median along ``axis`` ignoring NaN: one sort, NaNs last (several times faster than
    np.nanmedian on many short lines)."""
    v = np.sort(np.moveaxis(values, axis, -1), axis=-1)
    count = np.count_nonzero(~np.isnan(v), axis=-1)
    lo = np.take_along_axis(v, np.maximum((count - 1) // 2, 0)[..., None], -1)[..., 0]
    hi = np.take_along_axis(v, np.maximum(count // 2, 0)[..., None], -1)[..., 0]
    return np.where(count > 0, (lo + hi) / 2, np.nan)


def _blocks(a: np.ndarray, size: tuple[int, int, int]) -> np.ndarray:
    """``a`` cut into whole blocks of ``size``: (bz, by, bx, size…); a partial block at an end is dropped."""
    bz, by, bx = (n // s for n, s in zip(a.shape, size))
    a = a[:bz * size[0], :by * size[1], :bx * size[2]]
    return a.reshape(bz, size[0], by, size[1], bx, size[2]).transpose(0, 2, 4, 1, 3, 5)


def _cells(a: np.ndarray, size: tuple[int, int, int]) -> np.ndarray:
    """``a`` cut into cells of ``size`` (the last ones partial, padded with NaN): (cz, cy, cx, voxels)."""
    grid = [math.ceil(n / s) for n, s in zip(a.shape, size)]
    padded = np.full([g * s for g, s in zip(grid, size)], np.nan, np.float32)
    padded[:a.shape[0], :a.shape[1], :a.shape[2]] = a
    return _blocks(padded, size).reshape(*grid, -1)


def candidate_rois(slab: np.ndarray, r: np.ndarray, valid: np.ndarray, keep: int) -> list[tuple[np.ndarray, ...]]:
    """Step 2 on one slab, for the object's ROIs and for all of them: the ratio of every measurable
    ROI (infinite where it cannot be noise-only), and up to ``keep`` ROIs that may be noise-only, as
    (their ratios, raw ROIs, residual ROIs).

    An ROI's ratio is the variance of its detrended values over the robust variance of its
    high-pass residual. Noise of one spectrum gives the same ratio everywhere, whatever its level
    (the inverse of the share of the noise power the high-pass keeps); anatomy adds to the first
    and barely moves the second. The object's ROIs (mean above :data:`TISSUE_HU`) are ranked on
    their own: a scanner's noise in air can have another spectrum than in tissue, and a lower ratio.
    """
    roi = roi_shape(r.shape)
    whole = _blocks(valid, roi).reshape(-1, int(np.prod(roi))).mean(axis=1) >= MIN_MEASURABLE
    resid = _blocks(r, roi).reshape(-1, *roi)[whole]
    raw = _blocks(slab, roi).reshape(-1, *roi)[whole]
    if len(resid) == 0:
        return [(np.zeros(0), np.zeros(0), raw, resid)] * 2
    flat = resid.reshape(len(resid), -1).astype(np.float64)
    level = robust_sigma(flat[:, ::2]) ** 2
    ratio = _detrended(raw).reshape(len(raw), -1).var(axis=1) / np.maximum(level, 1e-12)
    # An edge through an ROI raises its residual's variance far above the robust one, and anatomy
    # smoother than the high-pass raises the ratio beyond what any CT kernel's noise gives: neither
    # is noise-only, whatever else the series holds.
    ratio[(flat.var(axis=1) > EDGE_FREE_RATIO * level) | (ratio > MAX_NOISE_RATIO)] = np.inf
    out = []
    for members in (raw.reshape(len(raw), -1).mean(axis=1) > TISSUE_HU, np.ones(len(raw), bool)):
        index = np.flatnonzero(members & np.isfinite(ratio))
        # The ROIs that may turn out noise-only (the series' limit is known only at the end), thinned
        # evenly by rank: keeping only the very lowest ratios would bias what they measure.
        likely = index[ratio[index] <= SLAB_BOUND * np.quantile(ratio[index], NOISE_ONLY_QUANTILE)] \
            if len(index) else index
        likely = likely[np.argsort(ratio[likely], kind="stable")]
        chosen = np.sort(likely[np.linspace(0, len(likely) - 1, min(keep, len(likely))).astype(int)])
        out.append((ratio[members], ratio[chosen], raw[chosen], resid[chosen]))
    return out


def roi_shape(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """The ROIs of a slab of ``shape``: :data:`ROI`, in-plane halved on small images so that some
    hold no anatomy (at least 4 × 4 of them per slice)."""
    side = ROI[1]
    while side > 8 and min(shape[1], shape[2]) < 4 * side:
        side //= 2
    return min(ROI[0], shape[0]), min(side, shape[1]), min(side, shape[2])


def _detrended(rois: np.ndarray) -> np.ndarray:
    """Each ROI slice minus its least-squares plane a + b·y + c·x (the standard NPS detrending)."""
    rows, cols = rois.shape[-2:]
    y, x = np.meshgrid(np.arange(rows) - rows / 2, np.arange(cols) - cols / 2, indexing="ij")
    design = np.stack([np.ones(rows * cols), y.ravel(), x.ravel()], axis=1)
    flat = rois.reshape(-1, rows * cols).astype(np.float64)
    return (flat - (flat @ np.linalg.pinv(design).T) @ design.T).reshape(rois.shape)


def spectrum(raw: np.ndarray, resid: np.ndarray, minimum: int = FEW_ROIS) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Step 3 over the noise-only ROIs: the normalised in-plane NPS (the mean periodogram of the
    detrended ROI slices), the slice correlation ρ_0 … ρ_MAX_LAG of their residuals, the share g of
    the noise power the high-pass keeps, and the count of ROIs they came from; white noise when
    they are fewer than ``minimum``. Each ROI is scaled by its robust high-pass variance, so levels
    do not mix."""
    depth, rows, cols = raw.shape[1:]
    white = (np.ones((rows, cols)), np.eye(1, MAX_LAG + 1)[0], float(np.mean(box_response(RESIDUAL_BOX, rows, cols))),
             len(raw))
    if len(raw) < max(1, minimum):
        # Too few ROIs free of anatomy (a small image, all structure) to tell the noise's spectrum
        # and slice correlation from what anatomy is left in them: the noise is taken as white.
        return white
    keep = np.linspace(0, len(raw) - 1, min(len(raw), MAX_ROIS)).astype(int)
    raw, resid = raw[keep], resid[keep].astype(np.float64)
    level = np.maximum(robust_sigma(resid.reshape(len(resid), -1)[:, ::2]) ** 2, 1e-12)
    periodograms = np.square(np.abs(np.fft.fft2(_detrended(raw)))) / (rows * cols)
    nps = (periodograms / level[:, None, None, None]).mean(axis=(0, 1))
    lags = np.array([np.mean(np.sum(resid[:, k:] * resid[:, :depth - k], axis=(1, 2, 3)) / level)
                     / (depth - k) if k < depth else 0.0 for k in range(MAX_LAG + 1)])
    if lags[0] <= 0:
        return white
    rho = lags / lags[0]
    gain = slice_difference_gain(raw, level, rho)
    if gain is None:
        # ROIs one slice deep: the gain from the spectrum, with the power detrending took put back
        # at zero frequency (the spectrum's shape is what was measured).
        full = nps.copy()
        for _ in range(DETREND_ITERATIONS):
            full[0, 0] = nps[0, 0] + rows * cols * _detrending_loss(full)
        gain = float(np.mean(full * box_response(RESIDUAL_BOX, rows, cols)) / np.mean(full))
    return nps / nps.mean(), rho, gain, len(raw)


def slice_difference_gain(raw: np.ndarray, level: np.ndarray, rho: np.ndarray) -> float | None:
    """The share g of the noise power the high-pass keeps, from the noise-only ROIs' differences
    between slices, where that can be measured (None where the ROIs are one slice deep).

    A soft kernel puts much of its noise below the lowest frequency of a 16-pixel ROI, and
    detrending takes more of it: a gain from the ROIs' spectrum alone read the shared real exam's
    noise at ×0.7–0.8 of what its uniform regions show. Slices ``L`` apart (``L`` = MAX_LAG, where
    the model takes the correlation as ending) hold the same structure and nearly independent
    noise, so var(x_{k+L} − x_k) = 2σ²(1 − ρ_L) counts the noise at every in-plane frequency but
    the difference's mean (removed, for slow drifts of the structure along z). Each ROI gives its
    high-pass variance over that σ²; the median over the ROIs is robust to the few whose structure
    changes along z. On the real exam's inserts, slices 3 to 6 apart agree within 6 %.
    """
    depth = raw.shape[1]
    lag = min(MAX_LAG, depth - 1)
    if lag < 1 or len(raw) == 0:
        return None
    diff = raw[:, lag:].astype(np.float64) - raw[:, :depth - lag]
    # (ρ_L is capped: slices that share nearly all their noise leave too little difference to scale up.)
    power = diff.reshape(len(raw), depth - lag, -1).var(axis=-1).mean(axis=1) / (2 * (1 - min(rho[lag], 0.9)))
    return float(np.median(level / np.maximum(power, 1e-12)))


def _noise_only(candidates: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Of one class of :func:`candidate_rois` over the series, the noise-only ROIs (raw, residual)
    and their robust σ."""
    every = np.concatenate([c[0] for c in candidates])
    every = every[np.isfinite(every)]
    if len(every) == 0:
        empty = np.zeros((0, *ROI))
        return empty, empty, np.zeros(0)
    limit = NOISE_ONLY_RATIO * np.quantile(every, NOISE_ONLY_QUANTILE)
    raw = np.concatenate([c[2][c[1] <= limit] for c in candidates])
    resid = np.concatenate([c[3][c[1] <= limit] for c in candidates])
    # An ROI astride a strong edge (skull and air) can pass both tests when the edge fills it:
    # its "noise" is then far above the other ROIs'.
    level = robust_sigma(resid.reshape(len(resid), -1)[:, ::2].astype(np.float64))
    typical = level <= LEVEL_SPREAD * np.quantile(level, NOISE_ONLY_QUANTILE) if len(level) else level > 0
    return raw[typical], resid[typical], level[typical]


def _detrending_loss(nps: np.ndarray) -> float:
    """The variance per voxel that detrending takes from noise of spectrum ``nps`` in an ROI of its
    size: tr((I − P)·C) / N, with P the plane fit's projector and C the noise's covariance (from the
    spectrum, lags wrapped). Without it, a soft kernel's noise, much of whose power lies at the
    lowest frequencies, reads as weaker than it is."""
    rows, cols = nps.shape
    y, x = np.meshgrid(np.arange(rows) - rows / 2, np.arange(cols) - cols / 2, indexing="ij")
    q, _ = np.linalg.qr(np.stack([np.ones(rows * cols), y.ravel(), x.ravel()], axis=1))
    r = np.fft.ifft2(nps).real
    dy = np.subtract.outer(y.ravel(), y.ravel()).astype(int) % rows
    dx = np.subtract.outer(x.ravel(), x.ravel()).astype(int) % cols
    covariance = r[dy, dx]
    return float(np.einsum("ik,ij,jk->", q, covariance, q)) / (rows * cols)


def estimate(volume: np.ndarray, cell: tuple[int, int, int] = CELL) -> NoiseModel:
    """Measure the noise model of a (slices, rows, cols) HU volume (see the module's docstring).

    The volume is read one slab of cells at a time and each slab's cells are measured as it is
    read, so a memory-mapped series is never loaded whole and memory does not grow with its length.
    """
    volume = np.asarray(volume) if not isinstance(volume, np.memmap) else volume
    if volume.ndim != 3:
        raise ValueError(f"expected a (slices, rows, cols) volume, got shape {volume.shape}")
    cell = tuple(min(c, s) for c, s in zip(cell, volume.shape))
    candidates, looks, tissue = [], [], []
    # ROIs kept per slab for step 3: enough to pick MAX_ROIS noise-only ones from, few enough that
    # a long series' candidates stay small.
    keep = min(KEEP_PER_SLAB, math.ceil(4 * MAX_ROIS / math.ceil(volume.shape[0] / cell[0])))
    for z in range(0, volume.shape[0], cell[0]):
        slab = np.asarray(volume[z:z + cell[0]], np.float32)
        r, valid = residual(slab)
        if r.shape[0] >= min(ROI[0], volume.shape[0]):
            candidates.append(candidate_rois(slab, r, valid, keep))
        looks.append(_cell_sigma(slab, r, valid, cell))
        tissue.append(np.nanmean(_cells((slab > TISSUE_HU)[::STRIDE, ::STRIDE, ::STRIDE].astype(np.float32),
                                        _sub_cell(cell)), axis=-1) >= 0.5)
    if not candidates or sum(len(c[1][0]) for c in candidates) == 0:
        raise ValueError("no ROI of the series is free of padding: its noise cannot be measured")
    # Noise-only ROIs: ratios within NOISE_ONLY_RATIO of the low end of the ratios, anywhere; and
    # in the object alone, whose noise is the one a reader looks at, when enough of the series is
    # measurable at all and the object holds enough of them.
    found = [_noise_only([c[kind] for c in candidates]) for kind in (0, 1)]
    in_object = len(found[1][0]) >= FEW_ROIS and len(found[0][0]) >= FEW_OBJECT_ROIS
    raw, resid, level = found[0] if in_object else found[1]
    nps, rho, gain, count = spectrum(raw, resid, FEW_OBJECT_ROIS if in_object else FEW_ROIS)
    measured = count >= (FEW_OBJECT_ROIS if in_object else FEW_ROIS)
    if measured and not in_object and len(found[0][0]) >= GAIN_ROIS:
        # Too few of the object's ROIs for a spectrum, enough for its gain (a ratio): the σ map is
        # read with the object's, since the noise in air can have another spectrum.
        gain = slice_difference_gain(found[0][0], np.square(found[0][2]), rho) or gain
    sigma = np.concatenate([s for s, _ in looks]) / math.sqrt(gain)
    if np.all(np.isnan(sigma)):
        # A series too small for any cell to hold enough voxels: one σ for all of it (0 where
        # nothing varies at all), from the voxels every slab could measure.
        voxels = np.concatenate([v for _, v in looks])
        whole = robust_sigma(voxels) if np.any(~np.isnan(voxels)) else 0.0
        sigma = np.full(sigma.shape, float(np.nan_to_num(whole)) / math.sqrt(gain))
    sigma = np.where(np.isnan(sigma), np.nanmedian(sigma), sigma)
    # The object's noise-only ROIs' σ, where they were enough to measure from; else the map's median
    # over the object's cells (the noise-only ROIs of air say little of the object's noise).
    uniform = float(np.median(level)) / math.sqrt(gain) if measured and in_object else None
    return NoiseModel(sigma, cell, tuple(volume.shape), nps, rho, count, np.concatenate(tissue), uniform, measured)


def _sub_cell(cell: tuple[int, int, int]) -> tuple[int, int, int]:
    """A cell's size on the grid of every STRIDE-th voxel."""
    return tuple(max(1, c // STRIDE) for c in cell)


def _cell_sigma(slab: np.ndarray, r: np.ndarray, valid: np.ndarray,
                cell: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Step 4 on one slab of cells: the robust σ of the high-pass residual in each cell (before the
    high-pass gain; NaN where too few voxels are measurable), and, only when no cell of the slab
    could be measured, the slab's measurable voxels (for a series too small for any cell)."""
    sub_cell = _sub_cell(cell)
    smooth = (slab - r)[::STRIDE, ::STRIDE, ::STRIDE]
    sub = np.where(valid, r, np.nan)[::STRIDE, ::STRIDE, ::STRIDE]
    shift = max(1, EDGE_REACH // STRIDE)
    step = np.maximum(np.abs(np.roll(smooth, shift, 1) - np.roll(smooth, -shift, 1)),
                      np.abs(np.roll(smooth, shift, 2) - np.roll(smooth, -shift, 2))).astype(np.float32)
    cells = _cells(sub, sub_cell)
    first = robust_sigma(cells)
    # Second look without the voxels near edges: the MAD tolerates a few, but a cell crossed by a
    # strong edge holds a band of them. An edge is a step of the box mean well above the noise the
    # first look found in that cell (none is found in a cell the first look could not measure).
    near_edge = _cells(step, sub_cell) > EDGE_STEP * np.nan_to_num(first, nan=np.inf)[..., None]
    measurable = np.count_nonzero(~np.isnan(cells), axis=-1) >= np.maximum(16, cells.shape[-1] // 4)
    second = robust_sigma(np.where(near_edge, np.nan, cells))
    sigma = np.where(measurable, np.where(np.isnan(second), first, second), np.nan)
    # Not ``sub[:0]``: an empty view keeps the slab alive, and the caller keeps one per slab.
    return sigma, (sub[~np.isnan(sub)] if np.all(np.isnan(sigma)) else np.empty(0, sub.dtype))


def radial_profile(nps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The NPS averaged over rings of equal radial frequency (cycles/pixel, 0 to 0.5)."""
    n = nps.shape[0]
    f = np.fft.fftfreq(n)
    radius = np.hypot(*np.meshgrid(f, np.fft.fftfreq(nps.shape[1]), indexing="ij"))
    bins = np.minimum(np.round(radius * n).astype(int), n // 2)
    counts = np.bincount(bins.ravel(), minlength=n // 2 + 1)
    sums = np.bincount(bins.ravel(), nps.ravel(), minlength=n // 2 + 1)
    return np.arange(n // 2 + 1) / n, sums / np.maximum(counts, 1)


def synthesize(shape: tuple[int, int, int], sigma, nps: np.ndarray, rho, seed: int = 0) -> np.ndarray:
    """Gaussian noise of the model: unit-variance with in-plane ``nps`` (n × n, mean 1) and slice
    correlation ``rho`` (ρ_0 = 1, ρ_1, …), times ``sigma`` (a number or an array of ``shape``).

    For tests and benchmarks: the inverse of :func:`estimate`.
    """
    rng = np.random.default_rng(seed)
    z, rows, cols = shape
    white = rng.standard_normal((z + 2 * len(rho), rows, cols))
    # Along z: a moving average whose autocorrelation is ρ (spectral factor of the Toeplitz ρ).
    m = 64
    spec = np.zeros(m)
    spec[:len(rho)] = rho
    spec[m - len(rho) + 1:] = np.asarray(rho)[1:][::-1]
    amp = np.sqrt(np.clip(np.fft.fft(spec).real, 0.0, None))
    kernel = np.fft.ifft(amp).real
    taps = np.r_[kernel[m - len(rho) + 1:], kernel[:len(rho)]]
    zc = np.zeros((z, rows, cols))
    for i, t in enumerate(taps):
        zc += t * white[i:i + z]
    # In-plane: filter each slice by sqrt(NPS), interpolated to the slice size.
    fy = np.fft.fftfreq(rows)
    fx = np.fft.fftfreq(cols)
    n = nps.shape[0]
    iy = np.round(fy * n).astype(int) % n
    ix = np.round(fx * n).astype(int) % n
    amp2 = np.sqrt(nps[np.ix_(iy, ix)])
    out = np.fft.ifft2(np.fft.fft2(zc) * amp2).real
    out /= out.std()
    return (out * sigma).astype(np.float32)
