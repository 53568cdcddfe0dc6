"""pl-dicom2matrix on real DICOM files written by pydicom: the synthetic phantom, and TCIA slices."""

import json
import re
import shutil

import numpy as np
import pydicom
import pytest

from ctsvd_common import contract
from ctsvd_common.dicom import input_files
from ctsvd_testdata.phantom import write_demo_series
from ctsvd_testdata.shared import data_dir
from dicom2matrix.convert import run
from dicom2matrix.options import Settings, parser

SHARED = data_dir("covid-19-ny-sbu")


def convert(inputdir, outputdir, *flags):
    return run(Settings.from_options(parser.parse_args(list(flags))), inputdir, outputdir)


def report(outputdir):
    return json.loads((outputdir / "dicom2matrix.report.json").read_text())


def source(inputdir, label):
    """The relative path an input label names: logs, reports and manifests name inputs by position and
    hash only (ctsvd_common.inputnames); the position is among the input files in name order."""
    position = int(re.fullmatch(r"input #(\d+) \([0-9a-f]{8}\)", label)[1])
    return input_files(inputdir)[position - 1].relative_to(inputdir).as_posix()


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
    assert manifest.volume.units == "HU" and manifest.volume.shape == list(demo.hu.shape)
    assert (manifest.volume.min, manifest.volume.max) == (float(demo.hu.min()), float(demo.hu.max()))
    geometry = manifest.geometry
    assert geometry.sorted_by == "position along the slice normal"
    assert geometry.normal == [0.0, 0.0, 1.0]
    assert np.allclose(geometry.slice_positions_mm, demo.z_mm)
    assert geometry.slice_spacing_mm == pytest.approx(demo.spacing_mm[0]) and geometry.uniform_spacing
    assert geometry.spacing_mm == {"min": 2.5, "median": 2.5, "max": 2.5} and geometry.missing_slices == 0
    assert geometry.slice_thickness_mm == pytest.approx(demo.spacing_mm[0]) and not geometry.slice_thickness_varies
    assert geometry.tilt_deg == 0.0 and geometry.gantry_detector_tilt_deg == 0.0 and geometry.warnings == []
    assert geometry.pixel_spacing_mm == pytest.approx(list(demo.spacing_mm[1:]))
    assert [s.sop_instance_uid for s in manifest.slices] == demo.uids["sop_instances"]
    assert [source(tmp_path / "in", s.source) for s in manifest.slices] == \
        [f.relative_to(tmp_path / "in").as_posix() for f in demo.files]
    assert manifest.window_presets["lung"] == {"center": -600.0, "width": 1500.0}
    assert manifest.series.series_instance_uid == demo.uids["series"] and manifest.series.source == "single-frame"

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
    assert manifest.volume.padding == {"pixels": 12 * 16, "set_to": -1000.0}


def test_gaps_duplicates_and_strangers_are_recorded(demo, tmp_path):
    demo.files[5].unlink()  # a missing slice: a gap of two spacings
    shutil.copy(demo.files[7], demo.files[7].with_name("copy-of-slice-7.dcm"))
    (tmp_path / "in" / "notes.txt").write_text("scan looked fine")
    assert convert(tmp_path / "in", tmp_path / "out") == 0  # nothing failed: skips are not errors
    manifest = contract.read_manifest(tmp_path / "out" / "series-001")
    assert manifest.volume.shape[0] == 11
    assert manifest.geometry.gaps == [{"after_slice": 4, "spacing_mm": pytest.approx(2 * demo.spacing_mm[0])}]
    assert not manifest.geometry.uniform_spacing and manifest.geometry.missing_slices == 1
    assert len(manifest.geometry.duplicate_positions) == 1
    assert any("missing" in w for w in manifest.geometry.warnings)
    reasons = {source(tmp_path / "in", s["file"]): s["reason"] for s in manifest.skipped + manifest.skipped_elsewhere}
    assert "duplicate slice position" in reasons.get("CT-chest-lowdose/copy-of-slice-7.dcm", "") \
        or "duplicate slice position" in reasons.get(str(demo.files[7].relative_to(tmp_path / "in")), "")
    assert reasons["notes.txt"].startswith("not a DICOM file")


def test_truncated_slice_fails_alone_and_the_series_is_kept(demo, tmp_path, caplog):
    cut = demo.files[3]
    cut.write_bytes(cut.read_bytes()[:-500])
    assert convert(tmp_path / "in", tmp_path / "out") == 0      # outputs were made: the failure is reported
    errors = report(tmp_path / "out")["errors"]
    assert [{**e, "file": source(tmp_path / "in", e["file"])} for e in errors] == \
        [{"file": cut.relative_to(tmp_path / "in").as_posix(), "reason": "truncated pixel data (7692 of 8192 bytes)"}]
    assert report(tmp_path / "out")["status"] == "ok-with-failures"
    assert [r.message for r in caplog.records if r.levelname == "ERROR"] == [
        f"{errors[0]['file']}: truncated pixel data (7692 of 8192 bytes)"]
    assert cut.name not in caplog.text
    volume = np.load(tmp_path / "out" / "series-001" / contract.VOLUME)
    assert np.array_equal(volume, np.delete(demo.hu, 3, axis=0))
    assert not [p for p in (tmp_path / "out").rglob(".*")]
    assert convert(tmp_path / "in", tmp_path / "strict", "--strict") == 1   # the same run, failing on purpose


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
    assert np.allclose(manifest.geometry.normal, [0, -s, c], atol=1e-4)
    assert manifest.geometry.tilt_deg == pytest.approx(0.0, abs=1e-3)   # rotated, not sheared
    assert np.array_equal(np.load(tmp_path / "out" / "series-001" / contract.VOLUME), demo.hu)


@pytest.mark.skipif(SHARED is None, reason="../shared/data/covid-19-ny-sbu is not beside this clone")
def test_real_tcia_slices_convert(tmp_path):
    # One or two slices per series: not volumes, so by default every one is skipped...
    assert convert(SHARED, tmp_path / "default") == 1
    r = report(tmp_path / "default")
    assert r["counts"] == {"outputs": 0, "skipped": 62, "failed": 0}
    assert all(s["reason"].startswith("too few slices") for s in r["skipped"])
    # ... and with --min-slices 1 each converts exactly.
    assert convert(SHARED, tmp_path / "out", "--min-slices", "1") == 0
    r = report(tmp_path / "out")
    assert r["summary"]["images"] == 62 and r["errors"] == []
    for series in contract.find_series(tmp_path / "out"):
        manifest = contract.read_manifest(series)
        volume = np.load(series / contract.VOLUME)
        src = pydicom.dcmread(SHARED / source(SHARED, manifest.slices[0].source))
        expected = src.pixel_array * float(src.RescaleSlope) + float(src.RescaleIntercept)
        if "PixelPaddingValue" in src:
            expected[src.pixel_array == src.PixelPaddingValue] = -1024
        assert np.array_equal(volume[0], expected.astype(np.float32))


NATIVE_TEST_FILES = ["CT_small.dcm", "MR_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm",
                     "MR_small_padded.dcm", "rtdose_1frame.dcm"]


@pytest.mark.parametrize("name", NATIVE_TEST_FILES)
@pytest.mark.parametrize("bits_stored", [None, 12])
def test_reading_native_pixels_ourselves_equals_pydicom(name, bits_stored, tmp_path):
    """The fast path (offset + frombuffer + masking or sign extension) agrees with pydicom 3."""
    from pydicom.data import get_testdata_file

    from dicom2matrix.hounsfield import _read_native
    from dicom2matrix.scan import scan_file

    path = tmp_path / name
    ds = pydicom.dcmread(get_testdata_file(name))
    if bits_stored and ds.BitsAllocated == 16:
        ds.BitsStored, ds.HighBit = bits_stored, bits_stored - 1
        raw = np.frombuffer(ds.PixelData, dtype=ds.pixel_array.dtype).copy()
        raw[::7] |= np.array(0xF000, dtype=np.uint16).astype(raw.dtype)   # garbage above BitsStored
        ds.PixelData = raw.tobytes()
    ds.save_as(path)
    scan = scan_file(str(path), any_modality=True)
    assert scan.fail is None and scan.skip is None, (scan.fail, scan.skip)
    (image,) = scan.images
    assert image.native is not None
    assert np.array_equal(_read_native(str(path), image), pydicom.dcmread(path).pixel_array)


def test_header_bytes_are_the_file_before_its_pixels(demo, tmp_path):
    assert convert(tmp_path / "in", tmp_path / "out") == 0
    manifest = contract.read_manifest(tmp_path / "out" / "series-001")
    for entry in manifest.slices[:3]:
        original = (tmp_path / "in" / source(tmp_path / "in", entry.source)).read_bytes()
        header = (tmp_path / "out" / "series-001" / entry.header).read_bytes()
        assert original.startswith(header) and len(header) < len(original) - 64 * 64 * 2
        assert "PixelData" not in pydicom.dcmread(tmp_path / "out" / "series-001" / entry.header)


@pytest.mark.parametrize("flag, message", [
    (["--min-slices", "0"], "argument --min-slices: expected a whole number of 1 or more, got '0'"),
    (["--workers", "-1"], "argument --workers: expected a whole number of 0 or more, got '-1'"),
    (["--padding-hu", "nan"], "argument --padding-hu: expected a finite number, got 'nan'"),
    (["--padding-hu=-inf"], "argument --padding-hu: expected a finite number, got '-inf'"),
])
def test_bad_flag_values_are_refused_as_they_are_parsed(flag, message, capsys):
    with pytest.raises(SystemExit) as refused:
        parser.parse_args(flag)
    assert refused.value.code == 2
    assert capsys.readouterr().err.rstrip().endswith(message)


def test_version_is_the_installed_distributions(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as done:
        parser.parse_args(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"pl-dicom2matrix {version('pl-dicom2matrix')}"


def test_the_report_lists_the_settings_in_flag_order(demo, tmp_path):
    assert convert(tmp_path / "in", tmp_path / "out", "--padding-hu", "-1000", "--workers", "1") == 0
    assert report(tmp_path / "out")["parameters"] == {
        "padding_hu": -1000.0, "min_slices": 3, "any_modality": False, "workers": 1,
        "strict": False, "input_map": "", "overwrite": False}


def test_both_workers_and_one_give_the_same_bytes(tmp_path):
    write_demo_series(tmp_path / "in", slices=40, size=32, seed=6)   # enough files for a pool
    assert convert(tmp_path / "in", tmp_path / "one", "--workers", "1") == 0
    assert convert(tmp_path / "in", tmp_path / "two", "--workers", "2") == 0
    for name in (contract.VOLUME, "headers/0017.dcm"):
        assert (tmp_path / "one" / "series-001" / name).read_bytes() == (tmp_path / "two" / "series-001" / name).read_bytes()


@pytest.mark.parametrize("keyword, value, outcome, reason", [
    ("PixelSpacing", [0, -1], "skipped", "PixelSpacing is zero or negative"),
    ("ImageOrientationPatient", [0, 0, 0, 0, 0, 0], "skipped", "ImageOrientationPatient is degenerate"),
    ("ImageOrientationPatient", [1, 0, 0, 1, 0, 0], "skipped", "ImageOrientationPatient is degenerate"),
    ("RescaleSlope", "1e308", "errors", "beyond what a float32 volume holds"),
    ("RescaleSlope", "1e4", "errors", "beyond ±1,000,000 HU: not Hounsfield units"),
])
def test_geometry_and_rescale_that_cannot_be_right_are_refused(keyword, value, outcome, reason, tmp_path):
    """One series with a nonsense value beside a sound one: the bad one is refused by name, never guessed at."""
    write_demo_series(tmp_path / "in" / "good", slices=4, size=32, seed=1)
    write_demo_series(tmp_path / "in" / "bad", slices=4, size=32, seed=2)
    for path in (tmp_path / "in" / "bad").rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        setattr(ds, keyword, value)
        ds.save_as(path)
    assert convert(tmp_path / "in", tmp_path / "out") == 0
    r = report(tmp_path / "out")
    assert r["counts"]["outputs"] == 1
    # Inputs are named by label, not path: the bad series' four files, and nothing else, refused.
    refused = [e for e in r[outcome] if reason in e["reason"]]
    assert len(refused) == 4 and len(r["skipped"] + r["errors"]) == 4


def test_slices_without_positions_get_no_made_up_spacing(tmp_path):
    write_demo_series(tmp_path / "in", slices=4, size=32, seed=1)
    for path in (tmp_path / "in").rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        del ds.ImagePositionPatient
        ds.save_as(path)
    assert convert(tmp_path / "in", tmp_path / "out") == 0
    geometry = contract.read_manifest(tmp_path / "out" / "series-001").geometry
    assert geometry.sorted_by.startswith("InstanceNumber")
    assert geometry.slice_spacing_mm is None and geometry.slice_positions_mm == []
    assert "spacing is unknown" in " ".join(geometry.warnings)


def test_a_series_whose_last_slice_has_no_position_is_kept_in_instance_number_order(tmp_path):
    demo = write_demo_series(tmp_path / "in", slices=4, size=32, seed=1)
    ds = pydicom.dcmread(demo.files[-1])
    del ds.ImagePositionPatient
    ds.save_as(demo.files[-1])
    assert convert(tmp_path / "in", tmp_path / "out") == 0
    manifest = contract.read_manifest(tmp_path / "out" / "series-001")
    assert manifest.geometry.sorted_by.startswith("InstanceNumber") and manifest.geometry.tilt_deg is None
    numbers = [s.instance_number for s in manifest.slices]
    assert numbers == sorted(numbers) and len(numbers) == 4
    volume = np.load(tmp_path / "out" / "series-001" / contract.VOLUME)
    for k, entry in enumerate(manifest.slices):
        assert np.array_equal(volume[k], demo.hu[demo.uids["sop_instances"].index(entry.sop_instance_uid)])
