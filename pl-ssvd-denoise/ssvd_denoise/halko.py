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

import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from ssvd_denoise import kernels

RCOND = 1e-12


class ColumnBlocks(Protocol):
    """A (m × n) split into blocks of columns, wherever the blocks live."""

    shape: tuple[int, int]

    def sum_over_blocks(self, kernel: Callable[[np.ndarray], tuple]) -> tuple:
        """Apply ``kernel`` to every block and return the elementwise sum of its results."""

    def write_columns(self, kernel: Callable[[np.ndarray], tuple], out: np.ndarray | Path) -> np.ndarray:
        """Apply ``kernel`` (returning ``(columns_block, stats)``) to every block, write each
        ``columns_block`` into the matching columns of ``out`` and return the summed stats."""


@dataclass
class StochasticSVD:
    """The outcome of :func:`stochastic_svd`; ``Vt`` is written to the caller's array."""

    U: np.ndarray
    s: np.ndarray
    k: int
    requested_k: int
    oversample: int
    power_iters: int
    seed: int
    sample_rank: int
    frobenius_norm: float
    residual_norm: float
    passes: list[dict] = field(default_factory=list)

    @property
    def relative_error(self) -> float:
        """‖A − U·diag(s)·Vt‖_F / ‖A‖_F of the stored (float32) factors."""
        return self.residual_norm / self.frobenius_norm if self.frobenius_norm else 0.0


def stochastic_svd(
    blocks: ColumnBlocks,
    k: int,
    *,
    vt_out: Callable[[int], np.ndarray | Path],
    oversample: int = 15,
    power_iters: int = 2,
    seed: int = 0,
    log: Callable[[str], None] = lambda msg: None,
) -> StochasticSVD:
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
    StochasticSVD
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
    passes: list[dict] = []
    total_passes = power_iters + 2

    def run_pass(name: str, fn):
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        passes.append({"pass": name, "seconds": round(dt, 3)})
        log(f"pass {len(passes)}/{total_passes} ({name}) {dt:.2f} s")
        return out

    rng = np.random.default_rng(seed)
    X, _ = np.linalg.qr(rng.standard_normal((m, ell)))
    for i in range(power_iters):
        Z, _ = run_pass(f"power iteration {i + 1}/{power_iters}",
                        lambda: blocks.sum_over_blocks(partial(kernels.sample_range, X=X, with_gram=False)))
        X, _ = np.linalg.qr(Z)

    Z, C = run_pass("sample and Gram",
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
    U, M = _fix_signs(U, M)
    if k_out < k_eff:
        log(f"the sampled space has rank {sample_rank}: returning {k_out} components, not {k_eff}")

    US = U.astype(np.float32).astype(np.float64) * s.astype(np.float32)
    norm2, resid2 = run_pass("eigen-images",
                             lambda: blocks.write_columns(partial(kernels.eigenimages, M=M, US=US), vt_out(k_out)))

    return StochasticSVD(
        U=U, s=s, k=k_out, requested_k=k, oversample=ell - k_eff, power_iters=power_iters, seed=seed,
        sample_rank=sample_rank, frobenius_norm=float(np.sqrt(norm2)),
        residual_norm=float(np.sqrt(max(resid2, 0.0))), passes=passes,
    )


def output_rank(m: int, k: int, oversample: int) -> tuple[int, int]:
    """The number of components returned (k clipped to m) and the sample size ℓ."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if oversample < 0:
        raise ValueError(f"oversample must be 0 or more, got {oversample}")
    k_eff = min(k, m)
    return k_eff, min(k_eff + oversample, m)


def _fix_signs(U: np.ndarray, M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Make the largest-magnitude entry of each column of U positive (and flip Vt to match)."""
    signs = np.sign(U[np.argmax(np.abs(U), axis=0), np.arange(U.shape[1])])
    signs[signs == 0] = 1.0
    return U * signs, M * signs[:, None]
