"""Rebuilding slices from the leading SVD components."""

from __future__ import annotations

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
    record: contract.SvdRecord

    @property
    def k(self) -> int:
        return len(self.s)


def load_factors(series_dir: Path, volume_shape: tuple[int, ...]) -> Factors:
    """Read U, s, Vt and svd.json, and check them against the volume; ContractError if they disagree."""
    record = contract.read_svd(series_dir)
    arrays = []
    for name in (contract.SVD_U, contract.SVD_S, contract.SVD_VT):
        try:
            arrays.append(np.load(series_dir / name, mmap_mode="r" if name == contract.SVD_VT else None,
                                  allow_pickle=False))
        except (OSError, ValueError) as e:
            raise contract.ContractError(f"{series_dir / name}: cannot read the SVD ({type(e).__name__}: missing, "
                                         "truncated or not a .npy file); run pl-ssvd-denoise again") from None
    U, s, Vt = arrays
    if not (np.all(np.isfinite(s)) and np.all(s >= 0) and np.all(np.isfinite(U))
            and np.all(np.isfinite(record.singular_values)) and np.all(np.asarray(record.singular_values) >= 0)):
        raise contract.ContractError("the SVD holds singular values or weights that are not finite and "
                                     "non-negative (NaN, infinity or below 0); run pl-ssvd-denoise again")
    m, n = volume_shape[0], int(np.prod(volume_shape[1:]))
    k = len(s)
    if U.shape != (m, k) or Vt.shape != (k, n) or record.k != k:
        raise contract.ContractError(f"the SVD (U {U.shape}, s {s.shape}, Vt {Vt.shape}, k = {record.k} in "
                                     f"{contract.SVD_JSON}) does not fit a volume of {m} slices × {n} pixels")
    return Factors(U, s, Vt, record)


def rebuild(f: Factors, rank: int, volume_shape: tuple[int, ...]) -> np.ndarray:
    """Slice i = (U[i, :r]·s[:r]) @ Vt[:r], for every slice at once, as float32 HU."""
    weights = (f.U[:, :rank] * f.s[:rank]).astype(np.float32)
    return (weights @ np.asarray(f.Vt[:rank], dtype=np.float32)).reshape(volume_shape)
