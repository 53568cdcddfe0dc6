"""A low-dose CT stack simulated the way LoDoPaB-CT is made, with its noiseless twin.

The denoising benchmark needs noise that behaves like the real thing, not
noise painted onto images: Poisson photon statistics in the sinogram, then a
filtered back-projection, which makes the image noise correlated, streaky
and strongest where the body is thickest. LoDoPaB-CT (Leuschner et al.,
Sci. Data 8, 109, 2021) is made that way from real chest CTs; here the
slices come from :func:`ctsvd_testdata.phantom.chest_phantom` instead, so the
anatomy drifts slowly from slice to slice as in a real scan.

Pipeline, slice by slice:

1. HU phantom -> linear attenuation ``mu = mu_water * (1 + HU / 1000)``,
   negatives clipped to 0, and zero outside the scan circle (the table's
   far corners; parallel-beam data with ``circle=True`` only sees inside it);
2. parallel-beam line integrals ``p = radon(mu) * pixel_mm``
   (:func:`skimage.transform.radon`). With ``mu_water = 0.02 / mm``
   (LoDoPaB's 20 / m) and the phantom's real size in mm, ``p`` reaches about
   6 across the chest, the range of a real chest;
3. photon counts ``N ~ Poisson(i0 * exp(-p))``, then
   ``p_noisy = -log(max(N, 0.1) / i0)`` (LoDoPaB's guard against zero counts);
4. filtered back-projection with the ramp filter
   (:func:`skimage.transform.iradon`) of both ``p_noisy`` and the noiseless
   ``p``, back to HU. The noiseless one is the *reference*: it has exactly the
   blur and the view-sampling streaks of the noisy one, so ``noisy - reference``
   is the noise alone.

scikit-image is imported inside the functions that need it, so the rest of
``ctsvd_testdata`` works without it (it comes with the ``lowdose`` extra).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from ctsvd_testdata.phantom import FOV_MM, SLICE_SPACING_MM, chest_phantom

__all__ = [
    "DATA_RANGE_HU",
    "MU_WATER_PER_MM",
    "WINDOW_HU",
    "LowDoseStack",
    "default_angle_count",
    "psnr",
    "scan_circle",
    "scan_phantom",
    "simulate_low_dose",
]

MU_WATER_PER_MM = 0.02            # LoDoPaB-CT's 20 / m (water near 60 keV is 0.019-0.021)
WINDOW_HU = (-1024.0, 1500.0)     # the window PSNR and SSIM are measured over
DATA_RANGE_HU = WINDOW_HU[1] - WINDOW_HU[0]
MIN_COUNT = 0.1                   # LoDoPaB: -log(max(N, 0.1) / I0), so zero counts stay finite
_NOISE_STREAM = 2                 # SeedSequence key of the photon noise (the phantom uses 1)


@dataclass(frozen=True)
class LowDoseStack:
    """A simulated low-dose scan, its noiseless reconstruction and the phantom.

    Attributes
    ----------
    noisy_hu : ndarray, float32, (slices, size, size)
        FBP of the Poisson-noisy sinograms, in HU; -1000 (air) outside the
        scan circle.
    reference_hu : ndarray, float32
        FBP of the noiseless sinograms: the same pipeline without the photon
        noise, so the same resolution and artefacts. Score denoisers against it.
    clean_hu : ndarray, float32
        The phantom as scanned (air outside the scan circle): the ground truth
        before the scanner's blur.
    i0 : float
        Incident photons per detector bin and view.
    seed : int
        Seeds the phantom's anatomy and the photon noise.
    mu_water_per_mm : float
        Attenuation of water used for HU <-> mu.
    spacing_mm : tuple of float
        ``(dz, dy, dx)`` of the volume.
    angles : int
        Number of parallel-beam views over 180 degrees.
    line_integral_max : float
        Largest noiseless line integral over all slices and views; the fewest
        photons expected on a detector bin are ``i0 * exp(-line_integral_max)``.
    """

    noisy_hu: np.ndarray
    reference_hu: np.ndarray
    clean_hu: np.ndarray
    i0: float
    seed: int
    mu_water_per_mm: float
    spacing_mm: tuple[float, float, float]
    angles: int
    line_integral_max: float

    @property
    def min_expected_counts(self) -> float:
        """Mean photon count behind the most attenuating path."""
        return self.i0 * math.exp(-self.line_integral_max)


def default_angle_count(size: int) -> int:
    """Views for a ``size`` detector: ``ceil(size * pi / 2)``.

    That is the usual angular sampling for a parallel-beam scan whose
    detector bins are one pixel wide (402 views for 256 pixels); fewer views
    add streaks, more only cost time.
    """
    return math.ceil(size * math.pi / 2)


def scan_circle(size: int) -> np.ndarray:
    """Boolean ``(size, size)`` mask of the circle skimage's radon sees with ``circle=True``.

    Same centre (``size // 2``) and radius (``size // 2``) as
    :func:`skimage.transform.radon` and :func:`~skimage.transform.iradon` use.
    """
    c = size // 2
    yy, xx = np.ogrid[:size, :size]
    return (yy - c) ** 2 + (xx - c) ** 2 <= c * c


def psnr(test: np.ndarray, reference: np.ndarray, *, window: tuple[float, float] = WINDOW_HU) -> float:
    """PSNR in dB of ``test`` against ``reference``, both clipped to ``window`` (HU).

    The peak is the window width (2524 HU by default), as in LoDoPaB-style
    reports; errors are summed in float64 over the whole array.
    """
    lo, hi = window
    err = np.clip(test, lo, hi, dtype=np.float64) - np.clip(reference, lo, hi, dtype=np.float64)
    mse = float(np.mean(err * err))
    return math.inf if mse == 0.0 else 10.0 * math.log10((hi - lo) ** 2 / mse)


def _scan_slice(args) -> tuple[np.ndarray, np.ndarray, float]:
    """Simulate one slice: ``(noisy mu, reference mu, max line integral)``.

    Module-level so a process pool can pickle it; each slice draws its noise
    from its own seed, so results do not depend on how slices are shared out.
    """
    from skimage.transform import iradon, radon

    hu, k, seed, i0, mu_water, pixel_mm, theta, inside = args
    mu = np.maximum(mu_water * (1.0 + hu.astype(np.float64) / 1000.0), 0.0)
    mu[~inside] = 0.0
    p = radon(mu, theta, circle=True) * pixel_mm
    rng = np.random.default_rng(np.random.SeedSequence([seed, _NOISE_STREAM, k]))
    counts = rng.poisson(i0 * np.exp(-p)).astype(np.float64)
    p_noisy = -np.log(np.maximum(counts, MIN_COUNT) / i0)
    # iradon inverts radon on pixel units: divide by the pixel size to get mu per mm back
    noisy = iradon(p_noisy / pixel_mm, theta, circle=True, filter_name="ramp")
    reference = iradon(p / pixel_mm, theta, circle=True, filter_name="ramp")
    return noisy.astype(np.float32), reference.astype(np.float32), float(p.max())


def _to_hu(mu: np.ndarray, mu_water: float, inside: np.ndarray) -> np.ndarray:
    """HU from mu in place (float32); air outside the scan circle, where FBP returns 0."""
    mu *= 1000.0 / mu_water
    mu -= 1000.0
    mu[:, ~inside] = -1000.0
    return mu


def _map_slices(tasks, workers: int):
    if workers <= 1:
        return list(map(_scan_slice, tasks))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_scan_slice, tasks, chunksize=max(1, len(tasks) // (4 * workers))))


def simulate_low_dose(slices: int = 96, size: int = 256, *, i0: float = 1e4,
                      mu_water_per_mm: float = MU_WATER_PER_MM, angles: int | None = None,
                      seed: int = 0, workers: int | None = None) -> LowDoseStack:
    """Simulate a low-dose chest CT stack and its noiseless reconstruction.

    Parameters
    ----------
    slices, size : int
        The stack is ``(slices, size, size)``: slices 2.5 mm apart, a 350 mm
        field of view (pixel ``350 / size`` mm), anatomy spanning the chest
        whatever the slice count (see :func:`~ctsvd_testdata.phantom.chest_phantom`).
    i0 : float
        Incident photons per detector bin and view. LoDoPaB-CT uses 4096;
        1e4 at 256 pixels gives about the same image noise.
    mu_water_per_mm : float
        Attenuation of water; with 0.02 / mm line integrals through the
        chest reach about 6.
    angles : int, optional
        Views over 180 degrees; :func:`default_angle_count` when not given.
    seed : int
        Seeds the anatomy (vessels, nodules) and the photon noise.
    workers : int, optional
        Processes to spread slices over; defaults to the CPU count (at most
        ``slices``). 1 runs in this process. The result is the same for any value.

    Returns
    -------
    LowDoseStack

    Raises
    ------
    ValueError
        If a parameter is out of range.
    """
    pixel_mm = FOV_MM / size
    spacing = (SLICE_SPACING_MM, pixel_mm, pixel_mm)
    clean = chest_phantom(slices, size, spacing_mm=spacing, seed=seed)
    return scan_phantom(clean, spacing, i0=i0, mu_water_per_mm=mu_water_per_mm, angles=angles,
                        seed=seed, workers=workers)


def scan_phantom(clean_hu: np.ndarray, spacing_mm: tuple[float, float, float], *, i0: float = 1e4,
                 mu_water_per_mm: float = MU_WATER_PER_MM, angles: int | None = None,
                 seed: int = 0, workers: int | None = None) -> LowDoseStack:
    """Scan a ``(slices, size, size)`` HU phantom: steps 1-4 above, slice by slice.

    :func:`simulate_low_dose` scans :func:`~ctsvd_testdata.phantom.chest_phantom`
    with it; other phantoms (e.g. one with textured soft tissue) go through
    the same simulation. ``seed`` seeds the photon noise; the other
    parameters are those of :func:`simulate_low_dose`.
    """
    if not (math.isfinite(i0) and i0 > 0):
        raise ValueError("i0 must be a positive number of photons")
    if not (math.isfinite(mu_water_per_mm) and mu_water_per_mm > 0):
        raise ValueError("mu_water_per_mm must be positive")
    clean = np.array(clean_hu, np.float32)
    if clean.ndim != 3 or clean.shape[1] != clean.shape[2]:
        raise ValueError(f"expected a (slices, size, size) phantom, got shape {clean.shape}")
    slices, size = clean.shape[0], clean.shape[1]
    angles = default_angle_count(size) if angles is None else int(angles)
    if angles < 1:
        raise ValueError("angles must be at least 1")
    pixel_mm = float(spacing_mm[2])
    inside = scan_circle(size)
    clean[:, ~inside] = -1000.0                          # what the scan sees
    theta = np.linspace(0.0, 180.0, angles, endpoint=False)
    tasks = [(clean[k], k, seed, float(i0), mu_water_per_mm, pixel_mm, theta, inside)
             for k in range(slices)]
    workers = min(slices, os.cpu_count() or 1) if workers is None else max(1, int(workers))
    results = _map_slices(tasks, workers)

    noisy = np.stack([r[0] for r in results])
    reference = np.stack([r[1] for r in results])
    p_max = max(r[2] for r in results)
    return LowDoseStack(noisy_hu=_to_hu(noisy, mu_water_per_mm, inside),
                        reference_hu=_to_hu(reference, mu_water_per_mm, inside),
                        clean_hu=clean, i0=float(i0), seed=int(seed),
                        mu_water_per_mm=float(mu_water_per_mm), spacing_mm=tuple(spacing_mm),
                        angles=angles, line_integral_max=p_max)
