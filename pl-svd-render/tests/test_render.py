"""pl-svd-render: rebuilt volumes, pictures, report and derived DICOM, read back."""

import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import numpy as np
import pydicom
import pytest
from PIL import Image

from ctsvd_common import contract
from svd_render import images
from svd_render.rank import choose, gavish_donoho, noise_level, parse_rank


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.targets = []

    def handle_starttag(self, tag, attrs):
        self.targets += [v for k, v in attrs if k in ("src", "href")]


def test_full_rank_rebuild_is_the_volume(full_rank, tmp_path, render):
    demo, inputdir, s = full_rank
    assert render(inputdir, tmp_path / "out", "--rank", "16", "--no-dicom", "--npy") == 0
    denoised = np.load(tmp_path / "out" / "series-001" / "denoised.npy")
    assert denoised.dtype == np.float32 and denoised.shape == demo.hu.shape
    assert np.abs(denoised - demo.hu).max() < 1e-5 * np.abs(demo.hu).max()
    record = contract.read_render(tmp_path / "out" / "series-001")
    assert record.rank == 16 and record.relative_change < 1e-6 and record.warnings == []
    assert record.dicom is None and record.denoiser == "global" and not record.automatic


def test_a_low_rank_rebuild_is_the_truncated_svd(full_rank, tmp_path, render):
    demo, inputdir, _ = full_rank
    assert render(inputdir, tmp_path / "out", "--rank", "3", "--no-dicom", "--npy") == 0
    A = demo.hu.reshape(16, -1).astype(np.float64)
    U, s, Vt = np.linalg.svd(A, full_matrices=False)
    expected = ((U[:, :3] * s[:3]) @ Vt[:3]).reshape(demo.hu.shape)
    denoised = np.load(tmp_path / "out" / "series-001" / "denoised.npy")
    assert np.abs(denoised - expected).max() < 1e-3


def test_pictures_and_report_are_complete(full_rank, tmp_path, render):
    demo, inputdir, _ = full_rank
    assert render(inputdir, tmp_path / "out", "--percent-removed", "50", "--windows", "lung,soft:50:350",
                  "--pngs") == 0
    series = tmp_path / "out" / "series-001"
    for window in ("lung", "soft"):
        pngs = sorted((series / "png" / window).glob("*.png"))
        assert len(pngs) == 32
        with Image.open(pngs[0]) as img:
            assert img.size == (48, 48) and img.mode == "L"
        with Image.open(series / f"montage-{window}.png") as img:
            assert img.width > 3 * 48
    lung = contract.read_render(series)
    assert lung.rank == 8 and lung.method.startswith("last 50 %")
    # A lung-window pixel is the HU value mapped through C −600 / W 1500.
    with Image.open(series / "png" / "lung" / "original-0000.png") as img:
        pixels = np.asarray(img).astype(float)
    expected = np.clip(np.rint((demo.hu[0] + 1350) * 255 / 1500), 0, 255)
    assert np.abs(pixels - expected).max() <= 1
    ET.fromstring((series / "scree.svg").read_text())  # well-formed
    links = Links()
    links.feed((series / "index.html").read_text())
    assert links.targets and all((series / t).exists() for t in links.targets if not t.startswith("http"))
    assert "dicom/README.txt: not a DICOM file" in (series / "index.html").read_text()
    top = Links()
    top.feed((tmp_path / "out" / "index.html").read_text())
    assert top.targets == ["./series-001/index.html"]


def test_derived_dicom_series_opens_with_new_identity_and_the_denoised_pixels(full_rank, tmp_path, render):
    demo, inputdir, _ = full_rank
    assert render(inputdir, tmp_path / "out", "--rank", "5", "--npy") == 0
    series = tmp_path / "out" / "series-001"
    denoised = np.load(series / "denoised.npy")
    files = sorted((series / "dicom").glob("*.dcm"))
    assert len(files) == 16
    sops = set()
    for i, f in enumerate(files):
        ds = pydicom.dcmread(f)
        original = pydicom.dcmread(demo.files[i])
        assert ds.SeriesInstanceUID != original.SeriesInstanceUID
        assert ds.SOPInstanceUID != original.SOPInstanceUID == ds.SourceImageSequence[0].ReferencedSOPInstanceUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert list(ds.ImageType[:2]) == ["DERIVED", "SECONDARY"]
        assert ds.ImagePositionPatient == original.ImagePositionPatient
        assert ds.StudyInstanceUID == original.StudyInstanceUID
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        assert np.abs(hu - denoised[i]).max() <= 0.5 * float(ds.RescaleSlope) + 1e-3
        sops.add(ds.SOPInstanceUID)
    assert len(sops) == 16


def test_rank_choices():
    s = np.array([100.0, 50, 10, 5, 1])
    assert choose(None, 20, s, 5, 1000, 120).rank == 4
    assert choose(3, 0, s, 5, 1000, 120).rank == 3
    clipped = choose(9, 0, s, 5, 1000, 120)
    assert clipped.rank == 5 and "clipped" in clipped.method
    assert clipped.warnings == ("--rank 9 is more than the k = 5 components: all 5 are kept",)
    assert parse_rank(" Auto ", 0) is None and parse_rank("7", 0) == 7 and parse_rank("auto", 99.5) is None
    for bad in [("3", 20.0), ("x", 0.0), ("0", 0.0), ("-2", 0.0), ("2.5", 0.0), ("auto", 100.0),
                ("auto", -1.0), ("auto", float("nan"))]:
        with pytest.raises(ValueError):
            parse_rank(*bad)


def low_rank_plus_noise(m, n, rank, sigma, seed=0):
    """A rank-``rank`` signal well above the noise, plus Gaussian noise of known σ."""
    rng = np.random.default_rng(seed)
    scales = np.geomspace(400, 100, rank) * sigma / 10
    return (rng.standard_normal((m, rank)) * scales) @ rng.standard_normal((rank, n)) + sigma * rng.standard_normal((m, n))


@pytest.mark.parametrize("m,n,k", [(60, 20000, 20), (60, 20000, 60), (16, 2304, 10), (16, 2304, 16)])
def test_the_noise_estimate_finds_a_known_sigma(m, n, k):
    sigma = 4.0  # HU, as on a real series
    A = low_rank_plus_noise(m, n, 6 if m > 16 else 3, sigma)
    s = np.linalg.svd(A, compute_uv=False)
    noise = noise_level(s[:k], m, n, float(np.linalg.norm(A)))
    assert noise.estimable and noise.above == (6 if m > 16 else 3)
    assert noise.sigma == pytest.approx(sigma, rel=0.02)
    assert noise.describe() == f"{noise.sigma:.3g} HU"


def test_the_noise_is_not_estimable_when_k_stops_above_the_noise_floor():
    # Signal of rank 30, 20 components computed: the energy beyond k is mostly signal.
    m, n, sigma = 60, 20000, 4.0
    A = low_rank_plus_noise(m, n, 30, sigma)
    s = np.linalg.svd(A, compute_uv=False)
    noise = noise_level(s[:20], m, n, float(np.linalg.norm(A)))
    assert not noise.estimable and noise.sigma > 5 * sigma  # only an upper bound
    assert noise.describe().startswith("not estimable from the computed components (at most about ")
    choice = choose(None, 0, s[:20], m, n, float(np.linalg.norm(A)))
    assert choice.rank == 20
    assert choice.warnings == ("--rank auto: all k = 20 computed components lie above the Gavish-Donoho "
                               "threshold, so the cut is at k, not where the rule would put it: k is too small "
                               "for the rule; run pl-ssvd-denoise with a larger --k",)
    # A full spectrum decaying as 1/i looks flat over its last few components: no floor either.
    rng = np.random.default_rng(1)
    left, right = np.linalg.qr(rng.standard_normal((m, m)))[0], np.linalg.qr(rng.standard_normal((n, m)))[0]
    A = (left * 1e4 / np.arange(1, m + 1)) @ right.T + rng.standard_normal((m, n))
    full = np.linalg.svd(A, compute_uv=False)
    assert not noise_level(full, m, n, float(np.linalg.norm(A))).estimable


def test_gavish_donoho_finds_the_rank_of_signal_in_white_noise():
    m, n = 60, 20000
    A = low_rank_plus_noise(m, n, 6, 1.0)
    s = np.linalg.svd(A, compute_uv=False)
    norm = float(np.linalg.norm(A))
    truncated = gavish_donoho(s[:20], m, n, noise_level(s[:20], m, n, norm))
    full = gavish_donoho(s, m, n, noise_level(s, m, n, norm))
    assert truncated.rank == full.rank == 6 and truncated.warnings == full.warnings == ()
    assert truncated.threshold == pytest.approx(np.sqrt(2 * n), rel=0.05)  # λ*(β → 0) = √2, σ = 1
    assert choose(None, 0, s[:20], m, n, norm).automatic and not choose(6, 0, s[:20], m, n, norm).automatic


def test_missing_svd_is_reported(tmp_path, render, report):
    (tmp_path / "in").mkdir()
    assert render(tmp_path / "in", tmp_path / "out") == 1
    r = report(tmp_path / "out")
    assert "no denoised or decomposed series found" in r["errors"][0]["reason"]


def test_by_default_one_strip_per_window_and_no_per_slice_files(both, tmp_path, render):
    """The default output: reports, montages, scree plot, render.json, the derived DICOM series and one JPEG
    strip per window holding every slice of the original, the published result and the other denoiser."""
    demo, inputdir, local = both
    assert render(inputdir, tmp_path / "out") == 0
    series = tmp_path / "out" / "series-001"
    files = sorted(p.relative_to(series).as_posix() for p in series.rglob("*") if p.is_file())
    assert [f for f in files if not f.startswith("dicom/")] == [
        "index.html", "montage-lung.png", "montage-mediastinum.png", "noise-map.png", "render.json", "scree.svg",
        "viewer-lung.jpg", "viewer-mediastinum.jpg"]
    assert len([f for f in files if f.startswith("dicom/")]) == 16
    assert contract.read_render(series).denoised is None
    # Slice i of column j sits where the page's script cuts it out: the windowed slices, within JPEG's loss.
    page = (series / "index.html").read_text()
    assert '"strip": "viewer-lung.jpg", "tile": [48, 48], "per_column": 16, "slices": 16' in page
    lung = images.Window("lung", -600, 1500)
    with Image.open(series / "viewer-lung.jpg") as img:
        sheet = np.asarray(img).astype(float)
    assert sheet.shape == (16 * 48, 3 * 48)
    for i in (0, 7, 15):
        for j, volume in enumerate((demo.hu, local, None)):
            tile = sheet[i * 48:(i + 1) * 48, j * 48:(j + 1) * 48]
            if volume is not None:
                assert np.abs(tile - lung.to_uint8(volume[i])).mean() < 3, (i, j)
    links = Links()
    links.feed(page)
    assert all((series / t).exists() for t in links.targets if not t.startswith("http"))


def test_strips_of_long_series_wrap_into_columns(tmp_path):
    """A column of the strip holds at most STRIP_HEIGHT pixels of slices; large slices shrink to VIEWER_TILE."""
    volume = np.linspace(-1000, 1000, 5 * 40 * 60, dtype=np.float32).reshape(5, 40, 60)
    window = images.Window("w", 0, 2000)
    layout = images.save_strip(tmp_path / "s.jpg", [volume, volume], window)
    assert layout == {"tile": [40, 60], "per_column": 5, "slices": 5}
    big = np.zeros((3, 1024, 512), dtype=np.float32)
    old = images.STRIP_HEIGHT
    try:
        images.STRIP_HEIGHT = 2 * 256
        layout = images.save_strip(tmp_path / "b.jpg", [big], window)
    finally:
        images.STRIP_HEIGHT = old
    assert layout == {"tile": [256, 128], "per_column": 2, "slices": 3}
    with Image.open(tmp_path / "b.jpg") as img:
        assert img.size == (2 * 128, 2 * 256)


def test_a_render_node_of_the_demo_meets_the_download_target(tmp_path, render, decomposed_series, add_local, smoothed):
    """On the demo series as run-local makes it (96 slices of 512², both denoisers): per series at most
    slices + 20 files and 1.3 x the derived DICOM series' bytes."""
    demo, inputdir, _ = decomposed_series(tmp_path, k=50, slices=96, size=512)
    add_local(inputdir / "series-001", smoothed(demo.hu))
    assert render(inputdir, tmp_path / "out") == 0
    series = tmp_path / "out" / "series-001"
    files = [p for p in series.rglob("*") if p.is_file()]
    dicom = sum(p.stat().st_size for p in (series / "dicom").glob("*.dcm"))
    total = sum(p.stat().st_size for p in files)
    assert len(files) <= 96 + 20, len(files)
    assert total <= 1.3 * dicom, (total / dicom, sorted((p.name, p.stat().st_size) for p in files
                                                        if p.parent.name != "dicom"))
