"""Local SVD denoising: SVDs of small patches across neighbouring slices.

The slices of a CT series are not a low-rank family: anatomy moves from
slice to slice, so a global rank cut removes anatomy and paints in other
slices' structure. A small in-plane patch followed through a few
neighbouring slices *is* nearly low rank, and the noise is not. This module
denoises such patches one by one, the way MP-PCA does for diffusion MRI
(Veraart et al. 2016, dipy's ``localpca``):

1. For a patch of ``p × p`` pixels over ``L`` slices, form the matrix X
   (p² × L, one column per slice) and centre its rows.
2. Estimate the noise level of *this* patch from its own spectrum: the
   smallest eigenvalues of XᵀX/p² that fit a Marchenko–Pastur law give σ².
   CT noise after filtered back-projection varies across the field and is
   correlated in-plane, so a local estimate is needed; the correlation makes
   the Marchenko–Pastur fit read low, which :data:`NOISE_VARIANCE_FACTOR`
   corrects (measured on simulated low-dose stacks).
3. Shrink the singular values with the Gavish–Donoho optimal shrinker for
   Frobenius loss at that σ, and rebuild the patch.
4. Patches overlap (stride ``s`` in-plane, ``zs`` across slices); each
   voxel is the weighted mean of its estimates, weights 1 / (1 + rank kept),
   so confident low-rank patches count more.
5. The estimate is made for a few patch geometries, followed across slices
   and across rows (:data:`ENSEMBLE`), and averaged: their errors are partly
   independent, and the mean is better than any one.

This is the first of the local denoiser's two stages (:mod:`ssvd_denoise.local`):
its result is the pilot that :mod:`ssvd_denoise.wiener` refines.

Everything is deterministic. The volume is processed in **tiles**, slabs of
whole slices: a tile owns a run of output slices, computes every patch that
touches them (patches across a tile's edge are computed by both tiles) and
returns its slices final. Each voxel thus gets the same patches, summed in
the same order, whatever the tiling: one pass over the volume on one machine
and a Spark cluster (:mod:`ssvd_denoise.localspark`) give identical bytes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
import numpy as np

# The Marchenko–Pastur fit under-reads FBP noise, whose in-plane correlation
# spreads the noise spectrum; σ² is scaled by this factor. Measured on
# simulated low-dose stacks (I0 = 1e4): 1.0 gives 39.4 dB, 1.3 gives 39.6 dB,
# 1.6 gives 39.5 dB on the same crop.
NOISE_VARIANCE_FACTOR = 1.3
# Variances below this (HU²) are taken as exactly constant patches: air
# outside the reconstruction circle, padding.
MIN_NOISE_VARIANCE = 1e-6


@dataclass(frozen=True)
class Geometry:
    """One patch shape: ``patch`` × ``patch`` pixels over ``slices`` slices, moved by ``stride``
    pixels in-plane and ``slab_stride`` slices across."""

    patch: int
    slices: int
    stride: int
    slab_stride: int


GEOMETRIES = (Geometry(8, 16, 4, 8), Geometry(8, 24, 4, 8), Geometry(6, 24, 3, 8))


@dataclass(frozen=True)
class Pass:
    """Patches of ``geometries`` followed along volume ``axis`` (0: across slices, 1: across rows)."""

    axis: int
    geometries: tuple[Geometry, ...]


# The ensemble, every (axis, geometry) estimate weighing the same in the mean.
# Patches followed across slices keep in-plane noise in the components they
# keep; patches followed across rows see it as noise, so the two err apart.
# On simulated low-dose stacks (96 × 256², I0 = 1e4), noisy 32.9 / 28.2 dB at
# 1000 / 403 views: the first geometry across slices and across rows, 41.2 /
# 37.8 dB; the first two across slices and the first across rows, 40.8 / 37.3
# (50 % more work); the first across slices alone, 36.7 dB at 403 views.
ENSEMBLE = (Pass(0, GEOMETRIES[:1]), Pass(1, GEOMETRIES[:1]))


def parameters(ensemble: tuple[Pass, ...] = ENSEMBLE) -> dict:
    """The parameters that shape the result, as ``local.json`` records them."""
    return {"passes": [{"axis": ("slices", "rows")[p.axis], "geometries": [asdict(g) for g in p.geometries]}
                       for p in ensemble],
            "noise_variance_factor": NOISE_VARIANCE_FACTOR,
            "noise_estimate": "Marchenko-Pastur fit per patch", "shrinkage": "Gavish-Donoho, Frobenius loss",
            "aggregation": "weights 1 / (1 + rank kept); mean over every (axis, geometry) estimate"}


# --------------------------------------------------------------------------- grids and tiles


def starts(n: int, size: int, step: int) -> list[int]:
    """Start positions of windows of ``size`` along ``n``, ``step`` apart, the last flush with the end."""
    size = min(size, n)
    out = list(range(0, n - size + 1, step))
    if out[-1] != n - size:
        out.append(n - size)
    return out


@dataclass(frozen=True)
class Tile:
    """Output slices ``[own_first, own_stop)``, made from input slices ``[first, stop)``."""

    index: int
    own_first: int
    own_stop: int
    first: int
    stop: int


def _touching(slices: int, g: Geometry, first: int, stop: int) -> list[int]:
    """Start slices of ``g``'s patches that cover any slice of ``[first, stop)``."""
    depth = min(g.slices, slices)
    return [z for z in starts(slices, depth, g.slab_stride) if z < stop and z + depth > first]


def tile(slices: int, own_first: int, own_stop: int, geometries: tuple[Geometry, ...] = GEOMETRIES,
         index: int = 0) -> Tile:
    """The tile owning output slices ``[own_first, own_stop)``, with the input slices its patches read."""
    zs = [(z, min(g.slices, slices)) for g in geometries for z in _touching(slices, g, own_first, own_stop)]
    return Tile(index, own_first, own_stop, min(z for z, _ in zs), max(z + d for z, d in zs))


def tiles(slices: int, count: int, geometries: tuple[Geometry, ...] = GEOMETRIES) -> list[Tile]:
    """Split the output slices into ``count`` slabs (fewer if the series is short)."""
    count = max(1, min(count, slices))
    edges = sorted({round(i * slices / count) for i in range(count + 1)})
    return [tile(slices, a, b, geometries, i) for i, (a, b) in enumerate(zip(edges, edges[1:]))]


# --------------------------------------------------------------------------- the kernel


def marchenko_pastur_variance(eigenvalues: np.ndarray, rows: int) -> np.ndarray:
    """Noise variance of each matrix from its eigenvalues (XᵀX / rows, descending).

    For each candidate number of signal components k, the remaining
    eigenvalues are noise if their spread fits the Marchenko–Pastur law:
    λ_k − λ_last < 4·sqrt(γ)·σ², with σ² their mean and γ = (count)/rows.
    The smallest such k is taken (Veraart et al. 2016).
    """
    tail_sums = np.cumsum(eigenvalues[:, ::-1], axis=1)[:, ::-1]
    counts = np.arange(eigenvalues.shape[1], 0, -1)
    sigma2 = tail_sums / counts
    spread = eigenvalues - eigenvalues[:, -1:]
    fits = spread < 4.0 * np.sqrt(counts / rows) * sigma2
    k = np.argmax(fits, axis=1)   # the last candidate always fits: spread 0
    return sigma2[np.arange(len(k)), k]


def optimal_shrinkage(y: np.ndarray, beta: float) -> np.ndarray:
    """Gavish–Donoho optimal shrinker for Frobenius loss, on singular values in units of σ·sqrt(rows)."""
    t = (y * y - beta - 1.0) ** 2 - 4.0 * beta
    shrunk = np.sqrt(np.clip(t, 0.0, None)) / np.maximum(y, 1e-12)
    return np.where(y > 1.0 + math.sqrt(beta), shrunk, 0.0)


def denoise_patches(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Denoise a batch of patch matrices X (batch, pixels, slices).

    Returns the estimates, each patch's aggregation weight and its noise
    standard deviation (HU). The SVD is taken through the small slices ×
    slices Gram matrix: with X = U S Vᵀ, the estimate U f(S) Vᵀ equals
    X · V diag(f(s)/s) Vᵀ, so U is never formed. Squaring costs relative
    accuracy only far below the noise level (s < sqrt(eps)·s_max).
    """
    rows, cols = X.shape[1], X.shape[2]
    mean = X.mean(axis=2, keepdims=True)
    Xc = X - mean
    eigenvalues, V = np.linalg.eigh(np.matmul(Xc.transpose(0, 2, 1), Xc))
    eigenvalues, V = eigenvalues[:, ::-1].clip(0.0), V[:, :, ::-1]          # descending
    s = np.sqrt(eigenvalues)
    # Centring removes one degree of freedom: the last singular value is ~0.
    sigma2 = marchenko_pastur_variance(eigenvalues[:, :-1] / rows, rows) * NOISE_VARIANCE_FACTOR
    sigma = np.sqrt(np.maximum(sigma2, MIN_NOISE_VARIANCE))
    scale = sigma[:, None] * math.sqrt(rows)
    kept = optimal_shrinkage(s / scale, (cols - 1) / rows) * scale
    factor = np.divide(kept, s, out=np.zeros_like(s), where=s > 0)
    estimate = np.matmul(Xc, np.matmul(V * factor[:, None, :], V.transpose(0, 2, 1))) + mean
    weight = 1.0 / (1.0 + np.count_nonzero(kept, axis=1))
    return estimate, weight, sigma


def add_row(sums: np.ndarray, weights: np.ndarray, patches: np.ndarray, weight: np.ndarray,
            xs: list[int], stride: int) -> None:
    """Add a row of overlapping patches (n, depth, p, p) at columns ``xs`` into ``sums`` (depth, p, cols).

    The patches sit ``stride`` apart, which divides p, except perhaps the last
    (flush with the edge); the regular ones are added as p / stride strided
    blocks instead of one by one.
    """
    n, p = len(xs), patches.shape[-1]
    regular = n if xs[-1] == (n - 1) * stride else n - 1
    if p % stride or regular < 1:
        regular = 0
    for j in range(p // stride if regular else 0):
        cols = slice(j * stride, j * stride + regular * stride)
        block = patches[:regular, :, :, j * stride:(j + 1) * stride]          # (regular, depth, p, stride)
        target, wtarget = sums[:, :, cols], weights[:, :, cols]
        # Setting .shape never copies (it raises instead): the adds must land in sums itself.
        target.shape = wtarget.shape = (*sums.shape[:2], regular, stride)
        target += block.transpose(1, 2, 0, 3)
        wtarget += weight[:regular][None, None, :, None]
    for i in range(regular, n):
        sums[:, :, xs[i]:xs[i] + p] += patches[i]
        weights[:, :, xs[i]:xs[i] + p] += weight[i]


def denoise_tile(region: np.ndarray, tile: Tile, slices: int,
                 geometries: tuple[Geometry, ...] = GEOMETRIES) -> tuple[np.ndarray, np.ndarray]:
    """Denoise one tile: its output slices (float32) and the noise (HU) of its patches.

    ``region`` holds slices ``[tile.first, tile.stop)`` of the volume, which
    has ``slices`` slices in all.
    """
    region = np.asarray(region, dtype=np.float64)
    _, rows, cols = region.shape
    out = np.zeros((tile.own_stop - tile.own_first, rows, cols))
    noise = []
    for gi, g in enumerate(geometries):
        p, depth = min(g.patch, rows, cols), min(g.slices, slices)
        step = min(g.stride, p)   # a patch clipped to a small image must not leave gaps between patches
        ys, xs = starts(rows, p, step), starts(cols, p, step)
        sums, weights = np.zeros(region.shape), np.zeros(region.shape)
        for z in _touching(slices, g, tile.own_first, tile.own_stop):
            slab = region[z - tile.first:z - tile.first + depth]
            zz = slice(z - tile.first, z - tile.first + depth)
            for y in ys:
                # One batched SVD for every patch of this row of patches.
                X = np.stack([slab[:, y:y + p, x:x + p].reshape(depth, -1).T for x in xs])
                estimate, weight, sigma = denoise_patches(X)
                if gi == 0 and tile.own_first <= z < tile.own_stop:
                    noise.append(sigma)   # each patch counted once, by the tile of its first slice
                patches = (estimate * weight[:, None, None]).transpose(0, 2, 1).reshape(len(xs), depth, p, p)
                add_row(sums[zz, y:y + p], weights[zz, y:y + p], patches, weight, xs, step)
        own = slice(tile.own_first - tile.first, tile.own_stop - tile.first)
        out += sums[own] / weights[own]
    out /= len(geometries)
    return out.astype(np.float32), np.concatenate(noise) if noise else np.zeros(0)


def noise_summary(sigmas: list[np.ndarray]) -> dict:
    """The local noise estimate over all patches, in HU: 10th percentile, median, 90th."""
    sigma = np.concatenate(sigmas) if sigmas else np.zeros(1)
    p10, median, p90 = (float(v) for v in np.percentile(sigma, [10, 50, 90]))
    return {"p10": round(p10, 2), "median": round(median, 2), "p90": round(p90, 2)}


def along(volume: np.ndarray, axis: int) -> np.ndarray:
    """A view of ``volume`` with ``axis`` first: the axis a pass's patches follow."""
    return np.moveaxis(volume, axis, 0)


def denoise_pass(volume: np.ndarray, p: Pass, tile_count: int = 1) -> tuple[np.ndarray, list[np.ndarray]]:
    """One pass of the ensemble, in this process: the mean of its geometries (float32, the volume's
    orientation) and the per-patch noise of its first geometry."""
    v = along(np.asarray(volume), p.axis)
    out = np.empty(volume.shape, np.float32)
    out_v = along(out, p.axis)
    sigmas = []
    for tile in tiles(v.shape[0], tile_count, p.geometries):
        out_v[tile.own_first:tile.own_stop], sigma = denoise_tile(v[tile.first:tile.stop], tile, v.shape[0],
                                                                  p.geometries)
        sigmas.append(sigma)
    return out, sigmas


def combine(estimates: list[np.ndarray], ensemble: tuple[Pass, ...] = ENSEMBLE) -> np.ndarray:
    """The ensemble's mean from its passes' means (each weighs as many geometries as it has).

    Elementwise, so a slice of the inputs gives that slice of the result,
    whatever the chunking.
    """
    weights = [len(p.geometries) for p in ensemble]
    total = sum(w * np.asarray(e, np.float64) for w, e in zip(weights, estimates))
    return (total / sum(weights)).astype(np.float32)


def denoise(volume: np.ndarray, tile_count: int = 1,
            ensemble: tuple[Pass, ...] = ENSEMBLE) -> tuple[np.ndarray, dict]:
    """Denoise a (slices, rows, cols) HU volume in this process; returns it (float32) and the noise estimate.

    ``tile_count`` only changes how the work is cut, never the result.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"expected a (slices, rows, cols) volume, got shape {volume.shape}")
    estimates, noise = [], None
    for p in ensemble:
        estimate, sigmas = denoise_pass(volume, p, tile_count)
        estimates.append(estimate)
        noise = noise if noise is not None else sigmas   # the first pass's patches estimate the noise
    return combine(estimates, ensemble), noise_summary(noise)
