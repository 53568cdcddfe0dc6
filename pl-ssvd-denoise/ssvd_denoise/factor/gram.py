"""The exact SVD of a short, wide matrix from its Gram matrix, and the choice of method.

For a CT series A (m slices × n pixels) with m in the hundreds or low
thousands, G = A·Aᵀ is a small m × m matrix, and its eigen-decomposition
G = U·diag(s²)·Uᵀ gives the singular values and left vectors of A exactly
(to float64 rounding). The route is:

1. One pass over the pixel blocks: each task sums its A_j·A_jᵀ in float64
   (the float32 data are exact in float64); Spark adds them up the tree.
2. ``eigh`` of G on the driver: O(m³), under a second for m = 1000.
3. The last pass, shared with the randomized method, writes Vt = Σ⁻¹Uᵀ·A and
   measures the error of the stored factors.

Two passes instead of four, and exact instead of approximate. Forming AAᵀ
squares the condition number: a singular value σ_i loses about
ε·(σ₁/σ_i)² of relative accuracy (ε = 2.2e-16), i.e. 1e-10 at σ₁/σ_i = 1000,
far more than a CT series needs. Directions with σ_i² below m·ε·σ₁² cannot
be told from rounding and are dropped.

The Gram pass costs m²·n multiply-adds (half that with BLAS syrk); a
randomized pass costs 2·m·ℓ·n, and the method makes q + 2 of them. So the
Gram route wins while m is a few times ℓ(q + 2) and the m × m eigenproblem
is small for the driver; :func:`choose_method` draws the line at
:data:`GRAM_MAX_SLICES`, measured on this project's hardware (see the README).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ssvd_denoise.factor import (ColumnBlocks, SvdResult, TimedPasses, fix_signs, kernels, output_rank,
                                 write_eigenimages)

METHODS = ("auto", "gram", "randomized")

# Measured in process, one BLAS thread, n = 65536, k = 50, p = 15, q = 2
# (best of two): Gram route / randomized route took 0.5-0.9 at m = 1024,
# 1.06 at 1536, 2-5 at 2048. Up to here the exact route costs no more time;
# G is 18 MiB and its eigh well under a second on the driver.
GRAM_MAX_SLICES = 1536


def choose_method(requested: str, m: int) -> tuple[str, str]:
    """The method to run for a series of ``m`` slices, and why, in words for the log and svd.json."""
    if requested == "gram":
        return "gram", "--method gram"
    if requested == "randomized":
        return "randomized", "--method randomized"
    if m <= GRAM_MAX_SLICES:
        return "gram", f"auto: {m} slices ≤ {GRAM_MAX_SLICES}, so the exact m × m Gram route is the faster one"
    return "randomized", (f"auto: {m} slices > {GRAM_MAX_SLICES}; the m × m Gram matrix would cost more "
                          f"than the randomized passes")


def gram_svd(
    blocks: ColumnBlocks,
    k: int,
    *,
    vt_out: Callable[[int], np.ndarray | Path],
    log: Callable[[str], None] = lambda msg: None,
) -> SvdResult:
    """The leading k singular triplets of A, exactly, from G = A·Aᵀ.

    Same contract as :func:`ssvd_denoise.factor.halko.stochastic_svd`: U (m × k) and
    s (k, descending) come back in float64, Vt goes to ``vt_out(k)``, signs
    follow sklearn's ``svd_flip``; fewer than k components come back when A
    has lower numerical rank.
    """
    m, n = blocks.shape
    if m > n:
        raise ValueError(f"expected a short, wide matrix (slices ≤ pixels), got {m} × {n}")
    k_eff, _ = output_rank(m, k)
    passes = TimedPasses(2, log)

    (G,) = passes.run("Gram matrix", lambda: blocks.sum_over_blocks(kernels.gram))
    lam, E = np.linalg.eigh(G)
    lam, E = lam[::-1], E[:, ::-1]
    rank = int((lam > m * np.finfo(float).eps * max(lam[0], 0.0)).sum())
    if rank == 0:
        raise ValueError("the matrix is zero: there is nothing to decompose")
    k_out = min(k_eff, rank)
    if k_out < k_eff:
        log(f"the matrix has numerical rank {rank}: returning {k_out} components, not {k_eff}")
    s = np.sqrt(lam[:k_out])
    U, M = fix_signs(E[:, :k_out], E[:, :k_out].T / s[:, None])  # Vt = Σ⁻¹ Uᵀ A

    norm, resid = write_eigenimages(blocks, passes, U, s, M, vt_out)
    return SvdResult(method="gram", U=U, s=s, k=k_out, requested_k=k, oversample=0, power_iters=0, seed=0,
                     sample_rank=rank, frobenius_norm=norm, residual_norm=resid, passes=passes.timings,
                     spectrum=np.sqrt(np.clip(lam, 0.0, None)))
