"""What benchmarks/denoise_quality.py measures on a denoised volume, with or without a reference.

* :func:`ssim` -- mean SSIM over slices (PSNR is :func:`ctsvd_testdata.lowdose.psnr`);
* :func:`flat_mask` / :func:`edge_mask` -- uniform regions and edges inside the
  object, found automatically from a smoothed image (the reference when
  there is one, the original otherwise);
* :func:`noise_ratio` -- how much noise is left in the uniform regions;
* :func:`edge_loss` -- signal lost at edges: the error at edges beyond the
  noise left there (or, without a reference, what was removed at edges beyond
  what was removed in uniform regions);
* :func:`ghost` -- what a structure present in a few slices adds to the others.
"""

from __future__ import annotations

import math

import numpy as np

from ctsvd_testdata.lowdose import DATA_RANGE_HU, WINDOW_HU

OBJECT_HU = -500.0        # above this (smoothed), a voxel is inside the object
FLAT_PERCENTILE = 25      # uniform: gradient below this percentile of the object's
EDGE_PERCENTILE = 95      # edges: the top 5 % of the object's gradients
CELL = 16                 # in-plane side of the cells noise is measured in


def ssim(test: np.ndarray, reference: np.ndarray) -> float:
    """Mean over slices of SSIM with data range 2524, both clipped to the window."""
    from skimage.metrics import structural_similarity

    lo, hi = WINDOW_HU
    ref = np.clip(reference, lo, hi)
    out = np.clip(test, lo, hi)
    return float(np.mean([structural_similarity(r, o, data_range=DATA_RANGE_HU)
                          for r, o in zip(ref, out)]))


def _smoothed_gradient(image: np.ndarray, sigma_px: float) -> tuple[np.ndarray, np.ndarray]:
    """The image smoothed in-plane (and one slice along z) and its in-plane gradient magnitude."""
    from scipy.ndimage import gaussian_filter

    smooth = gaussian_filter(image.astype(np.float32), sigma=(min(1.0, sigma_px), sigma_px, sigma_px))
    gy, gx = np.gradient(smooth, axis=(1, 2))
    return smooth, np.hypot(gy, gx)


def flat_mask(image: np.ndarray, *, sigma_px: float = 2.0) -> np.ndarray:
    """Uniform regions inside the object: low gradient in the smoothed image, in-plane and across
    slices, eroded in-plane and by a slice each way.

    Inside the object is ``smoothed > -500 HU``; low gradient is below the
    25th percentile of the object's gradients. Erosion (2 pixels, 1 slice)
    keeps cells off the edges of the region, including where a structure
    starts or ends between slices (a real exam's inserts move with gantry tilt).
    """
    from scipy.ndimage import binary_erosion

    smooth, grad = _smoothed_gradient(image, sigma_px)
    grad = np.hypot(grad, np.gradient(smooth, axis=0)) if image.shape[0] > 1 else grad
    inside = smooth > OBJECT_HU
    if not inside.any():
        return inside
    flat = inside & (grad < np.percentile(grad[inside], FLAT_PERCENTILE))
    return binary_erosion(flat, structure=np.ones((3 if image.shape[0] > 2 else 1, 5, 5), bool))


def edge_mask(image: np.ndarray, *, sigma_px: float = 1.0) -> np.ndarray:
    """Edges inside the object: the top 5 % of in-plane gradients of the smoothed image."""
    smooth, grad = _smoothed_gradient(image, sigma_px)
    inside = smooth > OBJECT_HU
    if not inside.any():
        return inside
    return inside & (grad >= np.percentile(grad[inside], EDGE_PERCENTILE))


def cell_noise(volume: np.ndarray, flat: np.ndarray, reference: np.ndarray | None = None) -> float:
    """Median over 16 x 16-pixel cells lying wholly in ``flat`` of the std of ``volume`` (minus
    ``reference`` when given): the noise of uniform regions. NaN when no cell is uniform."""
    residual = volume if reference is None else volume.astype(np.float32) - reference
    stds = []
    _, rows, cols = volume.shape
    for y in range(0, rows - CELL + 1, CELL):
        for x in range(0, cols - CELL + 1, CELL):
            whole = flat[:, y:y + CELL, x:x + CELL].all(axis=(1, 2))
            if whole.any():
                stds.extend(residual[whole, y:y + CELL, x:x + CELL].reshape(int(whole.sum()), -1)
                            .std(axis=1, dtype=np.float64))
    return float(np.median(stds)) if stds else math.nan


def noise_ratio(noisy: np.ndarray, out: np.ndarray, flat: np.ndarray,
                reference: np.ndarray | None = None) -> float:
    """Noise left in uniform regions: :func:`cell_noise` of ``out`` over that of ``noisy``."""
    return cell_noise(out, flat, reference) / cell_noise(noisy, flat, reference)


def rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(values, dtype=np.float64)))) if values.size else math.nan


def edge_loss(residual: np.ndarray, edges: np.ndarray, baseline: float) -> float:
    """Signal lost at edges (HU): ``sqrt(max(0, RMS(residual at edges)^2 - baseline^2))``.

    With a reference, ``residual`` is ``out - reference`` and ``baseline``
    the noise left at edges had the denoiser removed it there as in uniform
    regions (noise ratio x RMS of the input noise at edges): the noisy input
    scores 0, and so does a denoiser that leaves edges as sharp as they were.
    Without one, ``residual`` is what was removed (``noisy - out``) and
    ``baseline`` the RMS removed in uniform regions: a smoother removes more
    at edges than elsewhere, and the excess is structure.
    """
    return math.sqrt(max(0.0, rms(residual[edges]) ** 2 - baseline ** 2))


def ghost(with_structure: np.ndarray, without: np.ndarray, disc: np.ndarray, slices: range,
          reach: int = 3) -> tuple[float, float]:
    """What a structure planted in ``slices`` (in-plane ``disc``) does to a denoiser's output.

    ``with_structure`` and ``without`` are its outputs on the same noisy
    volume with and without the structure. Returns ``(ghost, kept)``: the
    largest absolute mean change over the disc in the ``reach`` slices on
    either side that do not hold it, and the mean change in the slices that do.
    """
    change = with_structure.astype(np.float64) - without
    per_slice = change[:, disc].mean(axis=1)
    others = [k for k in range(slices.start - reach, slices.stop + reach)
              if 0 <= k < len(per_slice) and k not in slices]
    return float(np.max(np.abs(per_slice[others]))), float(per_slice[list(slices)].mean())
