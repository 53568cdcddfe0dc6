"""Fixtures: series folders as pl-dicom2matrix writes them, made of synthetic volumes, and matrices of a
known spectrum. The makers are fixtures that return the function, as tests call them with their own sizes."""

from pathlib import Path

import numpy as np
import pytest

from ctsvd_common import contract
from ctsvd_common.contract import Geometry, Manifest, SeriesIdentity, SliceEntry, VolumeInfo


def decaying_volume(m: int = 48, rows: int = 64, cols: int = 96, seed: int = 0) -> np.ndarray:
    """A float32 volume whose slices × pixels matrix has a decaying spectrum plus noise."""
    rng = np.random.default_rng(seed)
    z = np.linspace(0, 1, m)[:, None, None]
    y, x = np.mgrid[0:rows, 0:cols] / max(rows, cols)
    body = ((x - 0.5) ** 2 + (y - 0.35) ** 2) < 0.09 * (1 - 0.4 * z)
    vol = -1000 + 1040 * body + 300 * np.sin(5 * x + 2 * z) * body + 15 * rng.standard_normal((m, rows, cols))
    return vol.astype(np.float32)


def manifest_for(volume: np.ndarray, spacing_mm: float = 2.5) -> Manifest:
    """A complete manifest for ``volume``; its per-slice headers are named but not written."""
    m = volume.shape[0]
    finite = volume[np.isfinite(volume)]
    return Manifest(
        created_by="pl-ssvd-denoise tests",
        created="2026-01-01T00:00:00+00:00",
        series=SeriesIdentity(modality="CT", description="synthetic"),
        volume=VolumeInfo(shape=list(volume.shape), units="HU",
                          min=float(finite.min()) if finite.size else 0.0,
                          max=float(finite.max()) if finite.size else 0.0),
        geometry=Geometry(sorted_by="test", slice_positions_mm=[i * spacing_mm for i in range(m)],
                          slice_spacing_mm=spacing_mm),
        window_presets={"lung": {"center": -600.0, "width": 1500.0}},
        slices=[SliceEntry(index=i, source=f"IM-{i:04d}.dcm", header=f"{contract.HEADERS}/{i:04d}.dcm")
                for i in range(m)],
    )


def write_series(folder: Path, volume: np.ndarray) -> Path:
    """A series folder: volume, manifest and an (empty) headers folder, which this stage only copies."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / contract.VOLUME, volume)
    (folder / contract.HEADERS).mkdir(exist_ok=True)
    contract.write_manifest(folder, manifest_for(volume))
    return folder


def spectrum_matrix(m=64, n=8192, decay=4.0, floor=1.0, seed=0):
    """A float32 m × n matrix whose singular values decay as 1000·exp(-i / decay) + floor."""
    rng = np.random.default_rng(seed)
    U0 = np.linalg.qr(rng.standard_normal((m, m)))[0]
    V0 = np.linalg.qr(rng.standard_normal((n, m)))[0]
    s0 = 1000 * np.exp(-np.arange(m) / decay) + floor
    return ((U0 * s0) @ V0.T).astype(np.float32)


@pytest.fixture(name="decaying_volume")
def decaying_volume_maker():
    return decaying_volume


@pytest.fixture(name="manifest_for")
def manifest_maker():
    return manifest_for


@pytest.fixture(name="write_series")
def series_writer():
    return write_series


@pytest.fixture(name="spectrum_matrix")
def spectrum_matrix_maker():
    return spectrum_matrix


@pytest.fixture
def series_input(tmp_path):
    volume = decaying_volume()
    write_series(tmp_path / "in" / "series-001", volume)
    return tmp_path / "in", volume


@pytest.fixture
def started(monkeypatch) -> dict:
    """Spark's start, stood in for: what Spark would have been given (``master``, ``conf``) is recorded
    here, and the start fails, as without a cluster."""
    given = {}

    def fake_start(master, conf):
        given.update(master=master, conf=conf)
        raise RuntimeError("no Spark here")

    monkeypatch.setattr("ssvd_denoise.spark.session.start", fake_start)
    return given
