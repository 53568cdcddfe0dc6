"""What both SVD methods share: the result, the timed passes over the data, and the last pass.

Whichever way U and s are found (:mod:`gram` exactly, :mod:`halko` by
sampling), the driver ends with a small matrix M (k × m) such that
Vt = M·A. One more pass over the blocks writes Vt and measures the error of
the stored factors; that pass, the sign convention and the record of what
was done are the same for both, and live here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from ssvd_denoise.factor import kernels


class ColumnBlocks(Protocol):
    """A (m × n) split into blocks of columns, wherever the blocks live."""

    shape: tuple[int, int]

    def sum_over_blocks(self, kernel: Callable[[np.ndarray], tuple]) -> tuple:
        """Apply ``kernel`` to every block and return the elementwise sum of its results."""

    def write_columns(self, kernel: Callable[[np.ndarray], tuple], out: np.ndarray | Path) -> np.ndarray:
        """Apply ``kernel`` (returning ``(columns_block, stats)``) to every block, write each
        ``columns_block`` into the matching columns of ``out`` and return the summed stats."""


@dataclass
class SvdResult:
    """U, s and error figures of one factorisation; ``Vt`` went to the caller's array or file."""

    method: str                      # "gram" or "randomized"
    U: np.ndarray
    s: np.ndarray
    k: int
    requested_k: int
    oversample: int
    power_iters: int
    seed: int
    sample_rank: int                 # numerical rank seen (Gram matrix or sample)
    frobenius_norm: float
    residual_norm: float
    passes: list[dict] = field(default_factory=list)
    spectrum: np.ndarray | None = None   # every singular value, where the method has them (the Gram route)

    @property
    def relative_error(self) -> float:
        """‖A − U·diag(s)·Vt‖_F / ‖A‖_F of the stored (float32) factors."""
        return self.residual_norm / self.frobenius_norm if self.frobenius_norm else 0.0

    @property
    def seconds(self) -> float:
        return round(sum(p["seconds"] for p in self.passes), 3)


class TimedPasses:
    """Runs the passes over the data one by one, keeping each one's time and logging
    ``pass i/N (name) t s``."""

    def __init__(self, total: int, log: Callable[[str], None]):
        self.total, self.log, self.timings = total, log, []

    def run(self, name: str, fn: Callable[[], tuple]) -> tuple:
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        self.timings.append({"pass": name, "seconds": round(dt, 3)})
        self.log(f"pass {len(self.timings)}/{self.total} ({name}) {dt:.2f} s")
        return out


def output_rank(m: int, k: int, oversample: int = 0) -> tuple[int, int]:
    """The number of components returned (k clipped to m) and the sample size ℓ."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if oversample < 0:
        raise ValueError(f"oversample must be 0 or more, got {oversample}")
    k_eff = min(k, m)
    return k_eff, min(k_eff + oversample, m)


def fix_signs(U: np.ndarray, M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Make the largest-magnitude entry of each column of U positive (and flip Vt's rows to match),
    as sklearn's ``svd_flip`` does, so results do not depend on the eigensolver's whims."""
    signs = np.sign(U[np.argmax(np.abs(U), axis=0), np.arange(U.shape[1])])
    signs[signs == 0] = 1.0
    return U * signs, M * signs[:, None]


def write_eigenimages(blocks: ColumnBlocks, passes: TimedPasses, U: np.ndarray, s: np.ndarray, M: np.ndarray,
                      vt_out: Callable[[int], np.ndarray | Path]) -> tuple[float, float]:
    """The last pass: Vt = M·A into ``vt_out(k)``; returns ‖A‖_F and ‖A − U·diag(s)·Vt‖_F.

    The error is that of Vt as stored (float32), from sums the pass collects
    on the way (see :func:`kernels.eigenimages`), not from a residual matrix.
    """
    norm2, kept2, rounding2 = passes.run("eigen-images", lambda: blocks.write_columns(
        partial(kernels.eigenimages, M=M, s=s), vt_out(len(s))))
    return float(np.sqrt(norm2)), float(np.sqrt(max(norm2 - kept2, 0.0) + rounding2))
