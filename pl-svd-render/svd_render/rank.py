"""Choosing how many SVD components to keep, and what the spectrum tells of the noise.

Three ways to choose, as the user asks:

* a rank given directly;
* "remove the last x % of the k components", the original work's knob;
* automatically, by Gavish & Donoho's optimal hard threshold (2014) for a
  known noise level: keep the singular values above τ = λ*(β)·σ·√n, β = m/n.

The noise level σ (per pixel, so in HU) comes from the spectrum. For m ≪ n
the singular values of pure noise all lie in the narrow Marchenko–Pastur
bulk σ(√n ± √m). With r components above that bulk, the rest of A's energy
is noise, and σ² = (‖A‖²_F − Σ_{i<r} s_i²) / ((m − r)(n − r)): that energy
over its degrees of freedom. ‖A‖_F (in svd.json) makes the energy beyond the
k computed components exact, so a truncated SVD suffices. σ and r are found
together as a fixed point from r = 0, where σ is largest, and r only grows.

When pl-ssvd-denoise measured the series' noise (``svd.json``'s ``noise``:
σ map, in-plane NPS, slice correlation; :mod:`ctsvd_common.noise`), the
automatic rank uses it instead (:func:`from_noise_model`): CT noise is shared
between neighbouring slices and correlated in-plane, which the white-noise
bulk above does not know, and the measured model needs no noise floor in the
computed components. The exact Gram route stores every singular value, so the
cut is counted over the whole spectrum, not only the k kept.

Without a model the spectrum's estimate is believed only when the spectrum shows its noise floor: at
least one computed component inside the bulk, and the floor holding at least
a quarter of the m components (a slowly decaying spectrum looks flat over a
few components). Otherwise the energy beyond the components above the bulk
still holds anatomy that varies from slice to slice, σ is only an upper bound
(on one real series 44 HU, where the noise was 3–6 HU), and it is reported as
not estimable: the threshold set from it is too high and may remove anatomy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# The bulk's edges are widened by this factor of their half-width √m for
# finite-size fluctuations: with it, σ of low-rank + Gaussian noise comes out
# within about 2 % and the floor is recognised at 8 to 200 slices.
BULK_SLACK = 1.5
FLOOR_FRACTION = 0.25

LARGER_K = "run pl-ssvd-denoise with a larger --k"


@dataclass(frozen=True)
class Noise:
    sigma: float      # HU per pixel; only an upper bound when not estimable
    estimable: bool
    above: int        # computed components above the noise bulk

    def describe(self) -> str:
        if self.estimable:
            return f"{self.sigma:.3g} HU"
        return f"not estimable from the computed components (at most about {self.sigma:.3g} HU)"


@dataclass(frozen=True)
class RankChoice:
    rank: int
    method: str
    rule: str                         # "given", "percent-removed" or "gavish-donoho"
    noise: Noise
    threshold: float | None = None    # τ, for "gavish-donoho"
    warnings: tuple[str, ...] = ()

    @property
    def automatic(self) -> bool:
        return self.rule == "gavish-donoho"

    def describe(self) -> str:
        if self.threshold is None:
            return f"rank {self.rank} ({self.method})"
        return f"rank {self.rank} ({self.method}, τ = {self.threshold:.4g})"


def noise_level(s: np.ndarray, m: int, n: int, frobenius_norm: float) -> Noise:
    """σ from the k computed singular values of an m × n matrix and its Frobenius norm (see above)."""
    s = np.asarray(s, dtype=float)
    k = len(s)
    energy = float(frobenius_norm) ** 2
    r = 0
    while True:
        sigma = math.sqrt(max(energy - float(np.sum(s[:r] ** 2)), 0.0) / ((m - r) * (n - r)))
        edge = sigma * (math.sqrt(n - r) + BULK_SLACK * math.sqrt(m - r))
        above = min(int(np.sum(s > edge)), k, m - 1)  # m - 1: σ needs one component's worth of energy
        if above <= r:
            break
        r = above
    floor = s[r:]
    estimable = (r < k and m - r >= max(2, FLOOR_FRACTION * m)
                 and floor.min() >= sigma * (math.sqrt(n - r) - BULK_SLACK * math.sqrt(m - r)))
    return Noise(sigma, bool(estimable), r)


def optimal_lambda(beta: float) -> float:
    """Gavish & Donoho's λ*(β) for a known noise level (their eq. 11)."""
    return math.sqrt(2 * (beta + 1) + 8 * beta / (beta + 1 + math.sqrt(beta ** 2 + 14 * beta + 1)))


def gavish_donoho(s: np.ndarray, m: int, n: int, noise: Noise) -> RankChoice:
    """Keep the singular values above the optimal hard threshold for the estimated noise."""
    s = np.asarray(s, dtype=float)
    k = len(s)
    tau = optimal_lambda(m / n) * noise.sigma * math.sqrt(n)
    above = int(np.sum(s > tau))
    if above == k:
        # The rule's cut lies somewhere beyond the computed components: k, not the rule, decided.
        warning = (f"--rank auto: all k = {k} computed components lie above the Gavish-Donoho threshold, "
                   f"so the cut is at k, not where the rule would put it: k is too small for the rule; {LARGER_K}")
    elif not noise.estimable:
        warning = (f"--rank auto: the noise level is not estimable from the k = {k} computed components: "
                   f"the spectrum shows no noise floor, so the threshold rests on an upper bound of the noise "
                   f"and may remove anatomy" + (f"; {LARGER_K}" if k < m else ""))
    else:
        warning = None
    return RankChoice(max(1, above), "Gavish-Donoho threshold", "gavish-donoho", noise, threshold=tau,
                      warnings=(warning,) if warning else ())


def from_noise_model(s: np.ndarray, spectrum: np.ndarray | None, m: int, n: int, model: dict) -> RankChoice:
    """Gavish & Donoho's hard threshold for the measured noise of the series.

    The noise matrix has slices correlated by T (the measured ρ_k), pixels of variance σ² (the σ
    map) correlated in-plane by the NPS. Whitening it at its worst direction gives a white matrix
    of σ̄² λ_max(T) per entry, and the in-plane correlation leaves n / c independent columns, c =
    Σ_d R(d)² = mean(NPS²) (Parseval). So τ = λ*(β)·σ̄·√(λ_max(T)·n), β = m·c / n.
    """
    from ctsvd_common import noise as noise_model   # render reads only the record of it
    measured = noise_model.NoiseModel.from_summary(model)
    sigma = math.sqrt(float(np.mean(np.square(measured.sigma_map))))
    worst = float(np.linalg.eigvalsh(measured.covariance(0, m)).max())
    c = float(np.mean(np.square(measured.nps)))
    beta = min(1.0, m * c / n)
    tau = optimal_lambda(beta) * sigma * math.sqrt(worst * n)
    values = np.asarray(spectrum if spectrum is not None else s, float)
    above = int(np.sum(values > tau))
    k = len(s)
    warnings = ()
    if above > k:
        warnings = (f"--rank auto: the measured noise puts the cut at {above} components, beyond the k = {k} "
                    f"computed: all {k} are kept; {LARGER_K}",)
    noise = Noise(sigma, True, min(above, k))
    return RankChoice(max(1, min(above, k)), "Gavish-Donoho threshold for the measured noise", "gavish-donoho",
                      noise, threshold=tau, warnings=warnings)


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
           frobenius_norm: float, model: dict | None = None, spectrum: np.ndarray | None = None) -> RankChoice:
    """The rank for one series from the checked flags (see :func:`parse_rank`) and its k components;
    ``model`` is the series' measured noise (svd.json's ``noise``), ``spectrum`` every singular value."""
    k = len(s)
    if rank is None and not percent_removed and model is not None:
        return from_noise_model(s, spectrum, m, n, model)
    noise = noise_level(s, m, n, frobenius_norm)
    if percent_removed:
        kept = max(1, k - int(round(k * percent_removed / 100)))
        return RankChoice(kept, f"last {percent_removed:g} % of {k} components removed", "percent-removed", noise)
    if rank is None:
        return gavish_donoho(s, m, n, noise)
    if rank > k:  # a series with fewer components than asked for keeps all it has
        return RankChoice(k, f"given {rank}, clipped to the k = {k} components available", "given", noise,
                          warnings=(f"--rank {rank} is more than the k = {k} components: all {k} are kept",))
    return RankChoice(rank, "given", "given", noise)
