"""The local denoiser: it improves images, adds no ghost, keeps edges, and gives the same bytes in
this process and on Spark, whatever the tiling. Its stages are tested on their own too."""

import dataclasses

import numpy as np
import pytest

from ctsvd_common import contract, noise
from ctsvd_testdata.lowdose import simulate_low_dose
from ctsvd_testdata.phantom import chest_phantom, low_dose_noise
from ssvd_denoise import local
from ssvd_denoise.local import patches, wiener
from ssvd_denoise.local import spark as local_spark
from ssvd_denoise.options import Settings, parser
from ssvd_denoise.run import run


SLICES, SIZE, NOISE_HU = 40, 64, 30.0


@pytest.fixture(scope="module")
def stack():
    clean = chest_phantom(SLICES, SIZE, spacing_mm=(2.5, 350 / SIZE, 350 / SIZE), seed=1).astype(np.float32)
    noisy = clean + np.random.default_rng(7).normal(0, NOISE_HU, clean.shape).astype(np.float32)
    denoised, found = local.denoise(noisy)
    return clean, noisy, denoised, found


def rmse(a, b):
    return float(np.sqrt(np.mean((a.astype(np.float64) - b) ** 2)))


def test_it_lowers_the_error_against_the_clean_phantom(stack):
    clean, noisy, denoised, _ = stack
    assert denoised.dtype == np.float32 and denoised.shape == noisy.shape
    assert rmse(denoised, clean) < 0.6 * rmse(noisy, clean)


def test_the_noise_it_reports_is_the_truth(stack):
    *_, found = stack
    sigma = found["noise"]["sigma_hu"]
    assert 0.9 * NOISE_HU < sigma["median"] < 1.1 * NOISE_HU
    assert sigma["p10"] <= sigma["median"] <= sigma["p90"]
    assert abs(found["noise"]["slice_correlation"][1]) < 0.1          # white noise: slices share none
    strength = found["choices"]["stage 2 strength"]
    assert strength["strength"] in strength["grid"] and "SURE" in strength["why"]


def test_slice_correlated_noise_is_removed_too():
    """Noise that neighbouring slices share (0.6 here, as thin overlapping slices have) looks like
    signal to a white-noise law; measured and whitened, it comes out with the rest. The code
    before the noise model kept 80 % of it (flat noise x0.8). A 256² image: a 64² one holds too
    little free of anatomy to measure a spectrum from, and is denoised as white."""
    size = 256
    clean = chest_phantom(24, size, spacing_mm=(2.5, 350 / size, 350 / size), seed=2).astype(np.float32)
    n = 32
    f = np.fft.fftfreq(n)
    radius = np.hypot(*np.meshgrid(f, f, indexing="ij"))
    nps = radius * np.cos(np.pi * radius / 1.2) ** 2 + 1e-3          # FBP-shaped, ramp times apodisation
    shared = noise.synthesize(clean.shape, NOISE_HU, nps / nps.mean(), (1.0, 0.6, 0.2), seed=9)
    noisy = clean + shared
    denoised, found = local.denoise(noisy)
    assert 0.5 < found["noise"]["slice_correlation"][1] < 0.7
    flat = uniform_region(clean)
    assert float((denoised - clean)[flat].std()) <= 0.6 * float(shared[flat].std())
    assert rmse(denoised, clean) < 0.6 * rmse(noisy, clean)


def uniform_region(clean: np.ndarray) -> np.ndarray:
    """Voxels of soft tissue whose 5 x 5 x 3 neighbourhood is uniform in the clean volume."""
    v = clean.astype(np.float64)
    spread = np.zeros_like(v)
    for dz in (-1, 0, 1):
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                spread = np.maximum(spread, np.abs(np.roll(v, (dz, dy, dx), (0, 1, 2)) - v))
    return (spread < 1.0) & (v > -200) & (v < 200)


def test_a_structure_in_some_slices_does_not_appear_in_others():
    """No ghost: an insert present in slices 14-19 only stays absent elsewhere.

    The ghost is what the insert changes in the other slices: the same noise is denoised with and
    without it. The global truncated SVD at rank 1 paints the insert's average into every slice,
    so the test can fail.
    """
    rng = np.random.default_rng(3)
    m, n = 40, 64
    y, x = np.mgrid[0:n, 0:n]
    body = ((y - 32) ** 2 + (x - 32) ** 2 < 27 ** 2) * 1040.0 - 1000
    insert = ((y - 24) ** 2 + (x - 40) ** 2 < 6 ** 2)
    without = np.repeat(body[None], m, axis=0).astype(np.float32)
    with_insert = without.copy()
    with_insert[14:20][:, insert] += 150
    noise = rng.normal(0, 20, without.shape).astype(np.float32)
    others = [i for i in range(m) if not 12 <= i < 22]

    def ghost(denoiser):
        """Per other slice, the mean change over the insert's area; and the denoised volume."""
        a, b = denoiser(with_insert + noise), denoiser(without + noise)
        return (a[others] - b[others])[:, insert].mean(axis=1), a

    def global_rank1(v):
        U, s, Vt = np.linalg.svd(v.reshape(m, -1).astype(np.float64), full_matrices=False)
        return ((U[:, :1] * s[:1]) @ Vt[:1]).reshape(v.shape)

    ghost_global, _ = ghost(global_rank1)
    ghost_local, denoised = ghost(lambda v: local.denoise(v)[0])
    assert ghost_global.mean() > 15.0                # 1/7 of the insert, painted into every slice
    # Locally the insert only changes how much noise its patches keep (a few HU, either sign),
    # never paints itself: no systematic shift, nothing near its contrast.
    assert abs(ghost_local.mean()) < 2.0 and np.abs(ghost_local).max() < 5.0
    # ... and where the insert is, it is kept.
    assert abs(float((denoised[15:19] - with_insert[15:19])[:, insert].mean())) < 10.0


def test_flat_noise_drops_while_an_edge_keeps_its_profile():
    rng = np.random.default_rng(5)
    m, n = 32, 64
    clean = np.full((m, n, n), 40.0, np.float32)
    clean[:, :, 32:] = 1040.0                                     # a sharp 1000 HU edge down the middle
    noisy = clean + rng.normal(0, 25, clean.shape).astype(np.float32)
    denoised, _ = local.denoise(noisy)
    flat = (slice(None), slice(8, 56), slice(4, 24))
    assert float(denoised[flat].std()) < 0.5 * float(noisy[flat].std())
    profile_clean = clean[:, 8:56, 26:38].mean(axis=(0, 1))
    profile = denoised[:, 8:56, 26:38].mean(axis=(0, 1))
    assert np.abs(profile - profile_clean).max() < 15.0          # the step is not blurred away
    assert float(denoised[:, :, 31].mean()) < 140 and float(denoised[:, :, 32].mean()) > 940


def test_the_second_stage_improves_on_the_pilot_on_a_simulated_low_dose_scan():
    """FBP noise, streaky and correlated in-plane."""
    scan = simulate_low_dose(24, 96, seed=3, workers=1)
    reference = np.clip(scan.reference_hu, -1024, 1500)
    error = lambda v: rmse(np.clip(v, -1024, 1500), reference)
    model = noise.estimate(scan.noisy_hu)
    strength, _ = local.choose_strength(scan.noisy_hu, model)
    pilot = patches.denoise(scan.noisy_hu, model)
    denoised = wiener.denoise(scan.noisy_hu, pilot, model, strength)
    # Measured: noisy 57 HU, pilot 29.5, both stages 28.5 (a 96² image: too small for a measured
    # NPS, so both stages take the noise as white in-plane).
    assert error(pilot) < 0.6 * error(scan.noisy_hu)
    assert error(denoised) < 0.99 * error(pilot)


def test_every_group_holds_its_reference_even_where_everything_ties():
    flat = np.zeros((4, 24, 24))        # every candidate ties at distance 0
    ys = xs = np.array(patches.starts(24, 8, 6))
    rows, cols = wiener.match(flat, ys, xs, wiener.SETTINGS)
    assert rows.shape == (len(ys) * len(xs), wiener.SETTINGS.group)
    assert np.array_equal(rows[:, 0], np.repeat(ys, len(xs))) and np.array_equal(cols[:, 0], np.tile(xs, len(ys)))
    # ... and the other members stay inside the image.
    assert rows.min() >= 0 and rows.max() <= 24 - 8 and cols.min() >= 0 and cols.max() <= 24 - 8


def test_block_matching_finds_the_copy_of_a_patch():
    rng = np.random.default_rng(2)
    slab = rng.normal(0, 1, (4, 32, 32))
    slab[:, 13:21, 15:23] = slab[:, 10:18, 12:20]          # the patch at (10, 12), copied 3 px down and right
    rows, cols = wiener.match(slab, np.array([10]), np.array([12]), wiener.SETTINGS)
    assert (rows[0, 1], cols[0, 1]) == (13, 15)


def test_the_hosvd_transform_is_orthonormal_and_inverts():
    rng = np.random.default_rng(4)
    groups = rng.normal(size=(3, 4, 5, 5, 6)).astype(np.float32)
    bases = wiener.hosvd_bases(groups)
    coefficients = wiener.transform(groups, bases)
    assert np.allclose(np.square(coefficients).sum(axis=(1, 2, 3, 4)), np.square(groups).sum(axis=(1, 2, 3, 4)),
                       rtol=1e-4)
    assert np.allclose(wiener.transform(coefficients, bases, inverse=True), groups, atol=1e-4)


@pytest.mark.parametrize("shape", [(3, 48, 48), (3, 48, 64), (5, 7, 9), (2, 3, 3), (2, 20, 30)])
def test_small_and_thin_series_are_denoised_everywhere(shape):
    """Patches and search windows clipped to a small image leave no pixel uncovered (a 3-slice
    48 x 48 series once gave NaN in the first stage and an index error in the second)."""
    clean = np.zeros(shape, np.float32)
    clean[:, :, shape[2] // 2:] = 100.0
    noisy = clean + np.random.default_rng(1).normal(0, 10, shape).astype(np.float32)
    denoised, found = local.denoise(noisy)
    assert denoised.shape == shape and np.isfinite(denoised).all()
    if min(shape[1:]) < local.MIN_IN_PLANE:     # too few pixels to measure a noise from: left as it is
        assert np.array_equal(denoised, noisy) and "too small" in found["noise"]["unmeasured"]
    else:
        assert rmse(denoised, clean) < rmse(noisy, clean)


def test_a_single_row_or_slice_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="2 or more each way"):
        local.denoise(np.zeros((3, 1, 5), np.float32))


def test_the_tiling_never_changes_a_byte(stack):
    _, noisy, denoised, _ = stack
    for count in (2, 3, 7):
        again, _ = local.denoise(noisy, tile_count=count)
        assert np.array_equal(again, denoised), count


def test_tiles_cover_every_slice_once():
    for slices in (1, 5, 16, 17, 40, 301):
        for count in (1, 2, 4, 9):
            plan = patches.tiles(slices, count)
            owned = [z for t in plan for z in range(t.own_first, t.own_stop)]
            assert owned == list(range(slices))
            assert all(0 <= t.first <= t.own_first < t.own_stop <= t.stop <= slices for t in plan)


def test_whitening_makes_slice_correlated_noise_white():
    """The first stage's whitening, on noise of the model it was made from: the columns' noise
    comes out uncorrelated and of unit variance."""
    n = 32
    model = noise.NoiseModel(np.ones((1, 1, 1)), (16, 32, 32), (16, 32, 32), np.ones((n, n)),
                             np.array([1.0, 0.6, 0.25, 0.0, 0.0]), 1)
    pn = patches.patch_noise(model, 0, 8, 16)
    draws = noise.synthesize((16, 256, 256), 1.0, model.nps, model.slice_correlation, seed=4)
    X = draws.reshape(16, -1).T @ pn.whiten
    covariance = np.cov(X.T)
    assert np.allclose(np.diag(covariance), 1.0, atol=0.08)
    assert np.abs(covariance - np.diag(np.diag(covariance))).max() < 0.08
    assert np.allclose(pn.whiten @ pn.colour, np.eye(16), atol=1e-8)
    assert pn.beta == pytest.approx(16 / 64)        # white in-plane: 64 independent rows


def test_optimal_shrinkage_zeroes_the_noise_bulk():
    beta = 0.25
    y = np.array([0.5, 1.0, 1.0 + np.sqrt(beta), 2.0, 10.0])
    out = patches.optimal_shrinkage(y, beta)
    assert list(out[:3]) == [0.0, 0.0, 0.0] and 0 < out[3] < 2.0 and 9.8 < out[4] < 10.0
    # More columns than rows: the same shrinker of the transposed matrix, in its own units.
    wide = patches.optimal_shrinkage(y * 2, 4.0)
    assert np.allclose(wide, patches.optimal_shrinkage(y, 0.25) * 2)


def test_spark_gives_the_same_bytes_as_this_process(tmp_path, stack, write_series):
    _, noisy, denoised, found = stack
    write_series(tmp_path / "in" / "series-001", noisy)
    for access in ("shared", "stream"):
        out = tmp_path / access
        flags = ["--mode", "local", "--master", "local[2]", "--data-access", access]
        code = run(Settings.from_options(parser.parse_args(flags)), tmp_path / "in", out)
        assert code == 0
        series = out / "series-001"
        assert np.array_equal(np.load(series / contract.LOCAL), denoised), access
        record = contract.read_local(series)
        sigma = {k: found["noise"]["sigma_hu"][k] for k in ("uniform", "p10", "median", "p90")}
        assert record.automatic and record.noise_hu == sigma and record.tiles >= 2
        assert record.noise == found["noise"] and record.choices == found["choices"]
        assert record.parameters == local.parameters()
        assert not (series / contract.SVD_JSON).exists()   # --mode local computes no global factors


def test_a_bad_mode_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:   # refused as the flags are read, before any work
        parser.parse_args(["--mode", "regional"])
    assert e.value.code == 2 and "argument --mode: invalid choice: 'regional'" in capsys.readouterr().err


@pytest.mark.parametrize("thickness", [8, 16, 24])
def test_any_cut_into_slabs_gives_the_same_bytes(stack, thickness):
    _, noisy, denoised, found = stack
    plan = local.slabs(noisy.shape, thickness)
    assert [z for s in plan for z in range(s.own_first, s.own_stop)] == list(range(SLICES))
    assert all(0 <= s.first <= s.own_first < s.own_stop <= s.stop <= SLICES for s in plan)
    params, again_found = local.measured(noisy)
    assert again_found == found
    assert np.array_equal(local.denoise_in_slabs(noisy, thickness, params), denoised)


def test_slabs_keep_the_bytes_of_passes_along_rows_and_columns_with_several_geometries(decaying_volume):
    # Passes along rows (and columns) see a window of slices; with patch grids of strides 4 and 3 the
    # window must still start and end on every grid.
    g = patches.GEOMETRIES
    volume = decaying_volume(45, 40, 36, seed=3)
    params, _ = local.measured(volume)
    params = dataclasses.replace(params, ensemble=(patches.Pass(0, g[:2]), patches.Pass(1, g), patches.Pass(2, g[2:])))
    pilot = patches.denoise(volume, params.model, 1, params.ensemble)
    expected = wiener.denoise(volume, pilot, params.model, params.strength)
    for thickness in (8, 16, 24):
        out = local.denoise_in_slabs(volume, thickness, params)
        assert np.array_equal(out, expected), thickness


def test_slabs_are_sized_from_the_executors_memory_and_cores():
    shape = lambda slices: (slices, 512, 512)
    # Plenty of memory: two slabs per core, a multiple of the cores.
    assert len(local.slabs(shape(301), local_spark.slab_thickness(shape(301), 2, 6 << 30))) == 4
    # A 1 GiB task: a slab's estimated peak fits it, and a longer series gets more slabs, not larger ones.
    for slices in (1200, 11500):
        t = local_spark.slab_thickness(shape(slices), 2, 1 << 30)
        assert (t + local_spark.MARGIN_SLICES) * local_spark.BYTES_PER_VOXEL * 512 * 512 <= 1 << 30
        assert t == local_spark.slab_thickness(shape(1200), 2, 1 << 30)
    # Streamed slabs stay under their cap whatever the memory.
    t = local_spark.slab_thickness(shape(11500), 2, 64 << 30, local_spark.STREAM_SLAB_BYTES)
    assert (t + local_spark.MARGIN_SLICES) * 4 * 512 * 512 <= local_spark.STREAM_SLAB_BYTES
    # A short series keeps both cores busy.
    assert len(local.slabs(shape(40), local_spark.slab_thickness(shape(40), 2, 6 << 30))) == 2


def test_a_small_series_with_no_noise_only_roi_is_denoised_as_white():
    """The runner's smallest demo (12 slices of 64², all anatomy): no ROI is noise-only, so the noise
    is taken as white and unmeasured, and the series is still denoised."""
    clean = chest_phantom(12, 64, spacing_mm=(2.5, 5.0, 5.0), seed=0)
    volume = clean + low_dose_noise(clean.shape, sigma_hu=25.0, body_mask=clean > -500, seed=0)
    denoised, found = local.denoise(volume.astype(np.float32))
    assert not found["noise"]["nps"]["measured"] and found["noise"]["slice_correlation"][1] == 0.0
    assert rmse(denoised, clean) < rmse(volume, clean)
