"""The local denoiser's second stage: collaborative Wiener filtering in an HOSVD basis.

The first stage (:mod:`ssvd_denoise.local.patches`) keeps, in each patch, the
components that stand above the noise; but the components it keeps still
carry their in-plane noise, and it never looks beside a patch for others
like it. This stage uses its output as a *pilot* (BM3D's second step, with
SVDs where BM3D has fixed transforms; Rajwade et al. 2013 did the same with
the HOSVD for 2-D images):

1. The pilot is cut into slabs of ``slices`` slices. In each slab, for every
   reference patch (``patch`` × ``patch`` pixels through the slab, ``stride``
   pixels apart) the ``group`` most similar patches of the pilot within
   ±``search`` pixels are found (block matching on the squared difference).
2. The group, a tensor of slices × rows × columns × members, gets a basis
   per mode from the *pilot's* group: the eigenvectors of each unfolding's
   Gram matrix (the higher-order SVD). Four small SVDs, not one large one.
3. In that basis the noisy group's coefficients c are shrunk by the
   empirical Wiener factor c_pilot² / (c_pilot² + σ_c²) and transformed
   back. Each coefficient has its own noise variance σ_c², from the series'
   measured noise model (:mod:`ctsvd_common.noise`), as BM3D does for
   correlated noise (Mäkinen, Azzari and Foi, "Collaborative filtering of
   correlated noise", IEEE TIP 2020): σ² of the σ map at the group, times
   the variance that unit noise of the measured correlation has along the
   coefficient's slice-mode basis vector (uᵀ T u, T the slices'
   correlation) and in-plane basis pair (Σ_f NPS(f) |û(f_y)|² |v̂(f_x)|²).
   Members are taken as independent.
4. Every member of every group is put back, weighted by 1 / Σ σ_c² f² (the
   inverse of the estimate's noise, as BM3D weighs its groups), and each
   voxel is the weighted mean of its estimates.

Like the first stage, it runs on tiles (slabs of whole slices): a tile owns
a run of output slices and computes every slab that touches them, in the
same order, so any tiling, in this process or on Spark, gives the same bytes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ctsvd_common import noise

from ssvd_denoise.local.patches import Geometry, Tile, starts, tiles

# Groups are filtered this many at a time: bounds the memory of one batch
# (each group is slices × patch² × group values, several copies in flight).
BATCH = 512


@dataclass(frozen=True)
class Settings:
    """Reference patches of ``patch`` × ``patch`` pixels through a slab of ``slices`` slices,
    ``stride`` pixels apart, slabs ``slab_stride`` slices apart; ``group`` patches per group,
    matched within ±``search`` pixels."""

    patch: int = 8
    slices: int = 8
    stride: int = 6
    slab_stride: int = 8
    search: int = 5
    group: int = 8

    @property
    def geometry(self) -> Geometry:
        """The slab layout, in the first stage's terms (for tiling)."""
        return Geometry(self.patch, self.slices, self.stride, self.slab_stride)


SETTINGS = Settings()


def parameters(settings: Settings = SETTINGS) -> dict:
    """The parameters that shape the result, as ``local.json`` records them."""
    return {**asdict(settings),
            "basis": "HOSVD of the pilot's group (slices, rows, columns, members)",
            "shrinkage": "empirical Wiener, each coefficient's noise variance from the measured model "
                         "(sigma map x slice correlation x in-plane NPS in the group's basis)",
            "aggregation": "weights 1 / (sum of noise variance x squared Wiener factor)"}


# --------------------------------------------------------------------------- block matching


def _window_sums(rows: np.ndarray, size: int, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """out[i, j] = a[ys[i]:ys[i]+size, xs[j]:xs[j]+size].sum(), from ``rows``, the cumulative sum of a
    down its rows with a zero row on top (separable running sums, the second only over the rows
    asked for)."""
    bands = rows[ys + size] - rows[ys]
    cols = np.pad(bands, ((0, 0), (1, 0))).cumsum(1)
    return cols[:, xs + size] - cols[:, xs]


def match(pilot: np.ndarray, ys: np.ndarray, xs: np.ndarray, s: Settings) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners (rows, cols), each (references, group), of every reference patch's group.

    ``pilot`` is one slab (slices, rows, cols); the references sit at ``ys`` × ``xs``. A patch's
    distance to a candidate is their squared difference summed over the slab's slices; the
    reference itself (distance 0) is always a member. Ties go to the lower offset index.

    Offsets come in opposite pairs: the squared difference for −(dy, dx) at (y, x) is the one for
    (dy, dx) at (y − dy, x − dx), so each pair costs one difference image and one running sum.
    """
    _, rows, cols = pilot.shape
    offsets = np.array([(dy, dx) for dy in range(-s.search, s.search + 1) for dx in range(-s.search, s.search + 1)])
    n = len(offsets)
    distance = np.full((n, len(ys), len(xs)), np.inf)
    for o in range(n // 2 + 1):
        dy, dx = offsets[o]
        y0, y1, x0, x1 = max(0, -dy), min(rows, rows - dy), max(0, -dx), min(cols, cols - dx)
        if y0 >= y1 or x0 >= x1:
            continue   # the shift leaves the image: no candidate there, either way
        d2 = np.zeros((rows, cols))
        d2[y0:y1, x0:x1] = np.square(pilot[:, y0:y1, x0:x1] - pilot[:, y0 + dy:y1 + dy, x0 + dx:x1 + dx]).sum(0)
        running = np.pad(d2, ((1, 0), (0, 0))).cumsum(0)
        for index, (sy, sx), (ry, rx) in ((o, (dy, dx), (ys, xs)), (n - 1 - o, (-dy, -dx), (ys - dy, xs - dx))):
            inside = ((ys + sy >= 0) & (ys + sy + s.patch <= rows))[:, None] & \
                     ((xs + sx >= 0) & (xs + sx + s.patch <= cols))[None, :]
            # Windows of candidates outside the image are clipped into it: their sums are never used.
            sums = _window_sums(running, s.patch, np.clip(ry, 0, rows - s.patch), np.clip(rx, 0, cols - s.patch))
            # A candidate outside the image is never taken (NaN, which sorts last, would be).
            distance[index] = np.where(inside, np.nan_to_num(sums, nan=np.inf), np.inf)
    # The reference first, whatever ties flat regions make: every pixel must be some group's member.
    distance[n // 2] = -1.0
    group = min(s.group, n)
    flat = distance.reshape(n, -1)
    best = np.argsort(flat, axis=0, kind="stable")[:group]
    # An image smaller than the search window may have fewer candidates than members: the
    # reference stands in for the missing ones.
    best = np.where(np.isinf(np.take_along_axis(flat, best, axis=0)), n // 2, best).T   # (refs, group)
    refs_y = np.repeat(ys, len(xs))[:, None]
    refs_x = np.tile(xs, len(ys))[:, None]
    return refs_y + offsets[best, 0], refs_x + offsets[best, 1]


# --------------------------------------------------------------------------- the group filter


def transform(groups: np.ndarray, bases: list[np.ndarray], inverse: bool = False) -> np.ndarray:
    """Each group (batch, n₁, …, n_d) in its bases: coefficients c = g ×₁ u₁ᵀ … ×_d u_dᵀ, or, with
    ``inverse``, the group from its coefficients.

    The last mode is contracted by one batched matmul and rotated to the front, d times, which
    brings the modes back in order with one copy per mode.
    """
    batch = groups.shape[0]
    t = groups
    for u in reversed(bases):
        shape = t.shape
        t = np.matmul(t.reshape(batch, -1, shape[-1]), u.transpose(0, 2, 1) if inverse else u)
        t = t.transpose(0, 2, 1).reshape(batch, shape[-1], *shape[1:-1])
    return t


def hosvd_bases(groups: np.ndarray) -> list[np.ndarray]:
    """One orthonormal basis per mode of each group (batch, n₁, n₂, …): the eigenvectors of the
    mode's unfolding times its transpose."""
    bases = []
    for axis in range(1, groups.ndim):
        unfolded = np.moveaxis(groups, axis, 1).reshape(groups.shape[0], groups.shape[axis], -1)
        bases.append(np.linalg.eigh(np.matmul(unfolded, unfolded.transpose(0, 2, 1)))[1])
    return bases


@dataclass(frozen=True)
class GroupNoise:
    """Unit noise as a group sees it: the correlation of its ``slices`` (depth × depth) and the
    in-plane NPS (N × N, mean 1)."""

    slices: np.ndarray
    nps: np.ndarray


def group_noise(model: noise.NoiseModel, depth: int) -> GroupNoise:
    return GroupNoise(model.covariance(0, depth), model.nps)


def resampled(nps: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """``nps`` on a grid of at least rows × cols frequencies (nearest frequency), so that a basis
    vector's zero-padded DFT is never cut short."""
    ny, nx = max(rows, nps.shape[0]), max(cols, nps.shape[1])
    if (ny, nx) == nps.shape:
        return nps
    iy = np.round(np.fft.fftfreq(ny) * nps.shape[0]).astype(int) % nps.shape[0]
    ix = np.round(np.fft.fftfreq(nx) * nps.shape[1]).astype(int) % nps.shape[1]
    return nps[np.ix_(iy, ix)]


def coefficient_variance(bases: list[np.ndarray], gn: GroupNoise) -> np.ndarray:
    """The variance of unit noise's coefficients in each group's bases: (batch, slices, p, p, 1).

    Along slices, uᵀ T u for each basis vector u; in-plane, for the pair (u, v) of row and column
    basis vectors, (1/N²) Σ_f NPS(f) |û(f_y)|² |v̂(f_x)|² with the DFTs zero-padded to N. Unit
    white noise gives 1 everywhere.
    """
    uz, uy, ux = bases[:3]
    nps = resampled(gn.nps, 2 * uy.shape[1], 2 * ux.shape[1])
    ny, nx = nps.shape
    uzt = uz.transpose(0, 2, 1)
    along = np.sum(np.matmul(uzt, gn.slices) * uzt, axis=2)
    py = np.square(np.abs(np.fft.fft(uy, n=ny, axis=1)))
    px = np.square(np.abs(np.fft.fft(ux, n=nx, axis=1)))
    # (pyᵀ · NPS) · px as two batched matmuls: a three-operand einsum is not contracted pairwise.
    plane = np.matmul(np.matmul(py.transpose(0, 2, 1), nps), px) / (ny * nx)
    return np.clip(along[:, :, None, None] * plane[:, None, :, :], 1e-6, None)[..., None]


def filter_groups(noisy: np.ndarray, pilot: np.ndarray, sigma2: np.ndarray, gn: GroupNoise,
                  strengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Wiener-filter a batch of groups (batch, slices, patch, patch, group) in the pilot's HOSVD basis,
    their noise σ² (batch,) times unit noise of ``gn``'s correlation, at each strength μ.

    Returns the estimates (strengths, batch, …) and the aggregation weights (strengths, batch). The
    estimate is linear in ``noisy`` for a given pilot.
    """
    bases = hosvd_bases(pilot)
    power = np.square(transform(pilot, bases))
    unit = (sigma2.reshape(-1, 1, 1, 1, 1) * coefficient_variance(bases, gn)).astype(power.dtype)
    coefficients = transform(noisy, bases)
    estimates, weights = [], []
    for mu in strengths:
        variance = np.float32(mu) * unit
        factor = power / (power + variance + 1e-12)
        estimates.append(transform(coefficients * factor, bases, inverse=True))
        weights.append(1.0 / (np.sum(variance * np.square(factor), axis=(1, 2, 3, 4), dtype=np.float64) + 1e-12))
    return np.stack(estimates), np.stack(weights)


@dataclass(frozen=True)
class NoiseView:
    """What this stage needs of the series' noise: the σ map (on cells of ``cell`` voxels) and the
    unit noise of a group."""

    sigma_map: np.ndarray
    cell: tuple[int, int, int]
    groups: GroupNoise

    def sigma(self, z: int, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        return noise.cell_values(self.sigma_map, self.cell, (z, y, x))


def noise_view(model: noise.NoiseModel, slices: int, s: Settings = SETTINGS) -> NoiseView:
    """This stage's view of ``model`` for a volume of ``slices`` slices."""
    return NoiseView(model.sigma_map, model.cell, group_noise(model, min(s.slices, slices)))


def filter_slab(noisy: np.ndarray, pilot: np.ndarray, z: int, nv: NoiseView, strengths,
                s: Settings = SETTINGS) -> tuple[np.ndarray, np.ndarray]:
    """One slab (slices, rows, cols) of noisy and pilot, starting at slice ``z`` of the volume: the
    weighted sums of its estimates and their weights, (strengths, slices, rows, cols) each.

    ``noisy`` may hold several volumes to filter with the same groups and factors, stacked on a
    leading axis: their sums come back on that axis, after the strengths'.
    """
    strengths = np.atleast_1d(np.asarray(strengths, float))
    inputs = noisy if noisy.ndim == 4 else noisy[None]
    depth, rows, cols = pilot.shape
    p = min(s.patch, rows, cols)
    s = Settings(p, depth, min(s.stride, p), s.slab_stride, s.search, s.group)   # no gaps on small images
    corner_y, corner_x = match(pilot, np.array(starts(rows, p, s.stride)), np.array(starts(cols, p, s.stride)), s)
    sigma2 = np.square(nv.sigma(z + depth // 2, corner_y[:, 0] + p // 2, corner_x[:, 0] + p // 2))
    offsets = np.arange(p)
    plane = np.arange(depth).reshape(1, depth, 1, 1, 1)
    # Sums are kept pixel-major, (rows, cols, slices) flattened: a batch's groups then land in one
    # band of rows, and each bincount spans that band, not the whole slab.
    size = pilot.size
    sums = np.zeros((len(strengths), len(inputs), size))
    weights = np.zeros((len(strengths), size))
    for a in range(0, len(corner_y), BATCH):
        gy = (corner_y[a:a + BATCH, :, None] + offsets)[:, :, :, None]     # (batch, group, p, 1)
        gx = (corner_x[a:a + BATCH, :, None] + offsets)[:, :, None, :]     # (batch, group, 1, p)
        # (slices, batch, group, p, p) → (batch, slices, p, p, group)
        take = lambda v: np.ascontiguousarray(v[:, gy, gx].transpose(1, 0, 3, 4, 2), np.float32)
        index = ((gy.transpose(0, 2, 3, 1)[:, None] * cols + gx.transpose(0, 2, 3, 1)[:, None]) * depth
                 + plane).ravel()
        first = int(corner_y[a:a + BATCH].min()) * cols * depth
        band = int(corner_y[a:a + BATCH].max() + p) * cols * depth - first
        index -= first
        guide = take(pilot)
        for i, volume in enumerate(inputs):
            estimate, weight = filter_groups(take(volume), guide, sigma2[a:a + BATCH], nv.groups, strengths)
            for j in range(len(strengths)):
                w = np.broadcast_to(weight[j].reshape(-1, 1, 1, 1, 1), estimate[j].shape)
                sums[j, i, first:first + band] += np.bincount(index, (estimate[j] * w).ravel(), band)
                if i == 0:
                    weights[j, first:first + band] += np.bincount(index, w.ravel(), band)
    pixel_major = lambda a: np.moveaxis(a.reshape(*a.shape[:-1], rows, cols, depth), -1, -3)
    sums, weights = pixel_major(sums), pixel_major(weights)
    return (sums if noisy.ndim == 4 else sums[:, 0]), weights


# --------------------------------------------------------------------------- tiles and volumes


def denoise_tile(noisy: np.ndarray, pilot: np.ndarray, tile: Tile, slices: int, nv: NoiseView,
                 strength: float, s: Settings = SETTINGS) -> np.ndarray:
    """A tile's output slices (float32) from its input slices of noisy and pilot (``[tile.first,
    tile.stop)`` of a volume of ``slices`` slices); ``nv`` is the series' noise, ``strength`` μ."""
    depth = min(s.slices, slices)
    sums, weights = np.zeros(noisy.shape), np.zeros(noisy.shape)
    for z in starts(slices, depth, s.slab_stride):
        if z + depth <= tile.own_first or z >= tile.own_stop:
            continue
        zz = slice(z - tile.first, z - tile.first + depth)
        slab_sums, slab_weights = filter_slab(noisy[zz], pilot[zz], z, nv, [strength], s)
        sums[zz] += slab_sums[0]
        weights[zz] += slab_weights[0]
    own = slice(tile.own_first - tile.first, tile.own_stop - tile.first)
    return (sums[own] / weights[own]).astype(np.float32)


def denoise_at(volume: np.ndarray, pilot: np.ndarray, model: noise.NoiseModel, strengths,
               s: Settings = SETTINGS) -> np.ndarray:
    """The second stage over a whole (small) volume at several strengths at once: (strengths, …)
    float64. The groups, bases and coefficients are found once for all of them."""
    strengths = np.atleast_1d(np.asarray(strengths, float))
    depth = min(s.slices, volume.shape[0])
    nv = noise_view(model, volume.shape[0], s)
    sums = np.zeros((len(strengths), *volume.shape))
    weights = np.zeros((len(strengths), *volume.shape))
    for z in starts(volume.shape[0], depth, s.slab_stride):
        slab_sums, slab_weights = filter_slab(volume[z:z + depth], pilot[z:z + depth], z, nv, strengths, s)
        sums[:, z:z + depth] += slab_sums
        weights[:, z:z + depth] += slab_weights
    return sums / weights


def denoise(volume: np.ndarray, pilot: np.ndarray, model: noise.NoiseModel, strength: float,
            tile_count: int = 1, s: Settings = SETTINGS) -> np.ndarray:
    """The second stage over a whole (slices, rows, cols) volume in this process (float32), with the
    series' measured noise ``model`` at ``strength`` μ (see :func:`ssvd_denoise.local.choose_strength`).
    ``tile_count`` only changes how the work is cut, never the result.
    """
    out = np.empty(volume.shape, np.float32)
    nv = noise_view(model, volume.shape[0], s)
    for tile in tiles(volume.shape[0], tile_count, (s.geometry,)):
        out[tile.own_first:tile.own_stop] = denoise_tile(volume[tile.first:tile.stop], pilot[tile.first:tile.stop],
                                                         tile, volume.shape[0], nv, strength, s)
    return out
