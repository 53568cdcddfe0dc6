"""The local denoiser: SVDs of small patches, in two stages.

1. :mod:`ssvd_denoise.localsvd` denoises patches followed across
   neighbouring slices (and across rows), each by its own SVD with its own
   Marchenko–Pastur noise estimate: the *pilot*.
2. :mod:`ssvd_denoise.wiener` groups similar patches of the pilot, takes
   each group's higher-order SVD and Wiener-filters the noisy groups in it.

On simulated low-dose stacks (96 × 256², I0 = 1e4; PSNR over [−1024, 1500]
HU) the stages give 41.2 → 43.5 dB at 1000 views (noisy 32.9) and 37.8 →
40.5 dB at 403 views (noisy 28.2); TV 3-D tuned on the reference gives 42.1
and 39.2. ``benchmarks/denoise_quality.py`` measures it against its peers.

:func:`denoise` runs both stages over the whole volume in this process.
:func:`denoise_slab` runs both on one **slab** (a run of whole slices and the
margin its patches read) and returns the slab's final slices: the unit of work
that :mod:`ssvd_denoise.localspark` spreads over Spark and
:func:`denoise_in_slabs` loops over in this process, in bounded memory. Every
way gives the same bytes: each voxel gets the same patches, summed in the same
order, whatever the cut.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from ssvd_denoise import localsvd, wiener


@dataclass(frozen=True)
class Params:
    """What shapes the result: chosen (or measured) once per series on the driver and sent with every
    slab, so a task needs nothing else."""

    ensemble: tuple[localsvd.Pass, ...] = localsvd.ENSEMBLE
    wiener: wiener.Settings = wiener.SETTINGS


PARAMS = Params()


def parameters(params: Params = PARAMS) -> dict:
    """Everything that shapes the result, as ``local.json`` records it."""
    return {"stage 1 (pilot)": localsvd.parameters(params.ensemble),
            "stage 2 (collaborative Wiener)": wiener.parameters(params.wiener)}


def denoise(volume: np.ndarray, tile_count: int = 1) -> tuple[np.ndarray, dict]:
    """Denoise a (slices, rows, cols) HU volume: the result (float32) and the first stage's noise
    estimate (HU). ``tile_count`` only changes how the work is cut, never the result."""
    volume = np.asarray(volume)
    if volume.ndim != 3 or min(volume.shape) < 2:
        raise ValueError(f"expected a (slices, rows, cols) volume, 2 or more each way, got shape {volume.shape}")
    pilot, noise = localsvd.denoise(volume, tile_count)
    return wiener.denoise(volume, pilot, tile_count), noise


# --------------------------------------------------------------------------- slabs


@dataclass(frozen=True)
class Slab:
    """Output slices ``[own_first, own_stop)`` of both stages, made from input slices ``[first, stop)``."""

    index: int
    own_first: int
    own_stop: int
    first: int
    stop: int

    @property
    def slices(self) -> int:
        return self.stop - self.first


@dataclass(frozen=True)
class _Work:
    """How one slab is computed: the pilot's slices, the first pass's tiles, the other passes' windows."""

    pilot: tuple[int, int]
    tiles: dict[int, list[localsvd.Tile]]          # pass index → tiles along slices covering the pilot
    windows: dict[int, tuple[int, int]]            # pass index → slices a pass along rows or columns reads
    wiener: localsvd.Tile


def _slice_window(slices: int, extent: int, first: int, stop: int,
                  geometries: tuple[localsvd.Geometry, ...]) -> tuple[int, int]:
    """The slices ``[y0, y1)`` a pass along rows (or columns) must see for its estimate of slices
    ``[first, stop)`` to be that of the whole series.

    Such a pass moves its patches over the slices as over image rows: on a
    grid ``stride`` apart whose last patch is flush with the end. Seen
    through a window that starts on the grid and ends where a patch of every
    geometry ends (or at the series' end), the window's grid is the series'
    grid, and it holds every patch touching ``[first, stop)``.
    """
    grids = []
    for g in geometries:
        p = min(g.patch, slices, extent)
        step = min(g.stride, p)
        touching = [y for y in localsvd.starts(slices, p, step) if y < stop and y + p > first]
        grids.append((p, step, touching))
    unit = math.lcm(*(step for _, step, _ in grids))
    y0 = min(t[0] for _, _, t in grids) // unit * unit
    y1 = max(t[-1] + p for p, _, t in grids)
    while y1 < slices and any((y1 - p) % step for p, step, _ in grids):
        y1 += 1
    return y0, y1


def _work(shape: tuple[int, int, int], own_first: int, own_stop: int, params: Params) -> _Work:
    slices = shape[0]
    w = localsvd.tile(slices, own_first, own_stop, (params.wiener.geometry,))
    pf, ps = w.first, w.stop
    tiles, windows = {}, {}
    for i, p in enumerate(params.ensemble):
        if p.axis == 0:
            # The pilot's own slices as their own tile, so the noise estimate counts each patch once.
            tiles[i] = [localsvd.tile(slices, a, b, p.geometries)
                        for a, b in ((pf, own_first), (own_first, own_stop), (own_stop, ps)) if b > a]
        else:
            extent = shape[2] if p.axis == 1 else shape[1]
            windows[i] = _slice_window(slices, extent, pf, ps, p.geometries)
    return _Work((pf, ps), tiles, windows, w)


def slabs(shape: tuple[int, int, int], thickness: int, params: Params = PARAMS) -> list[Slab]:
    """Cut the output slices into slabs of ``thickness`` (rounded to whole Wiener slabs).

    A slab's edges fall on the second stage's slab grid, so it needs no
    pilot beyond its own slices; a last slab thinner than one Wiener slab joins
    the one before it, for the same reason.
    """
    if params.ensemble[0].axis != 0:
        raise ValueError("the first pass must follow slices: it gives the noise estimate, counted slab by slab")
    slices = shape[0]
    unit = params.wiener.slab_stride
    thickness = max(unit, thickness // unit * unit)
    edges = list(range(0, slices, thickness)) + [slices]
    if len(edges) > 2 and edges[-1] - edges[-2] < unit:
        del edges[-2]
    out = []
    for a, b in zip(edges, edges[1:]):
        work = _work(shape, a, b, params)
        firsts = [t.first for ts in work.tiles.values() for t in ts] + [y0 for y0, _ in work.windows.values()]
        stops = [t.stop for ts in work.tiles.values() for t in ts] + [y1 for _, y1 in work.windows.values()]
        out.append(Slab(len(out), a, b, min(firsts + [work.wiener.first]), max(stops + [work.wiener.stop])))
    return out


# The stages as ``local.json`` times them, summed over a series' slabs.
STAGES = ("pilot along slices", "pilot along rows", "wiener")


def denoise_slab(region: np.ndarray, slab: Slab, shape: tuple[int, int, int],
                 params: Params = PARAMS) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Both stages on one slab: its output slices (float32), the first pass's per-patch noise (HU) of
    the patches starting in them, and seconds per stage.

    ``region`` holds slices ``[slab.first, slab.stop)`` of a volume of ``shape``.
    """
    slices = shape[0]
    work = _work(shape, slab.own_first, slab.own_stop, params)
    pf, ps = work.pilot
    at = lambda z: z - slab.first   # a volume slice's index in the region
    seconds = dict.fromkeys(STAGES, 0.0)
    estimates, noise = [], np.zeros(0)
    for i, p in enumerate(params.ensemble):
        t0 = time.perf_counter()
        if p.axis == 0:
            estimate = np.empty((ps - pf, *shape[1:]), np.float32)
            for t in work.tiles[i]:
                planes, sigma = localsvd.denoise_tile(region[at(t.first):at(t.stop)], t, slices, p.geometries)
                estimate[t.own_first - pf:t.own_stop - pf] = planes
                if i == 0 and t.own_first == slab.own_first:
                    noise = sigma
        else:
            y0, y1 = work.windows[i]
            length = shape[p.axis]
            view = localsvd.along(region, p.axis)[:, at(y0):at(y1)]
            planes, _ = localsvd.denoise_tile(view, localsvd.tile(length, 0, length, p.geometries), length,
                                              p.geometries)
            estimate = np.moveaxis(planes[:, pf - y0:ps - y0], 0, p.axis)
        estimates.append(estimate)
        seconds[STAGES[0] if p.axis == 0 else STAGES[1]] += time.perf_counter() - t0
    pilot = localsvd.combine(estimates, params.ensemble)
    del estimates
    t0 = time.perf_counter()
    w = work.wiener
    out = wiener.denoise_tile(region[at(w.first):at(w.stop)], pilot, w, slices, params.wiener)
    seconds[STAGES[2]] = time.perf_counter() - t0
    return out, noise, seconds


def denoise_in_slabs(volume: np.ndarray, thickness: int, params: Params = PARAMS) -> tuple[np.ndarray, dict]:
    """:func:`denoise` slab by slab in this process: the same bytes, in memory bounded by ``thickness``."""
    out = np.empty(volume.shape, np.float32)
    sigmas = []
    for slab in slabs(volume.shape, thickness, params):
        out[slab.own_first:slab.own_stop], sigma, _ = denoise_slab(
            np.asarray(volume[slab.first:slab.stop]), slab, volume.shape, params)
        sigmas.append(sigma)
    return out, localsvd.noise_summary(sigmas)
