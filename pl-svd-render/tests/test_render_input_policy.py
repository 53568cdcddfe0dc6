"""Flag values refused before any work (exit 2), and what one series' trouble costs."""

import json

import numpy as np
import pydicom
import pytest

from ctsvd_common import contract
from svd_render.options import parser


@pytest.mark.parametrize("flags,message", [
    (["--percent-removed", "100"], "--percent-removed: expected a finite number from 0 below 100, got '100.0'"),
    (["--percent-removed", "-5"], "--percent-removed: expected a finite number from 0 below 100, got '-5.0'"),
    (["--percent-removed", "nan"], "--percent-removed: expected a finite number from 0 below 100, got 'nan'"),
    (["--montage-slices", "0"], "--montage-slices: expected a whole number of 1 or more, got '0'"),
    (["--montage-slices", "some"], "--montage-slices: invalid int value: 'some'"),
    (["--use", "both"], "--use: invalid choice: 'both'"),
    (["--use", ""], "--use: invalid choice: ''"),
])
def test_an_unusable_flag_value_is_refused_where_it_is_parsed(capsys, flags, message):
    with pytest.raises(SystemExit) as e:
        parser.parse_args(flags)
    assert e.value.code == 2
    assert f"error: argument {message}" in capsys.readouterr().err


@pytest.mark.parametrize("flags,flag", [
    (["--rank", "many"], "--rank"),
    (["--rank", "0"], "--rank"),
    (["--rank", "3", "--percent-removed", "20"], "--rank"),
    (["--windows", "lung,soft:50"], "--windows"),
    (["--windows", "soft:50:0"], "--windows"),
    (["--windows", "lungs"], "--windows"),
    (["--windows", "lung,lung"], "--windows"),
    (["--windows", "my window:0:100"], "--windows"),
    (["--windows", ","], "--windows"),
])
def test_an_unusable_rank_or_window_exits_2_before_any_work(full_rank, tmp_path, caplog, flags, flag, render, report):
    """--rank and --windows are text the run reads, and --rank with --percent-removed is two flags: the run
    refuses them, with a report."""
    _, inputdir, _ = full_rank
    assert render(inputdir, tmp_path / "out", *flags) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].startswith(f"{flag}: ")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["svd_render.report.json"]
    assert report(tmp_path / "out")["status"] == "usage-error"


def _assert_rendered_without_dicom(series):
    for name in ("viewer-lung.jpg", "index.html", "scree.svg", "montage-lung.png", "render.json"):
        assert (series / name).exists(), name
    assert not (series / "dicom").exists()


def test_a_missing_header_costs_only_the_derived_dicom(full_rank, tmp_path, render, report):
    _, inputdir, _ = full_rank
    (inputdir / "series-001" / "headers" / "0003.dcm").unlink()
    assert render(inputdir, tmp_path / "out", "--rank", "4", "--windows", "lung") == 0
    series = tmp_path / "out" / "series-001"
    _assert_rendered_without_dicom(series)
    reason = "missing; the derived DICOM series was not written"
    r = report(tmp_path / "out")
    assert r["status"] == "ok-with-failures" and [o["path"] for o in r["outputs"]] == ["series-001"]
    assert r["errors"] == [{"file": "series-001/headers/0003.dcm", "reason": reason}]
    record = contract.read_render(series)
    assert record.dicom is None and record.warnings == [f"headers/0003.dcm: {reason}"]
    assert f"headers/0003.dcm: {reason}" in (series / "index.html").read_text()
    assert render(inputdir, tmp_path / "strict", "--rank", "4", "--windows", "lung", "--strict") == 1


def test_an_unreadable_header_costs_only_the_derived_dicom(full_rank, tmp_path, render, report):
    _, inputdir, _ = full_rank
    header = inputdir / "series-001" / "headers" / "0005.dcm"
    header.write_bytes(header.read_bytes()[:200])
    assert render(inputdir, tmp_path / "out", "--rank", "4", "--windows", "lung") == 0
    _assert_rendered_without_dicom(tmp_path / "out" / "series-001")
    (error,) = report(tmp_path / "out")["errors"]
    assert error["file"] == "series-001/headers/0005.dcm"
    assert error["reason"].endswith("; the derived DICOM series was not written") and "\n" not in error["reason"]


def test_a_broken_series_fails_alone(tmp_path, render, report, decomposed_series):
    decomposed_series(tmp_path, name="series-001")
    decomposed_series(tmp_path, name="series-002")
    vt = tmp_path / "volume" / "series-002" / contract.SVD_VT
    vt.write_bytes(vt.read_bytes()[:500])
    assert render(tmp_path / "volume", tmp_path / "out", "--rank", "3", "--windows", "lung") == 0
    r = report(tmp_path / "out")
    assert r["errors"] == [{"file": "series-002", "reason": "Vt.npy: cannot read the SVD (ValueError: missing, "
                                                           "truncated or not a .npy file); run pl-ssvd-denoise again"}]
    assert len(list((tmp_path / "out" / "series-001" / "dicom").glob("*.dcm"))) == 16
    assert not (tmp_path / "out" / "series-002").exists()


def test_data_dependent_values_are_clipped_or_left_out_with_a_warning(full_rank, tmp_path, caplog, render, report):
    _, inputdir, _ = full_rank
    assert render(inputdir, tmp_path / "out", "--rank", "60", "--windows", "lung,header", "--no-dicom") == 0
    record = contract.read_render(tmp_path / "out" / "series-001")
    assert record.rank == 16 and record.windows == ["lung (C -600 / W 1500)"]
    assert record.warnings == [
        "--windows: header left out, not among this series' presets (lung, mediastinum, bone)",
        "--rank 60 is more than the k = 16 components: all 16 are kept",
    ]
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert [f"series-001: {w}" for w in record.warnings] == warned
    # A series with none of the windows asked for fails; there is nothing to show.
    assert render(inputdir, tmp_path / "none", "--windows", "header") == 1
    (error,) = report(tmp_path / "none")["errors"]
    assert error["reason"] == "--windows: this series has none of the presets asked for (it has: lung, mediastinum, bone)"


def test_derived_dicom_is_valid_part10(full_rank, tmp_path, render):
    _, inputdir, _ = full_rank
    assert render(inputdir, tmp_path / "out", "--rank", "5", "--windows", "lung") == 0
    ds = pydicom.dcmread(tmp_path / "out" / "series-001" / "dicom" / "0001.dcm")  # no force: a real Part 10 file
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.SamplesPerPixel == 1
    assert ds.pixel_array.dtype == np.int16 and ds.pixel_array.shape == (48, 48)


def test_a_failure_while_writing_dicom_costs_only_the_derived_dicom(full_rank, tmp_path, render, report):
    _, inputdir, _ = full_rank
    header = inputdir / "series-001" / "headers" / "0002.dcm"
    ds = pydicom.dcmread(header)
    del ds.SOPClassUID  # readable, but nothing to reference the source by
    ds.save_as(header, enforce_file_format=True)
    assert render(inputdir, tmp_path / "out", "--rank", "4", "--windows", "lung") == 0
    series = tmp_path / "out" / "series-001"
    _assert_rendered_without_dicom(series)
    (error,) = report(tmp_path / "out")["errors"]
    assert error["file"] == "series-001/dicom" and error["exception"] == "AttributeError"
    assert contract.read_render(series).warnings == ["the derived DICOM series was not written: see the run report"]
    assert not [p for p in (tmp_path / "out").rglob(".*")], "temporary files left behind"


def test_a_folder_name_never_becomes_a_script_link(tmp_path, render, decomposed_series):
    """The index links a series by its folder name; a name with a URL scheme stays a relative path."""
    decomposed_series(tmp_path, k=4, slices=6, size=32, name="javascript:alert(1)")
    assert render(tmp_path / "volume", tmp_path / "out", "--windows", "lung", "--no-dicom") == 0
    page = (tmp_path / "out" / "index.html").read_text()
    assert 'href="./javascript%3Aalert%281%29/index.html"' in page
    assert 'href="javascript:' not in page and "<script" not in page
    series_page = (tmp_path / "out" / "javascript:alert(1)" / "index.html").read_text()
    assert 'src="./montage-lung.png"' in series_page


def test_values_read_from_upstream_are_checked(tmp_path, render, report, decomposed_series):
    """NaN singular values fail the series; a window preset that is no window is left out, named."""
    _, inputdir, _ = decomposed_series(tmp_path, k=4, slices=6, size=32)
    series = inputdir / "series-001"
    manifest = json.loads((series / contract.MANIFEST).read_text())
    manifest["window_presets"]["lung"] = {"center": float("nan"), "width": -5}
    (series / contract.MANIFEST).write_text(json.dumps(manifest))    # json writes NaN, which is no JSON
    assert render(inputdir, tmp_path / "nan-json", "--windows", "lung,bone") == 1
    assert "holds NaN or Infinity" in report(tmp_path / "nan-json")["errors"][0]["reason"]

    manifest["window_presets"]["lung"] = {"center": -600, "width": -5}
    (series / contract.MANIFEST).write_text(json.dumps(manifest))
    assert render(inputdir, tmp_path / "bad-window", "--windows", "lung,bone", "--no-dicom") == 0
    record = contract.read_render(tmp_path / "bad-window" / "series-001")
    assert record.windows == ["bone (C 400 / W 1800)"]
    assert any("lung left out" in w for w in record.warnings)

    s = np.load(series / contract.SVD_S)
    s[1] = np.nan
    np.save(series / contract.SVD_S, s)
    assert render(inputdir, tmp_path / "nan-s", "--windows", "bone", "--use", "global") == 1
    (error,) = report(tmp_path / "nan-s")["errors"]
    assert "not finite and non-negative" in error["reason"]
