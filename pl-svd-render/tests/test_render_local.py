"""--use: publishing the local or the global result, and showing both side by side."""

import numpy as np
import pydicom
from PIL import Image

from ctsvd_common import contract
from svd_render import images
from svd_render.images import difference_width


MID_GREY = 128  # a difference of 0 HU


def montage_columns(path, slice_shape, rows):
    """The montage read back: its tiles as arrays, [row][column]."""
    tile_h, tile_w = images.tile_size(slice_shape)
    with Image.open(path) as img:
        pixels = np.asarray(img)
    columns = (pixels.shape[1] - images.LABEL_W) // (tile_w + images.PAD)
    assert pixels.shape[1] == images.LABEL_W + columns * (tile_w + images.PAD)
    assert pixels.shape[0] == images.HEADER + rows * (tile_h + images.PAD)
    return [[pixels[images.HEADER + r * (tile_h + images.PAD):][:tile_h,
                    images.LABEL_W + c * (tile_w + images.PAD):][:, :tile_w].astype(int)
             for c in range(columns)] for r in range(rows)]


def test_auto_publishes_local_when_the_series_has_it_and_global_otherwise(tmp_path, render, report,
                                                                          decomposed_series, add_local, smoothed):
    demo, inputdir, _ = decomposed_series(tmp_path, name="series-001")
    decomposed_series(tmp_path, name="series-002")
    local = add_local(inputdir / "series-001", smoothed(demo.hu))
    assert render(inputdir, tmp_path / "out", "--windows", "lung", "--no-dicom", "--npy") == 0
    first, second = (contract.read_render(tmp_path / "out" / s) for s in ("series-001", "series-002"))
    assert first.denoiser == "local" and second.denoiser == "global"
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "series-001" / "denoised.npy"), local)
    assert [o["denoiser"] for o in report(tmp_path / "out")["outputs"]] == ["local", "global"]
    # --use global publishes the factors' rebuild even where local.npy is there.
    assert render(inputdir, tmp_path / "global", "--use", "global", "--rank", "3", "--windows", "lung",
                  "--no-dicom") == 0
    record = contract.read_render(tmp_path / "global" / "series-001")
    assert record.denoiser == "global" and record.rank == 3 and record.k == 16


def test_the_montage_shows_five_columns_with_both_and_three_with_one(tmp_path, render, decomposed_series, add_local,
                                                                     smoothed):
    demo, inputdir, _ = decomposed_series(tmp_path, name="series-001")
    decomposed_series(tmp_path, name="series-002")
    # A "denoised" identical to the original: its difference column is uniform mid-grey.
    add_local(inputdir / "series-001", demo.hu)
    assert render(inputdir, tmp_path / "out", "--rank", "2", "--windows", "lung", "--montage-slices", "2",
                  "--no-dicom") == 0
    both = montage_columns(tmp_path / "out" / "series-001" / "montage-lung.png", (48, 48), rows=2)
    only_global = montage_columns(tmp_path / "out" / "series-002" / "montage-lung.png", (48, 48), rows=2)
    assert len(both[0]) == 5 and len(only_global[0]) == 3
    for row in both:
        original, global_, local, minus_global, minus_local = row
        np.testing.assert_array_equal(local, original)
        assert (minus_local == MID_GREY).all()
        assert not np.array_equal(global_, original) and minus_global.std() > 1
    # Global alone: original | global | original - global, the same tiles as with local beside it;
    # its difference is shown at ±100 HU, with local beside it in the window the measured noise sets.
    for row_both, row_global in zip(both, only_global):
        np.testing.assert_array_equal(row_global[1], row_both[1])
    sigma = contract.read_local(inputdir / "series-001").noise["sigma_hu"]["median"]
    width = difference_width(sigma)
    assert width < 200
    page = (tmp_path / "out" / "series-001" / "index.html").read_text()
    assert f"&plusmn;{width / 2:g} HU around 0" in page
    assert "&plusmn;100 HU around 0" in (tmp_path / "out" / "series-002" / "index.html").read_text()
    assert 'src="./noise-map.png"' in page and "NPS (mean 1)" in page
    with Image.open(tmp_path / "out" / "series-001" / "noise-map.png") as img:
        assert img.size[0] == 256 and np.asarray(img).max() == 255

    # Local alone: original | local | original - local.
    decomposed_series(tmp_path / "l", svd=False)
    add_local(tmp_path / "l" / "volume" / "series-001", smoothed(demo.hu))
    assert render(tmp_path / "l" / "volume", tmp_path / "l" / "out", "--windows", "lung", "--no-dicom") == 0
    (row, *_) = montage_columns(tmp_path / "l" / "out" / "series-001" / "montage-lung.png", (48, 48), rows=4)
    assert len(row) == 3 and not (row[2] == MID_GREY).all()
    assert not (tmp_path / "l" / "out" / "series-001" / "scree.svg").exists()


def test_slice_pngs_show_the_original_the_published_and_the_other(both, tmp_path, render):
    demo, inputdir, local = both
    assert render(inputdir, tmp_path / "out", "--windows", "lung", "--no-dicom", "--pngs") == 0
    series = tmp_path / "out" / "series-001"
    names = {p.name.split("-")[0] for p in (series / "png" / "lung").glob("*.png")}
    assert names == {"original", "denoised", "global"} and len(list((series / "png" / "lung").iterdir())) == 48
    with Image.open(series / "png" / "lung" / "denoised-0003.png") as img:
        np.testing.assert_array_equal(np.asarray(img), images.Window("lung", -600, 1500).to_uint8(local[3]))
    page = (series / "index.html").read_text()
    assert "from left: original | denoised: local | global r" in page


def test_the_derived_dicom_of_the_local_output_holds_its_hu(both, tmp_path, render):
    demo, inputdir, local = both
    assert render(inputdir, tmp_path / "out", "--windows", "lung") == 0
    files = sorted((tmp_path / "out" / "series-001" / "dicom").glob("*.dcm"))
    assert len(files) == 16
    for i, f in enumerate(files):
        ds = pydicom.dcmread(f)
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        assert np.abs(hu - local[i]).max() <= 0.5 * float(ds.RescaleSlope) + 1e-3
        assert list(ds.ImageType[:2]) == ["DERIVED", "SECONDARY"]
        assert ds.SOPInstanceUID != pydicom.dcmread(demo.files[i]).SOPInstanceUID
    assert ds.SeriesDescription == "SVD denoised local phantom chest"
    assert ds.DerivationDescription.startswith(
        "Local SVD denoising (automatic; noise median 24.5, p10 21, p90 28 HU); pl-svd-render ")
    assert '"patch":8' in ds.DerivationDescription and "local SVD of 8 × 8 patches" in ds.DerivationDescription


def test_render_json_says_which_denoiser_whether_automatic_and_its_parameters(both, tmp_path, render, add_local,
                                                                              local_parameters):
    _, inputdir, _ = both
    add_local(inputdir / "series-001", np.load(inputdir / "series-001" / contract.LOCAL), automatic=False)
    assert render(inputdir, tmp_path / "local", "--windows", "lung", "--no-dicom") == 0
    local = contract.read_render(tmp_path / "local" / "series-001")
    assert (local.denoiser, local.automatic, local.rank, local.k, local.threshold) == ("local", False, None, None, None)
    assert local.parameters == local_parameters
    assert local.method == "local SVD of 8 × 8 patches × 5 slices (tests)"

    assert render(inputdir, tmp_path / "global", "--use", "global", "--windows", "lung", "--no-dicom") == 0
    glob = contract.read_render(tmp_path / "global" / "series-001")
    assert (glob.denoiser, glob.automatic, glob.rank, glob.k) == ("global", True, 8, 8)
    assert glob.parameters["rank_rule"] == "gavish-donoho" and glob.threshold > 0
    assert {k: glob.parameters[k] for k in ("k", "oversample", "power_iters", "seed")} == \
           {"k": 8, "oversample": 0, "power_iters": 0, "seed": 0}
    assert render(inputdir, tmp_path / "given", "--use", "global", "--rank", "3", "--windows", "lung",
                  "--no-dicom") == 0
    given = contract.read_render(tmp_path / "given" / "series-001")
    assert not given.automatic and given.parameters["rank_rule"] == "given" and given.threshold is None


def test_auto_rank_at_k_says_k_was_too_small(both, tmp_path, caplog, render):
    _, inputdir, _ = both
    assert render(inputdir, tmp_path / "out", "--use", "global", "--windows", "lung", "--no-dicom") == 0
    record = contract.read_render(tmp_path / "out" / "series-001")
    warning = ("--rank auto: all k = 8 computed components lie above the Gavish-Donoho threshold, so the cut "
               "is at k, not where the rule would put it: k is too small for the rule; run pl-ssvd-denoise "
               "with a larger --k")
    assert record.rank == record.k == 8 and record.warnings == [warning]
    assert record.noise_hu_estimate is None and record.parameters["noise_estimable"] is False
    assert f"series-001: {warning}" in [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    page = (tmp_path / "out" / "series-001" / "index.html").read_text()
    assert "not estimable from the computed components" in page
    # Publishing local, the same cut concerns the global comparison.
    assert render(inputdir, tmp_path / "local", "--windows", "lung", "--no-dicom") == 0
    assert contract.read_render(tmp_path / "local" / "series-001").warnings == [f"global comparison: {warning}"]


def test_use_local_without_local_npy_fails_that_series_only(tmp_path, render, report, decomposed_series, add_local,
                                                            smoothed):
    demo, inputdir, _ = decomposed_series(tmp_path, name="series-001")
    decomposed_series(tmp_path, name="series-002")
    add_local(inputdir / "series-001", smoothed(demo.hu))
    assert render(inputdir, tmp_path / "out", "--use", "local", "--windows", "lung") == 0
    r = report(tmp_path / "out")
    assert r["status"] == "ok-with-failures" and [o["path"] for o in r["outputs"]] == ["series-001"]
    assert r["errors"] == [{"file": "series-002", "reason": "--use local: this series has no local.npy; "
                                                           "pl-ssvd-denoise writes it in its local mode"}]
    assert not (tmp_path / "out" / "series-002").exists()
    assert render(inputdir, tmp_path / "strict", "--use", "local", "--windows", "lung", "--strict") == 1


def test_use_global_without_factors_fails_that_series_only(tmp_path, render, report, decomposed_series, add_local,
                                                           smoothed):
    demo, inputdir, _ = decomposed_series(tmp_path, name="series-001")
    decomposed_series(tmp_path, name="series-002", svd=False)
    add_local(inputdir / "series-002", smoothed(demo.hu))
    assert render(inputdir, tmp_path / "out", "--use", "global", "--windows", "lung", "--no-dicom") == 0
    (error,) = report(tmp_path / "out")["errors"]
    assert error == {"file": "series-002", "reason": "--use global: this series has no SVD factors (svd.json); "
                                                     "pl-ssvd-denoise writes them in its global mode"}


def test_an_unreadable_comparison_costs_only_its_columns(both, tmp_path, render, report):
    _, inputdir, _ = both
    (inputdir / "series-001" / contract.SVD_VT).unlink()
    assert render(inputdir, tmp_path / "out", "--windows", "lung", "--montage-slices", "1", "--no-dicom") == 0
    reason = ("Vt.npy: cannot read the SVD (FileNotFoundError: missing, truncated or not a .npy file); "
              "run pl-ssvd-denoise again; the global result is left out of the comparison")
    assert report(tmp_path / "out")["errors"] == [{"file": "series-001", "reason": reason}]
    record = contract.read_render(tmp_path / "out" / "series-001")
    assert record.denoiser == "local" and record.warnings == [reason]
    (row,) = montage_columns(tmp_path / "out" / "series-001" / "montage-lung.png", (48, 48), rows=1)
    assert len(row) == 3


def test_rank_flags_with_local_published_say_they_shape_only_the_comparison(both, tmp_path, render):
    _, inputdir, _ = both
    assert render(inputdir, tmp_path / "out", "--rank", "3", "--windows", "lung", "--no-dicom") == 0
    record = contract.read_render(tmp_path / "out" / "series-001")
    assert record.denoiser == "local" and record.warnings == [
        "--rank and --percent-removed apply to the global comparison only: this node publishes local.npy"]
    assert "global r3/8" in (tmp_path / "out" / "series-001" / "index.html").read_text()
