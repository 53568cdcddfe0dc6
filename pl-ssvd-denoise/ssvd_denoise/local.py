"""The local denoiser: SVDs of small patches, in two stages, against the series' measured noise.

0. :func:`ctsvd_common.noise.estimate` measures the series' noise: a σ map,
   the in-plane NPS and the correlation between slices.
1. :mod:`ssvd_denoise.localsvd` denoises patches followed across
   neighbouring slices (and across rows), each by its own SVD, whitened
   against the measured correlation and shrunk at the measured σ: the *pilot*.
2. :mod:`ssvd_denoise.wiener` groups similar patches of the pilot, takes
   each group's higher-order SVD and Wiener-filters the noisy groups in it,
   each coefficient against its own noise variance from the model, scaled by
   a strength μ that :func:`choose_strength` picks for this series by SURE.

This module runs both stages in this process; :mod:`ssvd_denoise.localspark`
runs them on Spark, with the same bytes (the model and μ are found on the
driver and handed to every task).
"""

from __future__ import annotations

import numpy as np

from ctsvd_common import noise
from ssvd_denoise import localsvd, wiener

# SURE's grid of strengths μ (doubling), the crops it looks at (slices, rows, cols), its noise
# draw's seed and the size of the Monte-Carlo step (× the noise).
STRENGTHS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
SURE_CROP = (24, 160, 160)
SURE_CROPS = 2
SURE_SEED = 20261207
SURE_STEP = 0.3
# Slices smaller than this either way hold too few voxels to measure a noise from: left as they are.
MIN_IN_PLANE = 8


def parameters() -> dict:
    """Everything that shapes the result, as ``local.json`` records it."""
    return {"stage 1 (pilot)": localsvd.parameters(), "stage 2 (collaborative Wiener)": wiener.parameters()}


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
    risk = np.zeros(len(STRENGTHS))
    for k, crop in enumerate(sure_crops(volume.shape)):
        y = np.asarray(volume[crop], np.float64)
        region = noise.NoiseModel(model.sigma_map, model.cell, model.shape, model.nps, model.slice_correlation,
                                  model.rois)
        grid = np.meshgrid(*(np.arange(c.start, c.stop) for c in crop), indexing="ij")
        sigma = model.sigma_at(*grid)
        draw = noise.synthesize(y.shape, sigma, model.nps, model.slice_correlation, seed=SURE_SEED + k)
        local_model = _cropped(region, crop)
        outs = []
        for x in (y, y + SURE_STEP * draw):
            pilot = localsvd.denoise(x.astype(np.float32), local_model)
            outs.append(wiener.denoise_at(x, pilot, local_model, STRENGTHS))
        divergence = np.sum(draw * (outs[1] - outs[0]), axis=(1, 2, 3)) / SURE_STEP
        risk += np.sum(np.square(y - outs[0]), axis=(1, 2, 3)) + 2 * divergence
    best = int(np.argmin(risk))
    return STRENGTHS[best], {
        "strength": STRENGTHS[best],
        "why": "least Stein's unbiased risk (Monte-Carlo SURE through both stages) on the crops, "
               "over the grid",
        "grid": list(STRENGTHS), "crops": [[c.start, c.stop] for c in sure_crops(volume.shape)[0]],
        "relative_risk": [round(float(r / abs(risk[best])), 4) for r in risk],
        "at_grid_edge": best in (0, len(STRENGTHS) - 1)}


def _cropped(model: noise.NoiseModel, crop: tuple[slice, slice, slice]) -> noise.NoiseModel:
    """``model`` as seen from a crop: its σ map resampled on the crop's own cells."""
    shape = tuple(c.stop - c.start for c in crop)
    cells = [np.arange(c.start, c.stop, n) for c, n in zip(crop, model.cell)]
    sigma = model.sigma_at(*np.meshgrid(*cells, indexing="ij"))
    return noise.NoiseModel(sigma, model.cell, shape, model.nps, model.slice_correlation, model.rois)


def denoise(volume: np.ndarray, tile_count: int = 1) -> tuple[np.ndarray, dict]:
    """Denoise a (slices, rows, cols) HU volume: the result (float32) and what was measured and
    chosen (``local.json``'s ``noise`` and ``choices``). ``tile_count`` only changes how the work
    is cut, never the result."""
    volume = np.asarray(volume)
    if volume.ndim != 3 or min(volume.shape) < 2:
        raise ValueError(f"expected a (slices, rows, cols) volume, 2 or more each way, got shape {volume.shape}")
    if min(volume.shape[1:]) < MIN_IN_PLANE:
        return volume.astype(np.float32), too_small(volume.shape)
    model = noise.estimate(volume)
    strength, why = choose_strength(volume, model)
    pilot = localsvd.denoise(volume, model, tile_count)
    return wiener.denoise(volume, pilot, model, strength, tile_count), record(model, why)


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
