"""The fast paths change nothing: the writer writes exactly what pydicom's save_as writes, and values
the de-identifier replaces without decoding them come out as from decoded ones, on every file dcm_anon can read."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from ctsvd_common import dicom
from pydicom.data import get_testdata_file

from dcm_anon.deidentify import Deidentifier
from dcm_anon.profile import RETAIN_OPTIONS, load_profile
from dcm_anon.uids import Pseudonyms
from dcm_anon.writer import write_part10
from ctsvd_testdata.shared import data_dir

PYDICOM_FILES = sorted(dicom.input_files(Path(get_testdata_file("CT_small.dcm")).parent))


def _readable(paths):
    dicom.quiet_pydicom()
    for path in paths:
        try:
            yield path, dicom.read(path, pixels=True)
        except (dicom.NotDicom, dicom.BadDicom, OSError):
            continue


def _assert_same_bytes(datasets, options=()):
    checked = 0
    for path, ds in datasets:
        Deidentifier(load_profile(o.column for o in options), Pseudonyms.for_run("k"), options).apply(ds)
        expected, written = io.BytesIO(), io.BytesIO()
        # Ours first: it meets the file meta as dcm_anon made it (save_as adds to it).
        try:
            write_part10(ds, written)
            ours = None
        except Exception as e:
            ours = e
        try:
            ds.save_as(expected, enforce_file_format=True)
        except Exception:
            continue   # pydicom cannot write it either (dcm_anon reports such a file as failed)
        assert ours is None, path.name
        assert written.getvalue() == expected.getvalue(), path.name
        checked += 1
    return checked


def test_same_bytes_as_save_as_on_pydicom_test_files():
    assert _assert_same_bytes(_readable(PYDICOM_FILES)) > 50


def test_same_bytes_with_every_option(series):
    options = [o for o in RETAIN_OPTIONS if o.dest != "keep_dates"]
    assert _assert_same_bytes(_readable(series.files), options) == 4   # one of them implicit VR


@pytest.mark.skipif(data_dir("covid-19-ny-sbu") is None, reason="shared COVID-19-NY-SBU slices not available")
def test_same_bytes_on_real_slices_with_safe_private():
    files = sorted(data_dir("covid-19-ny-sbu").rglob("*.dcm"))
    options = [o for o in RETAIN_OPTIONS if o.dest == "keep_safe_private"]
    assert _assert_same_bytes(_readable(files), options) == 62


def _values(ds) -> list[tuple]:
    """Every element at every level, decoded: tag, VR and value (sequences by their items)."""
    return [(int(e.tag), e.VR, None if e.VR == "SQ" else repr(e.value)) for e in ds.iterall()]


@pytest.mark.parametrize("options", [(), tuple(o for o in RETAIN_OPTIONS if o.dest != "keep_dates")],
                         ids=["basic", "all-options"])
def test_values_not_decoded_are_treated_as_decoded_ones(series, options):
    """The de-identifier maps UIDs and puts dummies in without decoding the old values first:
    the result is the one it gets from the same file with every element decoded beforehand."""
    compared = 0
    for path, as_read in _readable([*PYDICOM_FILES, *series.files]):
        decoded = dicom.read(path, pixels=True)
        for _ in decoded.iterall():
            pass   # decodes every element
        results = []
        for ds in (as_read, decoded):
            try:
                Deidentifier(load_profile(o.column for o in options), Pseudonyms.for_run("k"), options).apply(ds)
                results.append(_values(ds))
            except Exception as e:
                results.append(type(e))
        assert results[0] == results[1], path.name
        compared += isinstance(results[0], list)
    assert compared > 50
