"""Both SVD methods against LAPACK, on decaying and flat spectra, without a JVM."""

import numpy as np
import pytest

from ssvd_denoise.factor.gram import GRAM_MAX_SLICES, choose_method, gram_svd
from ssvd_denoise.factor.halko import stochastic_svd
from ssvd_denoise.spark.blocks import NumpyBlocks


def factor(method, A, k, **kw):
    out = {}

    def vt_out(kk):
        out["vt"] = np.zeros((kk, A.shape[1]), np.float32)
        return out["vt"]

    blocks = NumpyBlocks(A, parts=3)
    if method == "gram":
        result = gram_svd(blocks, k, vt_out=vt_out)
    else:
        result = stochastic_svd(blocks, k, vt_out=vt_out, oversample=15, power_iters=2, seed=1)
    return result, out["vt"]


SPECTRA = {
    # σ falls by e every 4 components, then a floor: a CT series' shape
    "decaying": dict(decay=4.0, floor=1.0),
    # σ₁/σ₆₄ ≈ 1.2: nothing for sampling to latch onto
    "flat": dict(decay=300.0, floor=100.0),
}


@pytest.mark.parametrize("spectrum", SPECTRA)
def test_gram_is_exact_on_any_spectrum(spectrum, spectrum_matrix):
    A = spectrum_matrix(m=64, n=8192, **SPECTRA[spectrum])
    A64 = A.astype(np.float64)
    U_ref, s_ref, _ = np.linalg.svd(A64, full_matrices=False)
    result, vt = factor("gram", A, 20)
    assert result.method == "gram" and result.k == 20 and result.passes[0]["pass"] == "Gram matrix"
    assert np.max(np.abs(result.s - s_ref[:20]) / s_ref[:20]) < 1e-11
    # Left vectors equal LAPACK's up to sign; Vt is orthonormal and consistent with them.
    assert np.allclose(np.abs(np.sum(result.U * U_ref[:, :20], axis=0)), 1, atol=1e-8)
    assert np.allclose(vt @ vt.T.astype(np.float64), np.eye(20), atol=1e-5)
    rebuilt = (result.U * result.s) @ vt.astype(np.float64)
    best = np.sqrt(np.sum(s_ref[20:] ** 2)) / np.linalg.norm(A64)  # Eckart–Young
    assert result.relative_error == pytest.approx(np.linalg.norm(A64 - rebuilt) / np.linalg.norm(A64), rel=1e-4)
    assert result.relative_error == pytest.approx(best, rel=1e-4)


@pytest.mark.parametrize("spectrum,tolerance", [("decaying", 1e-6), ("flat", 5e-2)])
def test_randomized_matches_lapack_as_far_as_the_spectrum_lets_it(spectrum, tolerance, spectrum_matrix):
    A = spectrum_matrix(m=64, n=8192, **SPECTRA[spectrum])
    s_ref = np.linalg.svd(A.astype(np.float64), compute_uv=False)
    random_result, _ = factor("randomized", A, 20)
    gram_result, _ = factor("gram", A, 20)
    random_error = np.max(np.abs(random_result.s - s_ref[:20]) / s_ref[:20])
    gram_error = np.max(np.abs(gram_result.s - s_ref[:20]) / s_ref[:20])
    assert random_error < tolerance
    # On a flat spectrum sampling is visibly approximate; the Gram route is not.
    assert gram_error < 1e-11 and (spectrum == "decaying" or random_error > 1e3 * gram_error)


def test_gram_returns_only_the_numerical_rank():
    rng = np.random.default_rng(1)
    A = (rng.standard_normal((30, 3)) @ rng.standard_normal((3, 2048))).astype(np.float32)
    result, vt = factor("gram", A, 10)
    assert result.k == 3 and result.sample_rank == 3 and vt.shape == (3, 2048)
    assert result.relative_error < 1e-6


def test_gram_clips_k_to_the_slices_and_rebuilds_the_input(spectrum_matrix):
    A = spectrum_matrix(m=40, n=4096)
    result, vt = factor("gram", A, 100)
    assert result.k == 40 and result.requested_k == 100
    assert result.relative_error < 1e-6
    assert (result.U[np.abs(result.U).argmax(axis=0), range(40)] > 0).all()


def test_auto_takes_gram_up_to_the_cut_and_says_why():
    assert choose_method("auto", GRAM_MAX_SLICES)[0] == "gram"
    method, reason = choose_method("auto", GRAM_MAX_SLICES + 1)
    assert method == "randomized" and reason.startswith(f"auto: {GRAM_MAX_SLICES + 1} slices > ")
    assert choose_method("randomized", 10) == ("randomized", "--method randomized")
    assert choose_method("gram", 10**5) == ("gram", "--method gram")
