"""The LoDoPaB-style low-dose simulation: shapes, determinism, and noise that behaves like FBP noise."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("skimage")
ndi = pytest.importorskip("scipy.ndimage")

from ctsvd_testdata import lowdose as L  # noqa: E402

SIZE = 256           # PSNR depends on the pixel size, so the dose checks run at the benchmark's
SLICES = 4


@pytest.fixture(scope="module")
def stack():
    return L.simulate_low_dose(SLICES, SIZE, i0=1e4, seed=0, workers=1)


@pytest.fixture(scope="module")
def small():
    """A whole chest at 64 pixels, slices 2.5 mm apart: cheap, for the along-z checks."""
    return L.simulate_low_dose(48, 64, seed=3, workers=2)


def _noise(s) -> np.ndarray:
    return (s.noisy_hu - s.reference_hu).astype(np.float64)


def test_shapes_dtypes_and_parameters(stack):
    for a in (stack.noisy_hu, stack.reference_hu, stack.clean_hu):
        assert a.shape == (SLICES, SIZE, SIZE) and a.dtype == np.float32
        assert np.isfinite(a).all()
    assert (stack.i0, stack.seed, stack.mu_water_per_mm) == (1e4, 0, L.MU_WATER_PER_MM)
    assert stack.spacing_mm == (2.5, 350 / SIZE, 350 / SIZE)
    assert stack.angles == L.default_angle_count(SIZE) == 403
    # a chest's worth of attenuation: the fewest photons still come in tens
    assert 5.0 < stack.line_integral_max < 8.0
    assert 1.0 < stack.min_expected_counts < 100.0


def test_outside_the_scan_circle_is_air(stack):
    outside = ~L.scan_circle(SIZE)
    for a in (stack.noisy_hu, stack.reference_hu, stack.clean_hu):
        assert (a[:, outside] == -1000.0).all()


def test_same_seed_same_stack_whatever_the_workers(small):
    again = L.simulate_low_dose(48, 64, seed=3, workers=1)
    np.testing.assert_array_equal(again.noisy_hu, small.noisy_hu)
    np.testing.assert_array_equal(again.reference_hu, small.reference_hu)
    other = L.simulate_low_dose(48, 64, seed=4, workers=2)
    assert not np.array_equal(other.noisy_hu, small.noisy_hu)


def test_noise_is_fbp_like(stack):
    noise = _noise(stack)
    inside = L.scan_circle(SIZE)
    assert abs(noise[:, inside].mean()) < 3.0                    # unbiased to a few HU
    assert 60.0 < noise[:, inside].std() < 160.0
    # non-stationary: thick paths through the body centre are noisier than air in front of it
    centre = noise[:, 118:138, 118:138].std()
    air = noise[:, 8:18, 118:138].std()
    assert centre > 1.5 * air > 0
    # correlated: the back-projection's interpolation couples neighbouring pixels
    c = noise[:, 96:160, 96:160]
    lag1 = np.corrcoef(c[:, :, :-1].ravel(), c[:, :, 1:].ravel())[0, 1]
    assert 0.05 < lag1 < 0.4


def test_reference_matches_the_phantom_away_from_edges(stack):
    flat = (ndi.maximum_filter(stack.clean_hu, size=(1, 7, 7))
            == ndi.minimum_filter(stack.clean_hu, size=(1, 7, 7)))
    flat &= ndi.binary_erosion(L.scan_circle(SIZE), iterations=5)[None]
    err = np.abs(stack.reference_hu - stack.clean_hu)[flat]
    assert flat.mean() > 0.2
    assert np.median(err) < 3.0 and np.percentile(err, 99) < 15.0


def test_psnr_is_in_the_low_dose_range_and_follows_the_dose(stack):
    low = L.psnr(stack.noisy_hu, stack.reference_hu)
    assert 27.0 < low < 32.0, low                                # measured 29.2 dB
    double = L.simulate_low_dose(SLICES, SIZE, i0=2e4, seed=0, workers=1)
    gain = L.psnr(double.noisy_hu, double.reference_hu) - low
    assert 2.5 < gain < 3.5, gain                                # noise variance ~ 1 / I0


def test_anatomy_drifts_slowly_along_z(small):
    assert small.spacing_mm[0] == 2.5
    clean = small.clean_hu.astype(np.float64)
    step = np.abs(np.diff(clean, axis=0)).mean(axis=(1, 2))
    far = np.abs(clean[10:] - clean[:-10]).mean(axis=(1, 2))
    assert (step > 0).mean() > 0.9                               # it changes at almost every slice
    assert np.median(step) < 0.3 * np.median(far)                # but slowly


def test_psnr_helper():
    ref = np.zeros((2, 8, 8), np.float32)
    assert L.psnr(ref, ref) == math.inf
    assert L.psnr(ref + 25.24, ref) == pytest.approx(40.0)
    # clipped to the window: values beyond 1500 HU count as 1500
    assert L.psnr(np.full_like(ref, 3000.0), np.full_like(ref, 1500.0)) == math.inf


@pytest.mark.parametrize("kwargs", [{"i0": 0}, {"i0": float("nan")}, {"mu_water_per_mm": -1.0},
                                    {"angles": 0}])
def test_bad_parameters_raise(kwargs):
    with pytest.raises(ValueError):
        L.simulate_low_dose(2, 32, **kwargs)
