"""Test stacks for the denoising benchmark: noise of known kind on known anatomy, and a real exam.

``benchmarks/denoise_quality.py`` scores every denoiser under several noise
conditions, because a denoiser tuned on one simulation can fail on the rest
(issue 16). Each function here makes one ingredient:

* :func:`textured_phantom` -- the chest phantom with 3-D texture in its soft
  tissue, to be scanned by :func:`ctsvd_testdata.lowdose.scan_phantom` like the
  plain one (flat organs flatter a denoiser that smooths);
* :func:`white_noise`, :func:`slice_correlated_noise` and
  :func:`nonstationary_noise` -- Gaussian noise of a known law to add to a
  clean stack (white; shared between neighbouring slices; twice as strong at
  the edge of the field as at its centre);
* :func:`plant_disc` -- a small structure present in a few slices only, to
  check that a denoiser does not paint it into the others (a *ghost*);
* :func:`slice_correlation` and :func:`true_noise_level` -- what the noise
  really is, measured from ``noisy - reference``;
* :func:`read_series_hu` -- a real CT series as an HU volume, for the
  condition without a reference.

scipy is imported inside the functions that need it, as in :mod:`ctsvd_testdata.lowdose`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ctsvd_testdata.phantom import FOV_MM, SLICE_SPACING_MM, chest_phantom

__all__ = [
    "BODY_HU",
    "SOFT_TISSUE_HU",
    "nonstationary_noise",
    "plant_disc",
    "read_series_hu",
    "slice_correlated_noise",
    "slice_correlation",
    "textured_phantom",
    "true_noise_level",
    "white_noise",
]

SOFT_TISSUE_HU = (-150.0, 150.0)   # fat, muscle, blood, organs: where the texture goes
BODY_HU = -500.0                    # above this, a voxel is inside the body
_TEXTURE_STREAM, _NOISE_STREAM = 3, 4   # SeedSequence keys (phantom 1, photon noise 2)


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream]))


def textured_phantom(slices: int, size: int, *, seed: int = 0, texture_hu: float = 25.0,
                     scales_px: tuple[float, ...] = (1.0, 2.0, 3.0)) -> tuple[np.ndarray, tuple]:
    """:func:`~ctsvd_testdata.phantom.chest_phantom` whose soft tissue carries a 3-D random texture.

    The texture is white Gaussian noise smoothed by a Gaussian at each of
    ``scales_px`` (in-plane pixels; the same length in mm along z), each
    scale normalised to unit std, summed and scaled to a std of
    ``texture_hu``. It is added where the phantom is soft tissue
    (:data:`SOFT_TISSUE_HU`), so organs get parenchyma-like grain that a
    denoiser must keep, while air, lung and bone stay as they were.

    Returns ``(phantom HU float32, spacing_mm)`` in the geometry of
    :func:`~ctsvd_testdata.lowdose.simulate_low_dose`.
    """
    from scipy.ndimage import gaussian_filter

    pixel_mm = FOV_MM / size
    spacing = (SLICE_SPACING_MM, pixel_mm, pixel_mm)
    clean = chest_phantom(slices, size, spacing_mm=spacing, seed=seed)
    white = _rng(seed, _TEXTURE_STREAM).standard_normal(clean.shape, dtype=np.float32)
    texture = np.zeros_like(clean)
    for s in scales_px:
        layer = gaussian_filter(white, sigma=(s * pixel_mm / SLICE_SPACING_MM, s, s))
        texture += layer / layer.std()
    texture *= np.float32(texture_hu / texture.std())
    soft = (clean >= SOFT_TISSUE_HU[0]) & (clean <= SOFT_TISSUE_HU[1])
    clean[soft] += texture[soft]
    return clean, spacing


def white_noise(shape: tuple[int, ...], sigma_hu: float, *, seed: int = 0) -> np.ndarray:
    """Independent Gaussian noise of std ``sigma_hu`` (float32)."""
    return _rng(seed, _NOISE_STREAM).standard_normal(shape, dtype=np.float32) * np.float32(sigma_hu)


def z_kernel(rho: float) -> np.ndarray:
    """The 3-tap filter ``[a, 1, a] / norm`` whose output, from white noise, has unit variance
    and correlation ``rho`` between neighbouring slices (``2a / (1 + 2a^2) = rho``, ``rho <= 0.7``)."""
    if not 0.0 <= rho <= 0.7:
        raise ValueError("rho must be in [0, 0.7] for a 3-tap filter")
    a = 0.0 if rho == 0 else (1.0 - math.sqrt(1.0 - 2.0 * rho * rho)) / (2.0 * rho)
    h = np.array([a, 1.0, a])
    return h / np.sqrt((h * h).sum())


def slice_correlated_noise(shape: tuple[int, int, int], sigma_hu: float, *, rho: float = 0.6,
                           seed: int = 0) -> np.ndarray:
    """Gaussian noise of std ``sigma_hu``, white in-plane, filtered along z by :func:`z_kernel`
    so that neighbouring slices correlate at ``rho`` (and two apart at ``a^2 / (1 + 2a^2)``),
    as in a scanner's overlapping thin-slice reconstructions."""
    h = z_kernel(rho)
    slices = shape[0]
    white = white_noise((slices + 2, *shape[1:]), 1.0, seed=seed)   # one spare slice each end
    out = h[0] * white[:-2] + h[1] * white[1:-1] + h[2] * white[2:]
    return (out * np.float32(sigma_hu)).astype(np.float32)


def noise_sigma_map(size: int, sigma_centre_hu: float, edge_factor: float = 2.0) -> np.ndarray:
    """``(size, size)`` std map growing linearly with the radius: ``sigma_centre_hu`` at the centre,
    ``edge_factor`` times that on the scan circle (and beyond it, in the corners)."""
    c = size // 2
    yy, xx = np.ogrid[:size, :size]
    r = np.minimum(np.sqrt((yy - c) ** 2 + (xx - c) ** 2) / c, 1.0)
    return (sigma_centre_hu * (1.0 + (edge_factor - 1.0) * r)).astype(np.float32)


def nonstationary_noise(shape: tuple[int, int, int], sigma_centre_hu: float, *, edge_factor: float = 2.0,
                        seed: int = 0) -> np.ndarray:
    """White Gaussian noise whose std goes from ``sigma_centre_hu`` at the centre of the field
    to ``edge_factor`` times that at its edge (:func:`noise_sigma_map`)."""
    return white_noise(shape, 1.0, seed=seed) * noise_sigma_map(shape[-1], sigma_centre_hu, edge_factor)


def plant_disc(volume: np.ndarray, slices: range, centre: tuple[int, int], radius: float,
               hu: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
    """A copy of ``volume`` with a disc of ``+hu`` in ``slices`` only; also the disc's in-plane mask."""
    yy, xx = np.ogrid[:volume.shape[1], :volume.shape[2]]
    disc = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius * radius
    out = np.array(volume, np.float32)
    for k in slices:
        out[k][disc] += np.float32(hu)
    return out, disc


def slice_correlation(noise: np.ndarray, mask: np.ndarray | None = None, lag: int = 1) -> float:
    """Pearson correlation of ``noise`` between slices ``lag`` apart, over ``mask`` (3-D, optional)."""
    a, b = noise[:-lag].astype(np.float64), noise[lag:].astype(np.float64)
    if mask is not None:
        both = mask[:-lag] & mask[lag:]
        a, b = a[both], b[both]
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float((a @ b) / math.sqrt((a @ a) * (b @ b)))


def true_noise_level(noisy: np.ndarray, reference: np.ndarray, *, cell: tuple[int, int, int] = (16, 32, 32),
                     inside: float = 0.9) -> float:
    """The noise a denoiser should report: median over cells of ``std(noisy - reference)``.

    Cells are ``cell`` = (slices, rows, cols) blocks lying inside the body
    (``reference > -500 HU`` on at least ``inside`` of their voxels); a stack
    thinner than a cell uses its whole depth. NaN when no cell qualifies.
    """
    dz, dy, dx = (min(c, n) for c, n in zip(cell, noisy.shape))
    noise = noisy.astype(np.float64) - reference
    body = reference > BODY_HU
    stds = []
    for z in range(0, noisy.shape[0] - dz + 1, dz):
        for y in range(0, noisy.shape[1] - dy + 1, dy):
            for x in range(0, noisy.shape[2] - dx + 1, dx):
                block = (slice(z, z + dz), slice(y, y + dy), slice(x, x + dx))
                if body[block].mean() >= inside:
                    stds.append(noise[block].std())
    return float(np.median(stds)) if stds else math.nan


def read_series_hu(folder: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A folder of single-frame CT slices as a ``(slices, rows, cols)`` HU volume, and its spacing (mm).

    Slices are ordered along the normal of their orientation (the order
    DICOM defines; file names and InstanceNumber are not), stored values go
    through RescaleSlope/Intercept. Files that are not images of the series'
    size and orientation (a localizer, a screenshot) are left out.

    Raises ``ValueError`` naming the folder when it holds no usable slice.
    """
    import pydicom

    slices = []
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        try:
            ds = pydicom.dcmread(path)
            if "PixelData" not in ds or "ImagePositionPatient" not in ds or ds.get("Modality") != "CT":
                continue
            orientation = np.array(ds.ImageOrientationPatient, float)
            normal = np.cross(orientation[:3], orientation[3:])
            position = float(np.dot(normal, np.array(ds.ImagePositionPatient, float)))
            hu = ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1)) \
                + float(ds.get("RescaleIntercept", 0))
        except Exception:                                  # not DICOM, or not an image we can read
            continue
        slices.append((position, hu, tuple(np.round(orientation, 4)), tuple(map(float, ds.PixelSpacing))))
    if not slices:
        raise ValueError(f"{folder}: no CT slice with a position could be read")
    # the largest group of one orientation and size is the series' stack
    key = max({(s[2], s[1].shape) for s in slices},
              key=lambda k: sum((s[2], s[1].shape) == k for s in slices))
    stack = sorted((s for s in slices if (s[2], s[1].shape) == key), key=lambda s: s[0])
    steps = np.diff([s[0] for s in stack])
    dz = float(np.median(np.abs(steps))) if len(steps) else 1.0
    return np.stack([s[1] for s in stack]), (dz, *stack[0][3])
