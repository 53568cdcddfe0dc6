"""Fixtures: series folders as pl-dicom2matrix writes them, made of synthetic volumes, and matrices of a
known spectrum. The makers are fixtures that return the function, as tests call them with their own sizes."""

import pytest

from ctsvd_testdata import series_folders
from ctsvd_testdata.series_folders import decaying_volume, write_series


@pytest.fixture(name="decaying_volume")
def decaying_volume_maker():
    return series_folders.decaying_volume


@pytest.fixture(name="manifest_for")
def manifest_maker():
    return series_folders.manifest_for


@pytest.fixture(name="write_series")
def series_writer():
    return series_folders.write_series


@pytest.fixture(name="spectrum_matrix")
def spectrum_matrix_maker():
    return series_folders.spectrum_matrix


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
