"""Series folders as the suite's stages hand them on, built without running the stages.

- :func:`write_series`: a folder as pl-dicom2matrix writes it (``volume.npy``, a
  manifest, an empty ``headers/``), of any volume, such as :func:`decaying_volume`;
- :func:`decomposed_series`: the phantom's series as pl-ssvd-denoise hands it on, with
  pixel-less headers from real DICOM files and LAPACK's exact SVD as the factors, so a
  render is checked against known factors without the converter or Spark;
- :func:`add_local`: ``local.npy`` and ``local.json`` as the local denoiser writes them,
  of any volume (:func:`smoothed` is a stand-in for a denoised one);
- :func:`spectrum_matrix`: a matrix of a known singular spectrum.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from ctsvd_common import contract, noise
from ctsvd_common.contract import Geometry, LocalRecord, Manifest, SeriesIdentity, SliceEntry, SvdRecord, VolumeInfo
from ctsvd_testdata.phantom import write_demo_series


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
        created_by="ctsvd_testdata.series_folders",
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


WINDOW_PRESETS = {"lung": {"center": -600.0, "width": 1500.0}, "mediastinum": {"center": 40.0, "width": 400.0},
                  "bone": {"center": 400.0, "width": 1800.0}}
UPSTREAM_SKIPPED = [{"file": "dicom/README.txt", "reason": "not a DICOM file (no DICM prefix)"}]


def write_headers(series: Path, files: list[Path]) -> list[str]:
    """Pixel-less copies of the slices' headers, in volume order."""
    (series / contract.HEADERS).mkdir()
    names = []
    for i, f in enumerate(files):
        ds = pydicom.dcmread(f)
        del ds.PixelData
        names.append(f"{contract.HEADERS}/{i:04d}.dcm")
        ds.save_as(series / names[-1], enforce_file_format=True)
    return names


LOCAL_PARAMETERS = {"patch": 8, "slab": 5, "stride": 4, "threshold": "Gavish-Donoho"}
LOCAL_NOISE = {"median": 24.5, "p10": 21.0, "p90": 28.0}


def smoothed(volume: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """A Gaussian-smoothed copy (along every axis, edges repeated): a stand-in for a denoised volume."""
    offsets = np.arange(-3, 4)
    kernel = np.exp(-offsets ** 2 / (2 * sigma ** 2))
    kernel /= kernel.sum()
    out = volume.astype(np.float64)
    for axis in range(3):
        padded = np.pad(out, [(3, 3) if a == axis else (0, 0) for a in range(3)], mode="edge")
        out = sum(w * np.take(padded, np.arange(j, j + out.shape[axis]), axis=axis) for j, w in enumerate(kernel))
    return out.astype(np.float32)


def add_local(series: Path, volume: np.ndarray, automatic: bool = True) -> np.ndarray:
    """``local.npy`` and ``local.json`` as pl-ssvd-denoise's local mode writes them."""
    np.save(series / contract.LOCAL, volume.astype(np.float32))
    contract.write_local(series, LocalRecord(
        plugin="tests", method="local SVD of 8 × 8 patches × 5 slices (tests)", parameters=LOCAL_PARAMETERS,
        automatic=automatic, noise_hu=LOCAL_NOISE, noise=noise.estimate(volume).summary(),
        choices={"stage 2 strength": {"strength": 4.0, "why": "tests"}}, tiles=1, spark={}, timings={}))
    return volume


def decomposed_series(root: Path, k: int | None = None, slices: int = 16, size: int = 48,
                       name: str = "series-001", svd: bool = True):
    demo = write_demo_series(root / "dicom" / name, slices=slices, size=size, noise_hu=25.0, seed=5)
    series = root / "volume" / name
    series.mkdir(parents=True)
    np.save(series / contract.VOLUME, demo.hu)
    headers = write_headers(series, demo.files)
    contract.write_manifest(series, Manifest(
        created_by="ctsvd_testdata.series_folders",
        created="2026-01-01T00:00:00+00:00",
        series=SeriesIdentity(modality="CT", description="phantom chest", patient_identity_removed=True),
        volume=VolumeInfo(shape=list(demo.hu.shape), units="HU", min=float(demo.hu.min()), max=float(demo.hu.max())),
        geometry=Geometry(sorted_by="image position along the normal",
                          slice_positions_mm=[float(z) for z in demo.z_mm],
                          pixel_spacing_mm=list(demo.spacing_mm[1:]), slice_spacing_mm=demo.spacing_mm[0]),
        window_presets=WINDOW_PRESETS,
        slices=[SliceEntry(index=i, source=str(f.relative_to(root / "dicom")), header=h)
                for i, (f, h) in enumerate(zip(demo.files, headers))],
        skipped=UPSTREAM_SKIPPED,
    ))

    A = demo.hu.reshape(slices, -1).astype(np.float64)
    U, s, Vt = np.linalg.svd(A, full_matrices=False)
    if not svd:
        return demo, root / "volume", s
    k = k or slices
    np.save(series / contract.SVD_U, U[:, :k].astype(np.float32))
    np.save(series / contract.SVD_S, s[:k].astype(np.float32))
    np.save(series / contract.SVD_VT, Vt[:k].astype(np.float32))
    norm = float(np.linalg.norm(A))
    residual = float(np.sqrt(max(0.0, np.sum(s[k:] ** 2))))
    contract.write_svd(series, SvdRecord(
        plugin="LAPACK (tests)", algorithm="numpy.linalg.svd", matrix={"rows": slices, "cols": A.shape[1]},
        k=k, requested_k=k, oversample=0, power_iters=0, seed=0, sample_rank=k,
        singular_values=[float(x) for x in s[:k]], energy_fraction=[float(x) ** 2 / norm ** 2 for x in s[:k]],
        frobenius_norm=norm, residual_norm=residual, relative_error=residual / norm, spark={}, timings={},
    ))
    return demo, root / "volume", s
