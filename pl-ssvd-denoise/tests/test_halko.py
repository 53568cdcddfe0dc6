"""The numerical routine, checked against LAPACK without a JVM."""

import numpy as np
import pytest

from ssvd_denoise.factor.halko import stochastic_svd
from ssvd_denoise.spark.blocks import ALIGN, NumpyBlocks, column_ranges


def run(A, k, **kw):
    out = {}

    def vt_out(kk):
        out["vt"] = np.zeros((kk, A.shape[1]), np.float32)
        return out["vt"]

    result = stochastic_svd(NumpyBlocks(A, parts=3), k, vt_out=vt_out, **kw)
    return result, out["vt"]


def test_top_singular_values_match_lapack(spectrum_matrix):
    A = spectrum_matrix()
    reference = np.linalg.svd(A.astype(np.float64), compute_uv=False)
    result, vt = run(A, 10, oversample=10, power_iters=2, seed=3)
    rel = np.abs(result.s - reference[:10]) / reference[:10]
    assert rel.max() < 1e-6
    # The factors agree with the singular values and with each other.
    assert np.allclose(vt @ vt.T, np.eye(10), atol=1e-5)
    assert np.allclose(result.U.T @ result.U, np.eye(10), atol=1e-10)
    assert np.allclose(A.astype(np.float64) @ vt.T.astype(np.float64), result.U * result.s, rtol=0, atol=1e-3 * result.s[0])


def test_power_iterations_sharpen_a_slowly_decaying_spectrum(spectrum_matrix):
    A = spectrum_matrix(decay=30.0, floor=50.0)
    reference = np.linalg.svd(A.astype(np.float64), compute_uv=False)[:10]
    errors = [np.abs(run(A, 10, oversample=5, power_iters=q)[0].s - reference).max() / reference[-1]
              for q in (0, 2)]
    assert errors[1] < errors[0] / 3


def test_full_rank_rebuild_equals_the_input_to_float32_precision(spectrum_matrix):
    A = spectrum_matrix(m=40, n=4096)
    result, vt = run(A, 40, oversample=15, power_iters=1)
    assert result.k == 40
    rebuilt = (result.U.astype(np.float32) * result.s.astype(np.float32)) @ vt
    assert np.linalg.norm(rebuilt - A) / np.linalg.norm(A) < 1e-6
    assert result.relative_error < 1e-6
    assert abs(result.relative_error - np.linalg.norm(rebuilt - A) / np.linalg.norm(A)) < 1e-6
    # All that is left is Vt's float32 rounding, and the report counts exactly that.
    with_exact_u = (result.U * result.s) @ vt.astype(np.float64)
    assert result.relative_error == pytest.approx(np.linalg.norm(with_exact_u - A) / np.linalg.norm(A), rel=1e-3)


def test_reported_error_is_the_error_of_the_outputs(spectrum_matrix):
    A = spectrum_matrix()
    result, vt = run(A, 8, oversample=8, power_iters=2)
    rebuilt = (result.U * result.s) @ vt.astype(np.float64)
    measured = np.linalg.norm(A - rebuilt) / np.linalg.norm(A)
    assert result.relative_error == pytest.approx(measured, rel=1e-4)


@pytest.mark.parametrize("decay, floor, power_iters", [(1e9, 1.0, 0), (3.0, 1e-4, 0), (30.0, 50.0, 1)])
def test_reported_error_holds_without_forming_the_residual(decay, floor, power_iters, spectrum_matrix):
    # A flat spectrum sampled without power iterations (a poor subspace), a sharp one with a tiny
    # floor, and a slow one: the error comes from sums, and must equal the rebuilt factors' error.
    A = spectrum_matrix(decay=decay, floor=floor, seed=4)
    result, vt = run(A, 12, oversample=4, power_iters=power_iters)
    rebuilt = (result.U.astype(np.float32).astype(np.float64) * result.s) @ vt.astype(np.float64)
    measured = np.linalg.norm(A - rebuilt) / np.linalg.norm(A)
    assert result.relative_error == pytest.approx(measured, rel=1e-5, abs=1e-7)


def test_rank_deficient_matrix_returns_only_what_is_there():
    rng = np.random.default_rng(1)
    A = (rng.standard_normal((30, 3)) @ rng.standard_normal((3, 2048))).astype(np.float32)
    result, vt = run(A, 10, oversample=5)
    assert result.k == 3 and vt.shape == (3, 2048)
    assert result.relative_error < 1e-6


def test_same_seed_same_result_and_signs_are_fixed(spectrum_matrix):
    A = spectrum_matrix()
    (r1, v1), (r2, v2) = run(A, 5, seed=7), run(A, 5, seed=7)
    assert np.array_equal(r1.s, r2.s) and np.array_equal(v1, v2)
    assert (r1.U[np.abs(r1.U).argmax(axis=0), range(5)] > 0).all()


@pytest.mark.parametrize("bad", [dict(k=0), dict(k=3, oversample=-1)])
def test_invalid_parameters_are_refused(bad, spectrum_matrix):
    with pytest.raises(ValueError):
        run(spectrum_matrix(m=8, n=1024), **bad)


@pytest.mark.parametrize("n,parts", [(1, 4), (1000, 3), (262144, 2), (65536 + 17, 7), (5000, 100)])
def test_column_ranges_cover_everything_on_page_edges(n, parts):
    ranges = column_ranges(n, parts)
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert all(c0 % ALIGN == 0 for c0, _ in ranges)
    assert len(ranges) <= parts
