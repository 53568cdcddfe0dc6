"""A decomposed series as pl-ssvd-denoise hands it on, built from the phantom.

The DICOM files come from the phantom; the series folder (volume, pixel-less
headers, manifest) is built here with the contract's records, as
pl-dicom2matrix would write it, and the factors are LAPACK's exact SVD, so
the render is tested against known factors without the converter or Spark.
The local result stands in for pl-ssvd-denoise's local mode: any float32
volume of the series' shape, with a ``LocalRecord`` written here.

Tests take the builders as fixtures (``decomposed_series``, ``add_local``,
``smoothed``), and ``render``/``report`` to run the plugin's core on real
flags and read its run report; nothing here is imported.
"""

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from ctsvd_common import contract, noise
from ctsvd_common.contract import Geometry, LocalRecord, Manifest, SeriesIdentity, SliceEntry, SvdRecord, VolumeInfo
from ctsvd_testdata.phantom import write_demo_series
from svd_render.options import Settings, parser
from svd_render.run import run

WINDOW_PRESETS = {"lung": {"center": -600.0, "width": 1500.0}, "mediastinum": {"center": 40.0, "width": 400.0},
                  "bone": {"center": 400.0, "width": 1800.0}}
UPSTREAM_SKIPPED = [{"file": "dicom/README.txt", "reason": "not a DICOM file (no DICM prefix)"}]


def _write_headers(series: Path, files: list[Path]) -> list[str]:
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


def _smoothed(volume: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """A Gaussian-smoothed copy (along every axis, edges repeated): a stand-in for a denoised volume."""
    offsets = np.arange(-3, 4)
    kernel = np.exp(-offsets ** 2 / (2 * sigma ** 2))
    kernel /= kernel.sum()
    out = volume.astype(np.float64)
    for axis in range(3):
        padded = np.pad(out, [(3, 3) if a == axis else (0, 0) for a in range(3)], mode="edge")
        out = sum(w * np.take(padded, np.arange(j, j + out.shape[axis]), axis=axis) for j, w in enumerate(kernel))
    return out.astype(np.float32)


def _add_local(series: Path, volume: np.ndarray, automatic: bool = True) -> np.ndarray:
    """``local.npy`` and ``local.json`` as pl-ssvd-denoise's local mode writes them."""
    np.save(series / contract.LOCAL, volume.astype(np.float32))
    contract.write_local(series, LocalRecord(
        plugin="tests", method="local SVD of 8 × 8 patches × 5 slices (tests)", parameters=LOCAL_PARAMETERS,
        automatic=automatic, noise_hu=LOCAL_NOISE, noise=noise.estimate(volume).summary(),
        choices={"stage 2 strength": {"strength": 4.0, "why": "tests"}}, tiles=1, spark={}, timings={}))
    return volume


def _decomposed_series(root: Path, k: int | None = None, slices: int = 16, size: int = 48,
                       name: str = "series-001", svd: bool = True):
    demo = write_demo_series(root / "dicom" / name, slices=slices, size=size, noise_hu=25.0, seed=5)
    series = root / "volume" / name
    series.mkdir(parents=True)
    np.save(series / contract.VOLUME, demo.hu)
    headers = _write_headers(series, demo.files)
    contract.write_manifest(series, Manifest(
        created_by="pl-svd-render tests",
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


@pytest.fixture
def render():
    """render(inputdir, outputdir, *flags): the plugin's run on these flags, parsed as the command parses them."""
    def render(inputdir, outputdir, *flags):
        return run(Settings.from_options(parser.parse_args(list(flags))), inputdir, outputdir)
    return render


@pytest.fixture
def report():
    """report(outputdir): the run report a render left there."""
    return lambda outputdir: json.loads((outputdir / "svd_render.report.json").read_text())


@pytest.fixture
def decomposed_series():
    """decomposed_series(root, k=None, slices=16, size=48, name="series-001", svd=True) -> (demo, inputdir, s)."""
    return _decomposed_series


@pytest.fixture
def add_local():
    """add_local(series, volume, automatic=True): local.npy and local.json in a series folder."""
    return _add_local


@pytest.fixture
def local_parameters():
    """The parameters render.json holds for a local result that add_local wrote."""
    return {**LOCAL_PARAMETERS, "noise_hu": LOCAL_NOISE}


@pytest.fixture
def smoothed():
    """smoothed(volume, sigma=1.0): a Gaussian-smoothed copy, a stand-in for a denoised volume."""
    return _smoothed


@pytest.fixture
def full_rank(tmp_path):
    return _decomposed_series(tmp_path)


@pytest.fixture
def both(tmp_path):
    """Global factors (k = 8) and a smoothed local.npy in one series folder."""
    demo, inputdir, s = _decomposed_series(tmp_path, k=8)
    return demo, inputdir, _add_local(inputdir / "series-001", _smoothed(demo.hu))
