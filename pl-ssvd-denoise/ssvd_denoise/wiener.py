"""The local denoiser's second stage: collaborative Wiener filtering in an HOSVD basis.

The first stage (:mod:`ssvd_denoise.localsvd`) keeps, in each patch, the
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
   empirical Wiener factor c_pilot² / (c_pilot² + σ²) and transformed back.
   σ² is the variance of (noisy − pilot) over the group, times
   :data:`NOISE_FACTOR`.
4. Every member of every group is put back, weighted by 1 / (σ² Σ f²) (the
   inverse of the estimate's noise, as BM3D weighs its groups), and each
   voxel is the weighted mean of its estimates.

Like the first stage, it runs on tiles (slabs of whole slices): a tile owns
a run of output slices and computes every slab that touches them, in the
same order, so any tiling, in this process or on Spark, gives the same bytes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ssvd_denoise.localsvd import Geometry, Tile, starts, tiles

# σ² of the Wiener factor is the variance of (noisy − pilot) times this. The
# pilot keeps some noise, so its coefficients overstate the signal, and the
# residual understates the noise; a larger σ² corrects both. Measured on two
# simulated low-dose stacks (96 × 256², I0 = 1e4, pilot from the first stage),
# PSNR at 1000 / 403 views: 6 → – / 38.4 dB, 10 → 42.5 / 39.2, 16 → 43.0 /
# 39.7, 25 → 43.3 / 40.2, 40 → 43.4 / 40.5, 100 → 43.1 / 40.5, 250 → 42.3 /
# 39.8. The PSNR peak (40–100) smooths more than a piecewise-smooth phantom
# can punish, and real anatomy has texture: 25 stays below it.
NOISE_FACTOR = 25.0
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
    return {**asdict(settings), "noise_factor": NOISE_FACTOR,
            "basis": "HOSVD of the pilot's group (slices, rows, columns, members)",
            "shrinkage": "empirical Wiener, sigma^2 = noise_factor x var(noisy - pilot) over the group",
            "aggregation": "weights 1 / (sigma^2 x sum of squared Wiener factors)"}


# --------------------------------------------------------------------------- block matching


def _window_sums(a: np.ndarray, size: int, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """out[i, j] = a[ys[i]:ys[i]+size, xs[j]:xs[j]+size].sum(): separable running sums, the second
    only over the rows asked for."""
    rows = np.pad(a, ((1, 0), (0, 0))).cumsum(0)
    bands = rows[ys + size] - rows[ys]
    cols = np.pad(bands, ((0, 0), (1, 0))).cumsum(1)
    return cols[:, xs + size] - cols[:, xs]


def match(pilot: np.ndarray, ys: np.ndarray, xs: np.ndarray, s: Settings) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners (rows, cols), each (references, group), of every reference patch's group.

    ``pilot`` is one slab (slices, rows, cols); the references sit at ``ys`` × ``xs``. A patch's
    distance to a candidate is their squared difference summed over the slab's slices; the
    reference itself (distance 0) is always a member. Ties go to the lower offset index.
    """
    _, rows, cols = pilot.shape
    offsets = np.array([(dy, dx) for dy in range(-s.search, s.search + 1) for dx in range(-s.search, s.search + 1)])
    distance = np.full((len(offsets), len(ys), len(xs)), np.inf)
    for o, (dy, dx) in enumerate(offsets):
        y0, y1, x0, x1 = max(0, -dy), min(rows, rows - dy), max(0, -dx), min(cols, cols - dx)
        d2 = np.zeros((rows, cols))
        d2[y0:y1, x0:x1] = np.square(pilot[:, y0:y1, x0:x1] - pilot[:, y0 + dy:y1 + dy, x0 + dx:x1 + dx]).sum(0)
        inside = ((ys + dy >= 0) & (ys + dy + s.patch <= rows))[:, None] & \
                 ((xs + dx >= 0) & (xs + dx + s.patch <= cols))[None, :]
        distance[o] = np.where(inside, _window_sums(d2, s.patch, ys, xs), np.inf)
    # The reference first, whatever ties flat regions make: every pixel must be some group's member.
    distance[len(offsets) // 2] = -1.0
    group = min(s.group, len(offsets))
    best = np.argsort(distance.reshape(len(offsets), -1), axis=0, kind="stable")[:group].T   # (refs, group)
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


def filter_groups(noisy: np.ndarray, pilot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Wiener-filter a batch of groups (batch, slices, patch, patch, group) in the pilot's HOSVD basis.

    Returns the estimates (same shape) and each group's aggregation weight.
    """
    sigma2 = np.var(noisy - pilot, axis=(1, 2, 3, 4)).astype(np.float64) * NOISE_FACTOR
    bases = hosvd_bases(pilot)
    power = np.square(transform(pilot, bases))
    factor = power / (power + sigma2.reshape(-1, 1, 1, 1, 1).astype(power.dtype) + 1e-12)
    estimate = transform(transform(noisy, bases) * factor, bases, inverse=True)
    weight = 1.0 / (sigma2 * np.square(factor).sum(axis=(1, 2, 3, 4), dtype=np.float64) + 1e-12)
    return estimate, weight


def filter_slab(noisy: np.ndarray, pilot: np.ndarray, s: Settings = SETTINGS) -> tuple[np.ndarray, np.ndarray]:
    """One slab (slices, rows, cols) of noisy and pilot: the weighted sums of its estimates and
    their weights, both shaped like the slab."""
    depth, rows, cols = noisy.shape
    p = min(s.patch, rows, cols)
    s = Settings(p, depth, s.stride, s.slab_stride, s.search, s.group)
    corner_y, corner_x = match(pilot, np.array(starts(rows, p, s.stride)), np.array(starts(cols, p, s.stride)), s)
    offsets = np.arange(p)
    plane = np.arange(depth).reshape(1, depth, 1, 1, 1) * rows
    sums, weights = np.zeros(noisy.size), np.zeros(noisy.size)
    for a in range(0, len(corner_y), BATCH):
        gy = (corner_y[a:a + BATCH, :, None] + offsets)[:, :, :, None]     # (batch, group, p, 1)
        gx = (corner_x[a:a + BATCH, :, None] + offsets)[:, :, None, :]     # (batch, group, 1, p)
        # (slices, batch, group, p, p) → (batch, slices, p, p, group)
        take = lambda v: np.ascontiguousarray(v[:, gy, gx].transpose(1, 0, 3, 4, 2), np.float32)
        estimate, weight = filter_groups(take(noisy), take(pilot))
        index = ((plane + gy.transpose(0, 2, 3, 1)[:, None]) * cols + gx.transpose(0, 2, 3, 1)[:, None]).ravel()
        w = np.broadcast_to(weight.reshape(-1, 1, 1, 1, 1), estimate.shape)
        sums += np.bincount(index, (estimate * w).ravel(), noisy.size)
        weights += np.bincount(index, w.ravel(), noisy.size)
    return sums.reshape(noisy.shape), weights.reshape(noisy.shape)


# --------------------------------------------------------------------------- tiles and volumes


def denoise_tile(noisy: np.ndarray, pilot: np.ndarray, tile: Tile, slices: int,
                 s: Settings = SETTINGS) -> np.ndarray:
    """A tile's output slices (float32) from its input slices of noisy and pilot (``[tile.first,
    tile.stop)`` of a volume of ``slices`` slices)."""
    depth = min(s.slices, slices)
    sums, weights = np.zeros(noisy.shape), np.zeros(noisy.shape)
    for z in starts(slices, depth, s.slab_stride):
        if z + depth <= tile.own_first or z >= tile.own_stop:
            continue
        zz = slice(z - tile.first, z - tile.first + depth)
        slab_sums, slab_weights = filter_slab(noisy[zz], pilot[zz], s)
        sums[zz] += slab_sums
        weights[zz] += slab_weights
    own = slice(tile.own_first - tile.first, tile.own_stop - tile.first)
    return (sums[own] / weights[own]).astype(np.float32)


def denoise(volume: np.ndarray, pilot: np.ndarray, tile_count: int = 1, s: Settings = SETTINGS) -> np.ndarray:
    """The second stage over a whole (slices, rows, cols) volume in this process (float32).

    ``tile_count`` only changes how the work is cut, never the result.
    """
    out = np.empty(volume.shape, np.float32)
    for tile in tiles(volume.shape[0], tile_count, (s.geometry,)):
        out[tile.own_first:tile.own_stop] = denoise_tile(volume[tile.first:tile.stop], pilot[tile.first:tile.stop],
                                                         tile, volume.shape[0], s)
    return out
