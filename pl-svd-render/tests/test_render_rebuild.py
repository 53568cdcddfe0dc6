"""Rebuilding slices from SVD factors (svd_render.rebuild), on matrices whose rank is known."""

import numpy as np
import pytest

from ctsvd_common import contract
from svd_render import rank
from svd_render.rebuild import Factors, load_factors, rebuild

SHAPE = (6, 4, 5)   # 6 slices of 4 × 5: A is 6 × 20


def low_rank_volume(r: int, seed: int = 0) -> np.ndarray:
    """A volume whose 6 × 20 matrix has rank exactly ``r``, with values of CT's order (hundreds of HU)."""
    rng = np.random.default_rng(seed)
    m, n = SHAPE[0], SHAPE[1] * SHAPE[2]
    return ((rng.normal(size=(m, r)) * 300) @ rng.normal(size=(r, n))).reshape(SHAPE)


def factors_of(volume: np.ndarray, k: int) -> Factors:
    """The leading k components of the volume's exact SVD, in float32 as pl-ssvd-denoise stores them."""
    A = volume.reshape(volume.shape[0], -1)
    U, s, Vt = np.linalg.svd(A, full_matrices=False)
    return Factors(U[:, :k].astype(np.float32), s[:k].astype(np.float32), Vt[:k].astype(np.float32),
                   record=None)


def write_factors(series, volume: np.ndarray, k: int) -> None:
    """U.npy, s.npy, Vt.npy and svd.json as pl-ssvd-denoise writes them."""
    f = factors_of(volume, k)
    np.save(series / contract.SVD_U, f.U)
    np.save(series / contract.SVD_S, f.s)
    np.save(series / contract.SVD_VT, f.Vt)
    norm = float(np.linalg.norm(volume))
    contract.write_svd(series, contract.SvdRecord(
        plugin="tests", algorithm="numpy.linalg.svd", matrix={"rows": SHAPE[0], "cols": SHAPE[1] * SHAPE[2]},
        k=k, requested_k=k, oversample=0, power_iters=0, seed=0, sample_rank=k,
        singular_values=[float(x) for x in f.s], energy_fraction=[float(x) ** 2 / norm ** 2 for x in f.s],
        frobenius_norm=norm, residual_norm=0.0, relative_error=0.0, spark={}, timings={}))


def close(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to float32 rounding, relative to the volume's scale."""
    return float(np.abs(a - b).max()) <= 1e-5 * float(np.abs(b).max())


def test_a_rank_3_volume_is_rebuilt_exactly_at_rank_3_and_not_below():
    volume = low_rank_volume(3)
    f = factors_of(volume, k=5)
    assert f.k == 5
    for r in (3, 4, 5):     # the components beyond the third are zero: adding them changes nothing
        rebuilt = rebuild(f, r, SHAPE)
        assert rebuilt.dtype == np.float32 and rebuilt.shape == SHAPE
        assert close(rebuilt, volume), r
    assert not close(rebuild(f, 2, SHAPE), volume)


def test_rank_1_is_the_leading_component_slice_by_slice():
    volume = low_rank_volume(3, seed=1)
    f = factors_of(volume, k=3)
    expected = (f.s[0] * np.outer(f.U[:, 0], f.Vt[0])).reshape(SHAPE)   # slice i = u_i0 · s_0 · v_0
    assert close(rebuild(f, 1, SHAPE), expected)


def test_percent_removed_keeps_the_leading_components():
    """Removing the last 40 % of k = 5 components keeps 3: a rank-3 volume comes back whole."""
    volume = low_rank_volume(3, seed=2)
    f = factors_of(volume, k=5)
    choice = rank.choose(None, 40.0, f.s, SHAPE[0], SHAPE[1] * SHAPE[2], float(np.linalg.norm(volume)))
    assert (choice.rank, choice.rule) == (3, "percent-removed")
    assert close(rebuild(f, choice.rank, SHAPE), volume)
    # However much is removed, one component stays.
    assert rank.choose(None, 99.0, f.s, SHAPE[0], SHAPE[1] * SHAPE[2], float(np.linalg.norm(volume))).rank == 1


def test_a_rank_beyond_k_is_clipped_to_k():
    volume = low_rank_volume(5, seed=3)
    f = factors_of(volume, k=4)
    choice = rank.choose(9, 0.0, f.s, SHAPE[0], SHAPE[1] * SHAPE[2], float(np.linalg.norm(volume)))
    assert choice.rank == 4 and choice.warnings
    np.testing.assert_array_equal(rebuild(f, choice.rank, SHAPE), rebuild(f, 4, SHAPE))


def test_factors_load_as_written_with_vt_memory_mapped(tmp_path):
    volume = low_rank_volume(3)
    write_factors(tmp_path, volume, k=4)
    f = load_factors(tmp_path, SHAPE)
    assert f.k == 4 and f.record.k == 4 and isinstance(f.Vt, np.memmap)
    assert close(rebuild(f, 3, SHAPE), volume)


@pytest.mark.parametrize("spoil, message", [
    (lambda d: (d / contract.SVD_VT).unlink(), "Vt.npy: cannot read the SVD (FileNotFoundError"),
    (lambda d: (d / contract.SVD_U).write_bytes(b"not numpy"), "U.npy: cannot read the SVD (ValueError"),
    (lambda d: np.save(d / contract.SVD_S, np.array([3.0, np.nan, 1.0, 0.5], np.float32)), "not finite"),
    (lambda d: np.save(d / contract.SVD_S, np.array([3.0, -1.0, 1.0, 0.5], np.float32)), "non-negative"),
    (lambda d: np.save(d / contract.SVD_U, np.zeros((5, 4), np.float32)), "does not fit a volume of 6 slices"),
    (lambda d: np.save(d / contract.SVD_S, np.ones(3, np.float32)), "does not fit a volume of 6 slices"),
])
def test_factors_that_do_not_fit_the_volume_are_refused(tmp_path, spoil, message):
    write_factors(tmp_path, low_rank_volume(3), k=4)
    spoil(tmp_path)
    with pytest.raises(contract.ContractError) as e:
        load_factors(tmp_path, SHAPE)
    assert message in str(e.value)
