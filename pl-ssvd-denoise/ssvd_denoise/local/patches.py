"""Local SVD denoising: SVDs of small patches across neighbouring slices.

The slices of a CT series are not a low-rank family: anatomy moves from
slice to slice, so a global rank cut removes anatomy and paints in other
slices' structure. A small in-plane patch followed through a few
neighbouring slices *is* nearly low rank, and the noise is not. This module
denoises such patches one by one, the way MP-PCA does for diffusion MRI
(Veraart et al. 2016, dipy's ``localpca``):

1. For a patch of ``p × p`` pixels over ``L`` slices, form the matrix X
   (p² × L, one column per slice).
2. Take the noise from the series' measured model (:mod:`ctsvd_common.noise`):
   σ at the patch from the σ map, and the correlation of the noise along
   the L slices and within the p × p plane. CT noise is shared between
   neighbouring slices: a white-noise law (Marchenko–Pastur) reads that
   shared noise as signal and keeps it. So X is whitened along its L
   columns, X·T^(−1/2) with T the noise's correlation between them, and the
   in-plane correlation of its rows enters as their effective number,
   n_eff = (tr C)² / tr C², C the rows' noise correlation: correlated rows
   spread the noise's singular values as fewer independent ones would.
3. Shrink the whitened singular values with the Gavish–Donoho optimal
   shrinker for Frobenius loss at that σ and β = L / n_eff, and rebuild the
   patch, coloured back by T^(1/2).
4. Patches overlap (stride ``s`` in-plane, ``zs`` across slices); each
   voxel is the weighted mean of its estimates, weights 1 / (1 + rank kept),
   so confident low-rank patches count more.
5. The estimate is made for a few patch geometries, followed across slices
   and across rows (:data:`ENSEMBLE`), and averaged: their errors are partly
   independent, and the mean is better than any one.

This is the first of the local denoiser's two stages (:mod:`ssvd_denoise.local`):
its result is the pilot that :mod:`ssvd_denoise.local.wiener` refines.

Everything is deterministic. The volume is processed in **tiles**, slabs of
whole slices: a tile owns a run of output slices, computes every patch that
touches them (patches across a tile's edge are computed by both tiles) and
returns its slices final. Each voxel thus gets the same patches, summed in
the same order, whatever the tiling: one pass over the volume on one machine
and a Spark cluster (:mod:`ssvd_denoise.local.spark`) give identical bytes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
import numpy as np

from ctsvd_common import noise

# Variances below this (HU²) are taken as exactly constant patches: air
# outside the reconstruction circle, padding.
MIN_NOISE_VARIANCE = 1e-6
# The whitening's eigenvalues are floored at this fraction of 1 (the noise's own variance): a
# noise correlation near 1 between neighbours would otherwise amplify without bound.
MIN_WHITENED_EIGENVALUE = 0.02


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
            "noise": "the series' measured model: sigma map at each patch, patches whitened along the slices "
                     "they follow, in-plane correlation as an effective row count",
            "shrinkage": "Gavish-Donoho, Frobenius loss, at the measured sigma",
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


@dataclass(frozen=True)
class PatchNoise:
    """The noise of one patch shape, for unit σ: ``whiten`` (L × L) makes the columns' noise
    independent, ``colour`` undoes it, and ``beta`` = L / n_eff is the shrinker's aspect ratio."""

    whiten: np.ndarray
    colour: np.ndarray
    beta: float


def patch_noise(model: noise.NoiseModel, axis: int, patch: int, depth: int) -> PatchNoise:
    """The noise of ``patch`` × ``patch`` × ``depth`` patches followed along volume ``axis``."""
    lam, vec = np.linalg.eigh(model.covariance(axis, depth))
    lam = np.maximum(lam, MIN_WHITENED_EIGENVALUE)
    plane = tuple(a for a in (0, 1, 2) if a != axis)
    rows = patch * patch
    n_eff = rows * rows / model.plane_correlation_energy(plane, (patch, patch))
    return PatchNoise((vec / np.sqrt(lam)) @ vec.T, (vec * np.sqrt(lam)) @ vec.T, depth / min(n_eff, rows))


def optimal_shrinkage(y: np.ndarray, beta: float) -> np.ndarray:
    """Gavish–Donoho optimal shrinker for Frobenius loss, on singular values in units of σ·sqrt(rows).

    β is columns / rows; for β > 1 the matrix is read transposed (the shrinker is symmetric in
    that sense), in units of σ·sqrt(columns).
    """
    if beta > 1.0:
        return optimal_shrinkage(y / math.sqrt(beta), 1.0 / beta) * math.sqrt(beta)
    t = (y * y - beta - 1.0) ** 2 - 4.0 * beta
    shrunk = np.sqrt(np.clip(t, 0.0, None)) / np.maximum(y, 1e-12)
    return np.where(y > 1.0 + math.sqrt(beta), shrunk, 0.0)


def denoise_patches(X: np.ndarray, sigma: np.ndarray, pn: PatchNoise) -> tuple[np.ndarray, np.ndarray]:
    """Denoise a batch of patch matrices X (batch, pixels, slices) whose noise is σ (batch,) times
    unit noise of ``pn``'s correlation.

    Returns the estimates and each patch's aggregation weight. The SVD is
    taken through the small slices × slices Gram matrix: with Xw = X·W =
    U S Vᵀ, the estimate U f(S) Vᵀ W⁻¹ equals X · W V diag(f(s)/s) Vᵀ W⁻¹, so
    U is never formed. Squaring costs relative accuracy only far below the
    noise level (s < sqrt(eps)·s_max).
    """
    rows = X.shape[1]
    Xw = np.matmul(X, pn.whiten)
    eigenvalues, V = np.linalg.eigh(np.matmul(Xw.transpose(0, 2, 1), Xw))
    eigenvalues, V = eigenvalues[:, ::-1].clip(0.0), V[:, :, ::-1]          # descending
    s = np.sqrt(eigenvalues)
    sigma = np.sqrt(np.maximum(np.square(sigma), MIN_NOISE_VARIANCE))
    scale = sigma[:, None] * math.sqrt(rows)
    kept = optimal_shrinkage(s / scale, pn.beta) * scale
    factor = np.divide(kept, s, out=np.zeros_like(s), where=s > 0)
    operator = pn.whiten @ np.matmul(V * factor[:, None, :], V.transpose(0, 2, 1)) @ pn.colour
    estimate = np.matmul(X, operator)
    weight = 1.0 / (1.0 + np.count_nonzero(kept, axis=1))
    return estimate, weight


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


@dataclass(frozen=True)
class NoiseField:
    """The series' noise as one pass sees it, with the axis its patches follow first: the σ map
    (HU, on cells of ``cell`` voxels) and the unit noise of each (patch, depth) shape."""

    sigma_map: np.ndarray
    cell: tuple[int, int, int]
    shapes: dict
    offset: tuple[int, int, int] = (0, 0, 0)   # where a view's voxel (0, 0, 0) lies in the pass's axes

    def sigma(self, z: int, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """σ of the cells holding voxels (z, y, x) (y and x broadcast)."""
        return noise.cell_values(self.sigma_map, self.cell,
                                 tuple(np.asarray(c) + o for c, o in zip((z, y, x), self.offset)))


def noise_field(model: noise.NoiseModel, p: Pass, shape: tuple[int, int, int]) -> NoiseField:
    """What pass ``p``'s tiles need of the series' noise ``model`` (the volume's ``shape``)."""
    order = (p.axis, *(a for a in (0, 1, 2) if a != p.axis))
    view = tuple(shape[a] for a in order)
    shapes = {}
    for g in p.geometries:
        patch, depth = min(g.patch, view[1], view[2]), min(g.slices, view[0])
        shapes[(patch, depth)] = patch_noise(model, p.axis, patch, depth)
    return NoiseField(np.transpose(model.sigma_map, order), tuple(model.cell[a] for a in order), shapes)


def denoise_tile(region: np.ndarray, tile: Tile, slices: int, geometries: tuple[Geometry, ...],
                 field: NoiseField) -> np.ndarray:
    """Denoise one tile: its output slices (float32).

    ``region`` holds slices ``[tile.first, tile.stop)`` of the volume, which
    has ``slices`` slices in all; ``field`` is the pass's view of the noise.
    """
    region = np.asarray(region, dtype=np.float64)
    _, rows, cols = region.shape
    out = np.zeros((tile.own_stop - tile.own_first, rows, cols))
    for g in geometries:
        p, depth = min(g.patch, rows, cols), min(g.slices, slices)
        pn = field.shapes[(p, depth)]
        step = min(g.stride, p)   # a patch clipped to a small image must not leave gaps between patches
        ys, xs = starts(rows, p, step), starts(cols, p, step)
        sums, weights = np.zeros(region.shape), np.zeros(region.shape)
        for z in _touching(slices, g, tile.own_first, tile.own_stop):
            slab = region[z - tile.first:z - tile.first + depth]
            zz = slice(z - tile.first, z - tile.first + depth)
            # Every patch of a row of patches at once, (patches, p², depth): a strided view, one copy.
            windows = np.lib.stride_tricks.sliding_window_view(slab, p, axis=2)[:, :, xs]   # (depth, rows, n, p)
            for y in ys:
                # One batched SVD for every patch of this row of patches.
                X = windows[:, y:y + p].transpose(2, 1, 3, 0).reshape(len(xs), p * p, depth)
                sigma = field.sigma(z + depth // 2, y + p // 2, np.asarray(xs) + p // 2)
                estimate, weight = denoise_patches(X, sigma, pn)
                patches = (estimate * weight[:, None, None]).transpose(0, 2, 1).reshape(len(xs), depth, p, p)
                add_row(sums[zz, y:y + p], weights[zz, y:y + p], patches, weight, xs, step)
        own = slice(tile.own_first - tile.first, tile.own_stop - tile.first)
        out += sums[own] / weights[own]
    out /= len(geometries)
    return out.astype(np.float32)


def along(volume: np.ndarray, axis: int) -> np.ndarray:
    """A view of ``volume`` with ``axis`` first: the axis a pass's patches follow."""
    return np.moveaxis(volume, axis, 0)


def denoise_pass(volume: np.ndarray, p: Pass, model: noise.NoiseModel, tile_count: int = 1) -> np.ndarray:
    """One pass of the ensemble, in this process: the mean of its geometries (float32, the volume's
    orientation)."""
    v = along(np.asarray(volume), p.axis)
    out = np.empty(volume.shape, np.float32)
    out_v = along(out, p.axis)
    field = noise_field(model, p, volume.shape)
    for tile in tiles(v.shape[0], tile_count, p.geometries):
        out_v[tile.own_first:tile.own_stop] = denoise_tile(v[tile.first:tile.stop], tile, v.shape[0],
                                                           p.geometries, field)
    return out


def combine(estimates: list[np.ndarray], ensemble: tuple[Pass, ...] = ENSEMBLE) -> np.ndarray:
    """The ensemble's mean from its passes' means (each weighs as many geometries as it has).

    Elementwise, so a slice of the inputs gives that slice of the result,
    whatever the chunking.
    """
    weights = [len(p.geometries) for p in ensemble]
    total = sum(w * np.asarray(e, np.float64) for w, e in zip(weights, estimates))
    return (total / sum(weights)).astype(np.float32)


def denoise(volume: np.ndarray, model: noise.NoiseModel, tile_count: int = 1,
            ensemble: tuple[Pass, ...] = ENSEMBLE) -> np.ndarray:
    """Denoise a (slices, rows, cols) HU volume in this process with its measured noise ``model``
    (float32). ``tile_count`` only changes how the work is cut, never the result.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"expected a (slices, rows, cols) volume, got shape {volume.shape}")
    return combine([denoise_pass(volume, p, model, tile_count) for p in ensemble], ensemble)
