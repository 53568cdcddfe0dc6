"""The automatic global rank from the series' measured noise model."""

import numpy as np

from ctsvd_common import noise
from svd_render import rank


def test_slice_correlated_noise_does_not_count_as_components():
    """Three smooth components plus noise that neighbouring slices share at 0.6: the measured model
    keeps the three; a white-noise bulk fit cannot tell the shared noise from signal."""
    rng = np.random.default_rng(3)
    m, side = 48, 192
    y, x = np.mgrid[0:side, 0:side] / side
    inside = np.hypot(y - 0.5, x - 0.5) < 0.3          # the anatomy, with uniform surroundings
    images = np.stack([np.cos(2 * np.pi * (i + 1) * x) * np.sin(np.pi * (i + 1) * y) * inside for i in range(3)])
    weights = rng.normal(size=(m, 3)) * np.array([400.0, 250.0, 150.0])
    clean = np.einsum("mk,kyx->myx", weights, images)
    volume = (clean + noise.synthesize((m, side, side), 20.0, np.ones((32, 32)), (1.0, 0.6, 0.2), seed=1))
    A = volume.reshape(m, -1).astype(np.float64)
    spectrum = np.linalg.svd(A, compute_uv=False)
    k = 20
    model = noise.estimate(volume.astype(np.float32)).summary()
    choice = rank.choose(None, 0.0, spectrum[:k], m, A.shape[1], float(np.linalg.norm(A)), model, spectrum)
    assert choice.rank == 3 and choice.rule == "gavish-donoho" and not choice.warnings
    assert abs(choice.noise.sigma - 20.0) < 2.0
    white = rank.choose(None, 0.0, spectrum[:k], m, A.shape[1], float(np.linalg.norm(A)))
    assert white.rank > 3          # the shared noise's largest directions stand above the white bulk
