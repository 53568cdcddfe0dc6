"""pl-dicom2matrix on real DICOM files written by pydicom: the synthetic phantom, and TCIA slices."""

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from ctsvd_common import contract
from ctsvd_local.phantom import write_demo_series
from dicom2matrix.__main__ import main, parser

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "covid-19-ny-sbu"


def convert(inputdir, outputdir, *flags):
    return main(parser.parse_args(list(flags)), inputdir, outputdir)


def report(outputdir):
    return json.loads((outputdir / "dicom2matrix.report.json").read_text())


@pytest.fixture
def demo(tmp_path):
    return write_demo_series(tmp_path / "in", slices=12, size=64, noise_hu=20.0, seed=4)


def test_volume_is_the_phantom_in_hu_sorted_along_the_normal(demo, tmp_path):
    assert convert(tmp_path / "in", tmp_path / "out") == 0
    series = tmp_path / "out" / "series-001"
    volume = np.load(series / contract.VOLUME, mmap_mode="r")
    assert volume.dtype == np.float32 and volume.shape == demo.hu.shape
    assert np.array_equal(volume, demo.hu)  # bit for bit: rescale applied, order by position

    manifest = contract.read_manifest(series)
    assert manifest["volume"]["units"] == "HU" and manifest["volume"]["shape"] == list(demo.hu.shape)
    geometry = manifest["geometry"]
    assert geometry["sorted_by"] == "position along the slice normal"
    assert geometry["normal"] == [0.0, 0.0, 1.0]
    assert np.allclose(geometry["slice_positions_mm"], demo.z_mm)
    assert geometry["slice_spacing_mm"] == pytest.approx(demo.spacing_mm[0]) and geometry["uniform_spacing"]
    assert geometry["pixel_spacing_mm"] == pytest.approx(list(demo.spacing_mm[1:]))
    assert [s["sop_instance_uid"] for s in manifest["slices"]] == demo.uids["sop_instances"]
    assert [s["source"] for s in manifest["slices"]] == [str(f.relative_to(tmp_path / "in")) for f in demo.files]
    assert manifest["window_presets"]["lung"] == {"center": -600.0, "width": 1500.0}
    assert manifest["series"]["series_instance_uid"] == demo.uids["series"]

    headers = contract.header_files(series, manifest)
    assert len(headers) == 12
    for header, sop in zip(headers, demo.uids["sop_instances"]):
        ds = pydicom.dcmread(header)
        assert "PixelData" not in ds and ds.SOPInstanceUID == sop and ds.Rows == 64
    assert report(tmp_path / "out")["status"] == "ok"


def test_other_rescale_is_applied(tmp_path):
    demo = write_demo_series(tmp_path / "in", slices=4, size=32, seed=1, rescale_slope=0.5,
                             rescale_intercept=-2048.0)
    assert convert(tmp_path / "in", tmp_path / "out") == 0
    assert np.array_equal(np.load(tmp_path / "out" / "series-001" / contract.VOLUME), demo.hu)


def test_padding_outside_the_field_of_view_becomes_air(demo, tmp_path):
    for f in demo.files:
        ds = pydicom.dcmread(f)
        pixels = ds.pixel_array.copy()
        pixels[:4, :4] = -2000
        ds.PixelData = pixels.tobytes()
        ds.add_new(0x00280120, "SS", -2000)  # PixelPaddingValue, signed like the pixels
        ds.save_as(f)
    assert convert(tmp_path / "in", tmp_path / "out", "--padding-hu", "-1000") == 0
    volume = np.load(tmp_path / "out" / "series-001" / contract.VOLUME)
    assert (volume[:, :4, :4] == -1000).all()
    assert np.array_equal(volume[:, 4:, 4:], demo.hu[:, 4:, 4:])
    manifest = contract.read_manifest(tmp_path / "out" / "series-001")
    assert manifest["volume"]["padding"] == {"pixels": 12 * 16, "set_to": -1000.0}


def test_gaps_duplicates_and_strangers_are_recorded(demo, tmp_path):
    demo.files[5].unlink()  # a missing slice: a gap of two spacings
    shutil.copy(demo.files[7], demo.files[7].with_name("copy-of-slice-7.dcm"))
    (tmp_path / "in" / "notes.txt").write_text("scan looked fine")
    assert convert(tmp_path / "in", tmp_path / "out") == 0  # nothing failed: skips are not errors
    manifest = contract.read_manifest(tmp_path / "out" / "series-001")
    assert manifest["volume"]["shape"][0] == 11
    assert manifest["geometry"]["gaps"] == [{"after_slice": 4, "spacing_mm": pytest.approx(2 * demo.spacing_mm[0])}]
    assert not manifest["geometry"]["uniform_spacing"]
    reasons = {s["file"]: s["reason"] for s in manifest["skipped"] + manifest["skipped_elsewhere"]}
    assert "duplicate slice position" in reasons.get("CT-chest-lowdose/copy-of-slice-7.dcm", "") \
        or "duplicate slice position" in reasons.get(str(demo.files[7].relative_to(tmp_path / "in")), "")
    assert reasons["notes.txt"].startswith("not a DICOM file")


def test_truncated_slice_fails_alone_and_the_series_is_kept(demo, tmp_path, caplog):
    cut = demo.files[3]
    cut.write_bytes(cut.read_bytes()[:-500])
    assert convert(tmp_path / "in", tmp_path / "out") == 1
    errors = report(tmp_path / "out")["errors"]
    assert errors == [{"file": str(cut.relative_to(tmp_path / "in")), "reason": "truncated pixel data (7692 of 8192 bytes)"}]
    assert [r.message for r in caplog.records if r.levelname == "ERROR"] == [
        f"{cut.relative_to(tmp_path / 'in')}: truncated pixel data (7692 of 8192 bytes)"]
    volume = np.load(tmp_path / "out" / "series-001" / contract.VOLUME)
    assert np.array_equal(volume, np.delete(demo.hu, 3, axis=0))
    assert not [p for p in (tmp_path / "out").rglob(".*")]


def test_sorting_follows_the_normal_even_for_tilted_stacks(tmp_path):
    demo = write_demo_series(tmp_path / "in", slices=6, size=32, seed=2)
    # Rotate the frame 30° about x: the normal becomes (0, -sin, cos); positions move along it.
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    for f, z in zip(demo.files, demo.z_mm):
        ds = pydicom.dcmread(f)
        ds.ImageOrientationPatient = [1, 0, 0, 0, c, s]
        ds.ImagePositionPatient = [0.0, -s * float(z), c * float(z)]
        ds.save_as(f)
    assert convert(tmp_path / "in", tmp_path / "out") == 0
    manifest = contract.read_manifest(tmp_path / "out" / "series-001")
    assert np.allclose(manifest["geometry"]["normal"], [0, -s, c], atol=1e-4)
    assert np.array_equal(np.load(tmp_path / "out" / "series-001" / contract.VOLUME), demo.hu)


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not beside this clone")
def test_real_tcia_slices_convert(tmp_path):
    assert convert(SHARED, tmp_path / "out") == 0
    r = report(tmp_path / "out")
    assert r["summary"]["images"] == 62 and r["errors"] == []
    for series in contract.find_series(tmp_path / "out"):
        manifest = contract.read_manifest(series)
        volume = np.load(series / contract.VOLUME)
        src = pydicom.dcmread(SHARED / manifest["slices"][0]["source"])
        expected = src.pixel_array * float(src.RescaleSlope) + float(src.RescaleIntercept)
        if "PixelPaddingValue" in src:
            expected[src.pixel_array == src.PixelPaddingValue] = -1024
        assert np.array_equal(volume[0], expected.astype(np.float32))
