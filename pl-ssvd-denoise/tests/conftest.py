"""Fixtures: series folders as pl-dicom2matrix writes them, made of synthetic volumes."""

import json
from pathlib import Path

import numpy as np
import pytest

from ctsvd_common import contract


def decaying_volume(m: int = 48, rows: int = 64, cols: int = 96, seed: int = 0) -> np.ndarray:
    """A float32 volume whose slices × pixels matrix has a decaying spectrum plus noise."""
    rng = np.random.default_rng(seed)
    z = np.linspace(0, 1, m)[:, None, None]
    y, x = np.mgrid[0:rows, 0:cols] / max(rows, cols)
    body = ((x - 0.5) ** 2 + (y - 0.35) ** 2) < 0.09 * (1 - 0.4 * z)
    vol = -1000 + 1040 * body + 300 * np.sin(5 * x + 2 * z) * body + 15 * rng.standard_normal((m, rows, cols))
    return vol.astype(np.float32)


def write_series(folder: Path, volume: np.ndarray) -> Path:
    """A minimal but valid series folder: volume, manifest and an (empty) headers folder."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / contract.VOLUME, volume)
    (folder / contract.HEADERS).mkdir(exist_ok=True)
    manifest = {"format": contract.MANIFEST_FORMAT, "version": contract.MANIFEST_VERSION,
                "volume": {"file": contract.VOLUME, "shape": list(volume.shape)}, "slices": []}
    (folder / contract.MANIFEST).write_text(json.dumps(manifest))
    return folder


@pytest.fixture
def series_input(tmp_path):
    volume = decaying_volume()
    write_series(tmp_path / "in" / "series-001", volume)
    return tmp_path / "in", volume
