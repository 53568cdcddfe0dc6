"""A decomposed series as pl-ssvd-denoise hands it on, built from the phantom.

The volume comes from pl-dicom2matrix (run as a command, as in a pipeline);
the factors are LAPACK's exact SVD, written in the contract's format, so the
render is tested against known factors without starting Spark.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ctsvd_common import contract
from ctsvd_local.phantom import write_demo_series

BIN = Path(sys.executable).parent


def decomposed_series(root: Path, k: int | None = None, slices: int = 16, size: int = 48):
    demo = write_demo_series(root / "dicom", slices=slices, size=size, noise_hu=25.0, seed=5)
    subprocess.run([str(BIN / "dicom2matrix"), str(root / "dicom"), str(root / "volume")], check=True,
                   capture_output=True, env={**os.environ})
    series = root / "volume" / "series-001"
    A = np.load(series / contract.VOLUME).reshape(slices, -1).astype(np.float64)
    U, s, Vt = np.linalg.svd(A, full_matrices=False)
    k = k or slices
    np.save(series / contract.SVD_U, U[:, :k].astype(np.float32))
    np.save(series / contract.SVD_S, s[:k].astype(np.float32))
    np.save(series / contract.SVD_VT, Vt[:k].astype(np.float32))
    (series / contract.SVD_JSON).write_text(json.dumps({
        "format": "ctsvd-svd", "version": 1, "k": k, "oversample": 0, "power_iters": 0, "seed": 0,
        "frobenius_norm": float(np.linalg.norm(A)),
        "relative_error": float(np.sqrt(max(0.0, 1 - np.sum(s[:k] ** 2) / np.sum(s ** 2))))}))
    return demo, root / "volume", s


@pytest.fixture
def full_rank(tmp_path):
    return decomposed_series(tmp_path)
