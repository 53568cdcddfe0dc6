"""Fixtures: a decomposed series as pl-ssvd-denoise hands it on (built by
:mod:`ctsvd_testdata.series_folders`: the phantom's DICOM files, LAPACK's exact
factors, a stand-in local result), and the plugin's core run on real flags.

Tests take the builders as fixtures (``decomposed_series``, ``add_local``,
``smoothed``), and ``render``/``report`` to run the plugin's core on real
flags and read its run report; nothing here is imported.
"""

import json

import pytest

from ctsvd_testdata import series_folders
from svd_render.options import Settings, parser
from svd_render.run import run


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
    return series_folders.decomposed_series


@pytest.fixture
def add_local():
    """add_local(series, volume, automatic=True): local.npy and local.json in a series folder."""
    return series_folders.add_local


@pytest.fixture
def local_parameters():
    """The parameters render.json holds for a local result that add_local wrote."""
    return {**series_folders.LOCAL_PARAMETERS, "noise_hu": series_folders.LOCAL_NOISE}


@pytest.fixture
def smoothed():
    """smoothed(volume, sigma=1.0): a Gaussian-smoothed copy, a stand-in for a denoised volume."""
    return series_folders.smoothed


@pytest.fixture
def full_rank(tmp_path):
    return series_folders.decomposed_series(tmp_path)


@pytest.fixture
def both(tmp_path):
    """Global factors (k = 8) and a smoothed local.npy in one series folder."""
    demo, inputdir, s = series_folders.decomposed_series(tmp_path, k=8)
    return demo, inputdir, series_folders.add_local(inputdir / "series-001", series_folders.smoothed(demo.hu))
