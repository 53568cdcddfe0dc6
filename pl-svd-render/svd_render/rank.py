"""Choosing how many SVD components to keep.

Three ways, as the user asks:

* a rank given directly;
* "remove the last x % of the k components", the original work's knob;
* automatically, by Gavish & Donoho's optimal hard threshold (2014).

The automatic rule keeps the singular values above τ = λ*(β)·σ·√n, where
β = m/n and σ is the noise level per pixel. For a CT series β is tiny
(a few hundred slices against a quarter of a million pixels), and then the
Marchenko–Pastur spread of the noise's singular values is only ±√β around
σ·√n: the noise singular values are nearly equal. So σ·√n is estimated as the
root-mean-square of the singular values *beyond* k, whose total energy is
known exactly as ‖A‖²_F − Σ s²; that needs no more than the truncated SVD.
When k covers every slice, the median singular value stands in for it, as in
Gavish & Donoho's rule for unknown noise. Anatomy that varies from slice to
slice also lives in the tail, so the estimate errs towards more smoothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RankChoice:
    rank: int
    method: str
    threshold: float | None = None
    noise_singular_value: float | None = None
    warning: str | None = None

    def describe(self) -> str:
        if self.threshold is None:
            return f"rank {self.rank} ({self.method})"
        return f"rank {self.rank} ({self.method}, threshold {self.threshold:.4g})"


def optimal_lambda(beta: float) -> float:
    """Gavish & Donoho's λ*(β) for a known noise level (their eq. 11)."""
    return math.sqrt(2 * (beta + 1) + 8 * beta / (beta + 1 + math.sqrt(beta ** 2 + 14 * beta + 1)))


def gavish_donoho(s: np.ndarray, m: int, n: int, frobenius_norm: float) -> RankChoice:
    """Keep the singular values above the optimal hard threshold for the estimated noise."""
    s = np.asarray(s, dtype=float)
    k = len(s)
    beta = m / n
    tail = m - k
    if tail > 0:
        tail_energy = max(frobenius_norm ** 2 - float(np.sum(s ** 2)), 0.0)
        noise = math.sqrt(tail_energy / tail)
        tau = optimal_lambda(beta) * noise
        method = "Gavish-Donoho threshold, noise from the tail beyond k"
    else:
        noise = float(np.median(s))
        tau = _omega(beta) * noise
        method = "Gavish-Donoho threshold, noise from the median singular value"
    rank = max(1, int(np.sum(s > tau)))
    return RankChoice(rank, method, threshold=tau, noise_singular_value=noise)


def _omega(beta: float) -> float:
    """Gavish & Donoho's ω(β) for unknown noise (their approximation, eq. 5)."""
    return 0.56 * beta ** 3 - 0.95 * beta ** 2 + 1.82 * beta + 1.43


def parse_rank(rank: str, percent_removed: float) -> int | None:
    """Check ``--rank`` and ``--percent-removed`` before any data is read.

    Returns the rank asked for, or None for ``auto`` or a percentage; a
    ValueError names the flag and what it accepts.
    """
    if not 0 <= percent_removed < 100:  # NaN fails this too
        raise ValueError(f"--percent-removed: expected a percentage in [0, 100), got {percent_removed:g}")
    text = rank.strip().lower()
    if text == "auto":
        return None
    try:
        r = int(text)
    except ValueError:
        r = 0
    if r < 1:
        raise ValueError(f"--rank: expected 'auto' or a whole number of 1 or more, got {rank!r}")
    if percent_removed:
        raise ValueError("--rank: give either --rank or --percent-removed, not both")
    return r


def choose(rank: int | None, percent_removed: float, s: np.ndarray, m: int, n: int,
           frobenius_norm: float) -> RankChoice:
    """The rank for one series from the checked flags (see :func:`parse_rank`) and its k components."""
    k = len(s)
    if percent_removed:
        kept = max(1, k - int(round(k * percent_removed / 100)))
        return RankChoice(kept, f"last {percent_removed:g} % of {k} components removed")
    if rank is None:
        return gavish_donoho(s, m, n, frobenius_norm)
    if rank > k:  # a series with fewer components than asked for keeps all it has
        return RankChoice(k, f"given {rank}, clipped to the k = {k} components available",
                          warning=f"--rank {rank} is more than the k = {k} components: all {k} are kept")
    return RankChoice(rank, "given")
