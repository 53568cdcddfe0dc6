"""The local denoiser: SVDs of small patches, in two stages, against the series' measured noise.

0. :func:`ctsvd_common.noise.estimate` measures the series' noise: a σ map,
   the in-plane NPS and the correlation between slices (:func:`measured`).
1. :mod:`ssvd_denoise.local.patches` denoises patches followed across
   neighbouring slices (and across rows), each by its own SVD, whitened
   against the measured correlation and shrunk at the measured σ: the *pilot*.
2. :mod:`ssvd_denoise.local.wiener` groups similar patches of the pilot, takes
   each group's higher-order SVD and Wiener-filters the noisy groups in it,
   each coefficient against its own noise variance from the model, scaled by
   a strength μ that :func:`choose_strength` picks for this series by SURE.

:func:`denoise` runs both stages over the whole volume in this process.
:func:`denoise_slab` runs both on one **slab** (a run of whole slices and the
margin its patches read) and returns the slab's final slices: the unit of work
that :mod:`ssvd_denoise.local.spark` spreads over Spark and
:func:`denoise_in_slabs` loops over in this process, in bounded memory. The
model and μ are found once, on the driver, and travel in :class:`Params`.
Every way gives the same bytes: each voxel gets the same patches, summed in
the same order, whatever the cut.
"""

from __future__ import annotations

import dataclasses
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ctsvd_common import noise, resources
from ssvd_denoise.local import patches, wiener

# SURE's grid of strengths μ (doubling), the crops it looks at (slices, rows, cols), its noise
# draw's seed and the size of its Monte-Carlo step, in units of the noise: large enough to move
# components across stage 1's hard threshold, which an infinitesimal step never does (at 0.05 σ,
# SURE chose μ = 4 on a simulated scan whose best was 16; at 0.3 σ, 8).
STRENGTHS = tuple(2.0 ** k for k in range(9))      # 1 … 256
SURE_CROP = (24, 160, 160)
SURE_CROPS = 2
SURE_SEED = 20261207
SURE_STEP = 0.3
# Slices smaller than this either way hold too few voxels to measure a noise from: left as they are.
MIN_IN_PLANE = 8


@dataclass(frozen=True)
class Params:
    """What shapes the result: chosen (or measured) once per series on the driver and sent with every
    slab, so a task needs nothing else."""

    ensemble: tuple[patches.Pass, ...] = patches.ENSEMBLE
    wiener: wiener.Settings = wiener.SETTINGS
    model: noise.NoiseModel | None = None     # the series' measured noise (:func:`measured`)
    strength: float = 1.0                      # stage 2's μ (:func:`choose_strength`)


PARAMS = Params()


def parameters(params: Params = PARAMS) -> dict:
    """Everything that shapes the result, as ``local.json`` records it."""
    return {"stage 1 (pilot)": patches.parameters(params.ensemble),
            "stage 2 (collaborative Wiener)": wiener.parameters(params.wiener)}


def sure_crops(shape: tuple[int, int, int]) -> list[tuple[slice, slice, slice]]:
    """Where SURE looks: :data:`SURE_CROPS` crops spread along the series, centred in-plane."""
    size = [min(c, n) for c, n in zip(SURE_CROP, shape)]
    y0, x0 = (shape[1] - size[1]) // 2, (shape[2] - size[2]) // 2
    count = min(SURE_CROPS, max(1, shape[0] // size[0]))
    zs = sorted({round((i + 1) * (shape[0] - size[0]) / (count + 1)) for i in range(count)})
    return [(slice(z, z + size[0]), slice(y0, y0 + size[1]), slice(x0, x0 + size[2])) for z in zs]


def choose_strength(volume: np.ndarray, model: noise.NoiseModel) -> tuple[float, dict]:
    """Stage 2's strength μ for this series, by Monte-Carlo SURE over the whole two-stage denoiser.

    For noise of covariance C, Stein's unbiased risk estimate of f(y) is ‖y − f(y)‖² − tr C +
    2 tr(C·∂f/∂y), and tr(C·∂f/∂y) ≈ nᵀ(f(y + εn) − f(y))/ε for one draw n of the measured noise
    (Ramani, Blu and Unser, IEEE TIP 2008; n drawn with covariance C makes it C's trace, not the
    identity's). Both stages run on a few crops, at every μ of a doubling grid; the μ of least
    summed risk is taken. The pilot is re-made from the perturbed input too: it shares the noise,
    and holding it fixed would under-count what the filter passes.
    """
    crops = sure_crops(volume.shape)
    inputs = []
    for k, crop in enumerate(crops):
        y = np.asarray(volume[crop], np.float64)
        grid = np.meshgrid(*(np.arange(c.start, c.stop) for c in crop), indexing="ij")
        draw = noise.synthesize(y.shape, model.sigma_at(*grid), model.nps, model.slice_correlation,
                                seed=SURE_SEED + k)
        inputs.append((y, draw, _cropped(model, crop)))
    both_stages = lambda x, m: wiener.denoise_at(x, patches.denoise(x.astype(np.float32), m), m, STRENGTHS)
    # The four runs are independent, and numpy's heavy calls release the GIL: threads share the
    # driver's cores (idle until the slabs start) without copying the crops.
    with ThreadPoolExecutor(max_workers=min(2 * len(crops), resources.available_cpus())) as pool:
        outs = list(pool.map(lambda job: both_stages(*job),
                             [(x, m) for y, draw, m in inputs for x in (y, y + SURE_STEP * draw)]))
    risk = np.zeros(len(STRENGTHS))
    for k, (y, draw, _) in enumerate(inputs):
        plain, perturbed = outs[2 * k], outs[2 * k + 1]
        divergence = np.sum(draw * (perturbed - plain), axis=(1, 2, 3)) / SURE_STEP
        risk += np.sum(np.square(y - plain), axis=(1, 2, 3)) + 2 * divergence
    best = int(np.argmin(risk))
    return STRENGTHS[best], {
        "strength": STRENGTHS[best],
        "why": "least Stein's unbiased risk (Monte-Carlo SURE through both stages) on the crops, "
               "over the grid",
        "grid": list(STRENGTHS), "crops": [[[c.start, c.stop] for c in crop] for crop in sure_crops(volume.shape)],
        "relative_risk": [round(float(r / abs(risk[best])), 4) for r in risk],
        "at_grid_edge": best in (0, len(STRENGTHS) - 1)}


def _cropped(model: noise.NoiseModel, crop: tuple[slice, slice, slice]) -> noise.NoiseModel:
    """``model`` as seen from a crop: its σ map resampled on the crop's own cells."""
    shape = tuple(c.stop - c.start for c in crop)
    cells = [np.arange(c.start, c.stop, n) for c, n in zip(crop, model.cell)]
    sigma = model.sigma_at(*np.meshgrid(*cells, indexing="ij"))
    return noise.NoiseModel(sigma, model.cell, shape, model.nps, model.slice_correlation, model.rois)


def measured(volume: np.ndarray, base: Params = PARAMS) -> tuple[Params, dict]:
    """The series' noise model and stage 2's strength, in the parameters every slab gets, and what
    ``local.json`` records of them (``noise`` and ``choices``). ``model`` is None for a series too
    small to measure (left as it is)."""
    if min(volume.shape[1:]) < MIN_IN_PLANE:
        return base, too_small(volume.shape)
    model = noise.estimate(volume)
    strength, why = choose_strength(volume, model)
    return dataclasses.replace(base, model=model, strength=strength), record(model, why)


def denoise(volume: np.ndarray, tile_count: int = 1) -> tuple[np.ndarray, dict]:
    """Denoise a (slices, rows, cols) HU volume: the result (float32) and what was measured and
    chosen (``local.json``'s ``noise`` and ``choices``). ``tile_count`` only changes how the work
    is cut, never the result."""
    volume = np.asarray(volume)
    if volume.ndim != 3 or min(volume.shape) < 2:
        raise ValueError(f"expected a (slices, rows, cols) volume, 2 or more each way, got shape {volume.shape}")
    params, found = measured(volume)
    if params.model is None:
        return volume.astype(np.float32), found
    pilot = patches.denoise(volume, params.model, tile_count)
    return wiener.denoise(volume, pilot, params.model, params.strength, tile_count), found


def too_small(shape: tuple[int, ...]) -> dict:
    """The record of a series too small in-plane to measure its noise, left as it is."""
    reason = (f"slices of {shape[1]} x {shape[2]} pixels: too small to measure the noise from "
              f"(under {MIN_IN_PLANE} either way), so the series is left as it is")
    return {"noise": {"sigma_hu": {"p10": 0.0, "median": 0.0, "p90": 0.0}, "slice_correlation": [1.0, 0.0],
                      "unmeasured": reason},
            "choices": {"stage 2 strength": {"strength": 0.0, "why": reason}}}


def record(model: noise.NoiseModel, strength: dict) -> dict:
    """What ``local.json`` says of the noise and of the choices made from it."""
    return {"noise": model.summary(), "choices": {"stage 2 strength": strength}}


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
    tiles: dict[int, list[patches.Tile]]          # pass index → tiles along slices covering the pilot
    windows: dict[int, tuple[int, int]]            # pass index → slices a pass along rows or columns reads
    wiener: patches.Tile


def _slice_window(slices: int, extent: int, first: int, stop: int,
                  geometries: tuple[patches.Geometry, ...]) -> tuple[int, int]:
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
        touching = [y for y in patches.starts(slices, p, step) if y < stop and y + p > first]
        grids.append((p, step, touching))
    unit = math.lcm(*(step for _, step, _ in grids))
    y0 = min(t[0] for _, _, t in grids) // unit * unit
    y1 = max(t[-1] + p for p, _, t in grids)
    while y1 < slices and any((y1 - p) % step for p, step, _ in grids):
        y1 += 1
    return y0, y1


def _work(shape: tuple[int, int, int], own_first: int, own_stop: int, params: Params) -> _Work:
    slices = shape[0]
    w = patches.tile(slices, own_first, own_stop, (params.wiener.geometry,))
    pf, ps = w.first, w.stop
    tiles, windows = {}, {}
    for i, p in enumerate(params.ensemble):
        if p.axis == 0:
            # The pilot's own slices as their own tile, so the noise estimate counts each patch once.
            tiles[i] = [patches.tile(slices, a, b, p.geometries)
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
                 params: Params) -> tuple[np.ndarray, dict[str, float]]:
    """Both stages on one slab: its output slices (float32) and seconds per stage.

    ``region`` holds slices ``[slab.first, slab.stop)`` of a volume of ``shape``; ``params`` carry
    the series' measured noise (:func:`measured`). A series too small to measure is left as it is.
    """
    if params.model is None:
        return np.asarray(region[slab.own_first - slab.first:slab.own_stop - slab.first], np.float32), \
            dict.fromkeys(STAGES, 0.0)
    slices = shape[0]
    work = _work(shape, slab.own_first, slab.own_stop, params)
    pf, ps = work.pilot
    at = lambda z: z - slab.first   # a volume slice's index in the region
    seconds = dict.fromkeys(STAGES, 0.0)
    estimates = []
    for i, p in enumerate(params.ensemble):
        t0 = time.perf_counter()
        field = patches.noise_field(params.model, p, shape)
        if p.axis == 0:
            estimate = np.empty((ps - pf, *shape[1:]), np.float32)
            for t in work.tiles[i]:
                planes = patches.denoise_tile(region[at(t.first):at(t.stop)], t, slices, p.geometries, field)
                estimate[t.own_first - pf:t.own_stop - pf] = planes
        else:
            y0, y1 = work.windows[i]
            length = shape[p.axis]
            view = patches.along(region, p.axis)[:, at(y0):at(y1)]
            planes = patches.denoise_tile(view, patches.tile(length, 0, length, p.geometries), length,
                                           p.geometries, dataclasses.replace(field, offset=(0, y0, 0)))
            estimate = np.moveaxis(planes[:, pf - y0:ps - y0], 0, p.axis)
        estimates.append(estimate)
        seconds[STAGES[0] if p.axis == 0 else STAGES[1]] += time.perf_counter() - t0
    pilot = patches.combine(estimates, params.ensemble)
    del estimates
    t0 = time.perf_counter()
    w = work.wiener
    out = wiener.denoise_tile(region[at(w.first):at(w.stop)], pilot, w, slices,
                              wiener.noise_view(params.model, slices, params.wiener), params.strength, params.wiener)
    seconds[STAGES[2]] = time.perf_counter() - t0
    return out, seconds


def denoise_in_slabs(volume: np.ndarray, thickness: int, params: Params) -> np.ndarray:
    """:func:`denoise` slab by slab in this process, with ``params`` from :func:`measured`: the same
    bytes, in memory bounded by ``thickness``."""
    out = np.empty(volume.shape, np.float32)
    for slab in slabs(volume.shape, thickness, params):
        out[slab.own_first:slab.own_stop], _ = denoise_slab(
            np.asarray(volume[slab.first:slab.stop]), slab, volume.shape, params)
    return out
