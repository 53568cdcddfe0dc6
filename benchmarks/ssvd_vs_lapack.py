"""Time pl-ssvd-denoise against LAPACK's SVD on the same CT-sized matrix, in one run.

    .venv/bin/python benchmarks/ssvd_vs_lapack.py [--slices 301] [--size 512] [--k 50] [--master local[*]]

Writes a noisy chest phantom volume (float32 HU) as a series folder, runs the
plugin's command on it (a real Spark, JVM start-up included), runs
``numpy.linalg.svd(full_matrices=False)`` on the same matrix, and prints both
wall times, their ratio and the relative error of the top singular values.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ctsvd_common import contract
from ctsvd_common.contract import Geometry, Manifest, SeriesIdentity, SliceEntry, VolumeInfo
from ctsvd_testdata.phantom import chest_phantom, low_dose_noise


def manifest_for(volume: np.ndarray, spacing: tuple[float, float, float]) -> Manifest:
    """The manifest pl-dicom2matrix would write; the stage under test only reads the volume's shape."""
    m = volume.shape[0]
    return Manifest(
        created_by="benchmarks/ssvd_vs_lapack.py", created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        series=SeriesIdentity(modality="CT", description="chest phantom, low dose"),
        volume=VolumeInfo(shape=list(volume.shape), units="HU", min=float(volume.min()), max=float(volume.max())),
        geometry=Geometry(sorted_by="phantom", slice_positions_mm=[i * spacing[0] for i in range(m)],
                          pixel_spacing_mm=list(spacing[1:]), slice_spacing_mm=spacing[0]),
        window_presets={"lung": {"center": -600.0, "width": 1500.0}},
        slices=[SliceEntry(index=i, source=f"phantom-{i:04d}", header=f"{contract.HEADERS}/{i:04d}.dcm")
                for i in range(m)],
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--slices", type=int, default=301)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--oversample", type=int, default=15)
    p.add_argument("--power-iters", type=int, default=2)
    p.add_argument("--master", default="local[*]")
    a = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        series = Path(tmp) / "in" / "series-001"
        series.mkdir(parents=True)
        (series / contract.HEADERS).mkdir()
        spacing = (2.5, 350 / a.size, 350 / a.size)
        clean = chest_phantom(a.slices, a.size, spacing_mm=spacing, seed=0)
        volume = np.clip(clean + low_dose_noise(clean.shape, sigma_hu=25.0, body_mask=clean > -500, seed=1),
                         -1024, 3071).astype(np.float32)
        np.save(series / contract.VOLUME, volume)
        contract.write_manifest(series, manifest_for(volume, spacing))
        print(f"matrix: {a.slices} slices × {a.size * a.size} pixels, float32, {volume.nbytes / 1e6:.0f} MB")

        t0 = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "ssvd_denoise"), "--k", str(a.k), "--oversample",
                        str(a.oversample), "--power-iters", str(a.power_iters), "--master", a.master,
                        str(Path(tmp) / "in"), str(Path(tmp) / "out")], check=True, capture_output=True)
        spark_wall = time.perf_counter() - t0
        record = contract.read_svd(Path(tmp) / "out" / "series-001")
        s = np.array(record.singular_values)

        t0 = time.perf_counter()
        reference = np.linalg.svd(volume.reshape(a.slices, -1), full_matrices=False, compute_uv=True)[1]
        lapack_wall = time.perf_counter() - t0

    top = min(10, len(s))
    rel = np.abs(s[:top] - reference[:top]) / reference[:top]
    passes = record.timings["total_seconds"]
    print(f"{'method':<44}{'wall s':>9}")
    print(f"{'pl-ssvd-denoise, whole command (' + a.master + ')':<44}{spark_wall:>9.2f}")
    print(f"{'  of which the SVD passes':<44}{passes:>9.2f}")
    print(f"{'numpy.linalg.svd(full_matrices=False)':<44}{lapack_wall:>9.2f}")
    print(f"ratio ssvd command / LAPACK: {spark_wall / lapack_wall:.2f}; SVD passes / LAPACK: {passes / lapack_wall:.2f}")
    print(f"max relative error of the top {top} singular values: {rel.max():.2e}; "
          f"‖A − U S Vt‖/‖A‖ = {record.relative_error:.4g} at k = {record.k}")
    print("passes:", ", ".join(f"{x['pass']} {x['seconds']:.2f} s" for x in record.timings["passes"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
