"""Rebuilding slices from the leading SVD components."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctsvd_common import contract


@dataclass
class Factors:
    """One series' SVD as pl-ssvd-denoise wrote it; Vt stays memory-mapped."""

    U: np.ndarray
    s: np.ndarray
    Vt: np.ndarray
    record: dict

    @property
    def k(self) -> int:
        return len(self.s)


def load_factors(series_dir: Path, volume_shape: tuple[int, ...]) -> Factors:
    """Read U, s, Vt and svd.json, and check them against the volume; ContractError if they disagree."""
    try:
        U = np.load(series_dir / contract.SVD_U, allow_pickle=False)
        s = np.load(series_dir / contract.SVD_S, allow_pickle=False)
        Vt = np.load(series_dir / contract.SVD_VT, mmap_mode="r", allow_pickle=False)
        record = json.loads((series_dir / contract.SVD_JSON).read_text())
    except (OSError, ValueError) as e:
        raise contract.ContractError(f"{series_dir}: no readable SVD here ({type(e).__name__}: {e}); "
                                     "run pl-ssvd-denoise first") from None
    m, n = volume_shape[0], int(np.prod(volume_shape[1:]))
    k = len(s)
    if U.shape != (m, k) or Vt.shape != (k, n):
        raise contract.ContractError(f"{series_dir}: SVD shapes U {U.shape}, s {s.shape}, Vt {Vt.shape} "
                                     f"do not fit a volume of {m} slices × {n} pixels")
    return Factors(U, s, Vt, record)


def rebuild(f: Factors, rank: int, volume_shape: tuple[int, ...]) -> np.ndarray:
    """Slice i = (U[i, :r]·s[:r]) @ Vt[:r], for every slice at once, as float32 HU."""
    weights = (f.U[:, :rank] * f.s[:rank]).astype(np.float32)
    return (weights @ np.asarray(f.Vt[:rank], dtype=np.float32)).reshape(volume_shape)
