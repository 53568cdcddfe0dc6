"""Stochastic SVD of a short, wide matrix distributed over column blocks.

The matrix is a CT series read as A (m × n): one row per slice, one column
per pixel, with m (a few hundred) far smaller than n (a quarter of a million
or more). Only the pixel dimension is distributed. Everything on the slice
side (m × ℓ, ℓ × ℓ) is small and lives on the driver.

The method is Halko, Martinsson & Tropp's randomized range finder with
subspace iteration (2011, Algorithms 4.4 and 5.1), the family of Mahout's
``dssvd(A, k, p, q)``, arranged for m ≪ n:

1. Draw Ω (m × ℓ), ℓ = k + p, from ``seed``; X = orth(Ω).
2. Power iterations, each one pass over A: X ← orth(A Aᵀ X). The QR is of an
   m × ℓ matrix, on the driver.
3. One more pass gives both Z = A Aᵀ X and C = Yᵀ Y with Y = Aᵀ X (n × ℓ).
   Y spans the sampled row space; with C = E Λ Eᵀ, Q = Y E Λ^-½ is an
   orthonormal basis of it, and B = Qᵀ Aᵀ = Λ^-½ Eᵀ Zᵀ (ℓ × m) without ever
   forming Q. The SVD B = Û Σ Wᵀ on the driver gives U = W, s = Σ.
4. A last pass writes the eigen-images Vt = (X E Λ^-½ Û)ᵀ A and measures the
   reconstruction error of the stored outputs.

That is 2q + 2 applications of A or Aᵀ, as in Halko's scheme, in q + 1 passes
(plus the pass that writes Vt), each returning only small matrices.

Numerical notes. The passes compute in float64 (see ``kernels``). Halko et
al. orthonormalise between every application of A and Aᵀ; here the sample is
orthonormalised after each A Aᵀ, on the slice side. Squaring the spectrum
once per step costs accuracy only for directions with σ < √ε·σ₀ ≈ 1.5e-8·σ₀
in float64, far below anything a CT series holds, and it halves the number
of passes. Without any normalisation, (A Aᵀ)^q drowns every component but the
first few in rounding; sklearn's ``randomized_svd`` with its default
normaliser showed that on this project's phantoms (0.88 relative error in the
10th singular value). The final Gram matrix C is eigen-decomposed in float64;
sample directions with energy below ``rcond``·λ_max are dropped, as they
cannot be told from rounding, so the result may have fewer than k
components when A itself has lower rank.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from ssvd_denoise.factor import (ColumnBlocks, SvdResult, TimedPasses, fix_signs, kernels, output_rank,
                                 write_eigenimages)

RCOND = 1e-12


def stochastic_svd(
    blocks: ColumnBlocks,
    k: int,
    *,
    vt_out: Callable[[int], np.ndarray | Path],
    oversample: int = 15,
    power_iters: int = 2,
    seed: int = 0,
    log: Callable[[str], None] = lambda msg: None,
) -> SvdResult:
    """Compute a rank-k approximation A ≈ U·diag(s)·Vt by randomized subspace iteration.

    Parameters
    ----------
    blocks : ColumnBlocks
        The matrix A (m × n, m ≤ n), split into blocks of columns.
    k : int
        Number of singular triplets wanted. Clipped to m.
    vt_out : callable
        Called with the final number of components k once it is known; it
        returns where the eigen-images go: a (k, n) float32 array, or the path
        of a ``.npy`` of that shape that tasks may open and write themselves.
    oversample : int, default=15
        Extra sample vectors p; ℓ = k + p (at most m) vectors are iterated.
        More make the leading k more accurate at a cost linear in ℓ.
    power_iters : int, default=2
        Subspace iterations q. Each is one pass over A and sharpens the
        spectrum's decay by (σ_i/σ_ℓ)²; 1–3 suffice for CT volumes.
    seed : int, default=0
        Seed of the Gaussian test matrix Ω; the result is reproducible.
    log : callable
        Receives one progress line per pass.

    Returns
    -------
    SvdResult
        ``U`` (m × k), ``s`` (k, descending) in float64, error figures and
        per-pass timings. Signs are fixed so that each column of U has its
        largest-magnitude entry positive, as sklearn's ``svd_flip`` does.

    References
    ----------
    N. Halko, P.-G. Martinsson, J. A. Tropp, "Finding structure with
    randomness: probabilistic algorithms for constructing approximate matrix
    decompositions", SIAM Review 53(2), 2011.
    """
    m, n = blocks.shape
    if m > n:
        raise ValueError(f"expected a short, wide matrix (slices ≤ pixels), got {m} × {n}")
    k_eff, ell = output_rank(m, k, oversample)
    passes = TimedPasses(power_iters + 2, log)

    rng = np.random.default_rng(seed)
    X, _ = np.linalg.qr(rng.standard_normal((m, ell)))
    for i in range(power_iters):
        Z, _ = passes.run(f"power iteration {i + 1}/{power_iters}",
                          lambda: blocks.sum_over_blocks(partial(kernels.sample_range, X=X, with_gram=False)))
        X, _ = np.linalg.qr(Z)

    Z, C = passes.run("sample and Gram",
                      lambda: blocks.sum_over_blocks(partial(kernels.sample_range, X=X, with_gram=True)))

    # Rayleigh–Ritz on the sampled row space, without forming its basis Q = Y E Λ^-½.
    lam, E = np.linalg.eigh(C)
    lam, E = lam[::-1], E[:, ::-1]
    keep = lam > RCOND * max(lam[0], 0.0)
    sample_rank = int(keep.sum())
    if sample_rank == 0:
        raise ValueError("the matrix is zero: there is nothing to decompose")
    W = E[:, keep] / np.sqrt(lam[keep])  # Q = Y W
    B = W.T @ Z.T  # Qᵀ Aᵀ, sample_rank × m
    U_hat, sigma, Wt = np.linalg.svd(B, full_matrices=False)
    k_out = min(k_eff, sample_rank)
    U = Wt[:k_out].T
    s = sigma[:k_out]
    M = (X @ W @ U_hat[:, :k_out]).T  # Vt = M A
    U, M = fix_signs(U, M)
    if k_out < k_eff:
        log(f"the sampled space has rank {sample_rank}: returning {k_out} components, not {k_eff}")

    norm, resid = write_eigenimages(blocks, passes, U, s, M, vt_out)
    return SvdResult(
        method="randomized", U=U, s=s, k=k_out, requested_k=k, oversample=ell - k_eff, power_iters=power_iters,
        seed=seed, sample_rank=sample_rank, frobenius_norm=norm, residual_norm=resid, passes=passes.timings,
    )
