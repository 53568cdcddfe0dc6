"""Every file bundled in the installed pydicom wheel's test-file folder, through the
readers as ChRIS runs them: each one ends processed, skipped or failed with a
one-line reason; no traceback; a report is always written; decoded values agree
with pydicom's own."""

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut

from ctsvd_common import contract

from plugin_commands import all_files, run_command, source

TEST_FILES = Path(get_testdata_file("CT_small.dcm")).parent
EVERY = sorted(str(f.relative_to(TEST_FILES)) for f in all_files(TEST_FILES) if not f.name.startswith("."))


def report(folder: Path, stage: str) -> dict:
    return json.loads((folder / f"{stage}.report.json").read_text())


def accounted(rep: dict, outdir: Path) -> dict[str, str]:
    """Each input file → "processed", or the reason it was skipped or failed."""
    name = lambda label: source(TEST_FILES, label)
    out = {name(s["file"]): "skipped: " + s["reason"] for s in rep["skipped"]}
    out.update({name(e["file"]): "failed: " + e["reason"] for e in rep["errors"] if e["file"]})
    for series in contract.find_series(outdir):
        for entry in contract.read_manifest(series).slices:
            out.setdefault(name(entry.source), "processed")
    return out


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("pydicom-files") / "out"
    proc = run_command("dicom2matrix", "--any-modality", "--min-slices", "1", TEST_FILES, out)
    return proc, out


def test_every_file_ends_processed_skipped_or_failed(converted):
    proc, out = converted
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    rep = report(out, "dicom2matrix")
    fate = accounted(rep, out)
    assert sorted(fate) == EVERY
    for line in rep["skipped"] + rep["errors"]:
        assert line["reason"] and "\n" not in line["reason"]


@pytest.mark.parametrize("name, expected", [
    ("badVR.dcm", "failed: NumberOfFrames is not a valid integer"),
    ("MR_truncated.dcm", "failed: truncated pixel data"),
    ("rtplan.dcm", "skipped: not an image (RT Plan Storage)"),
    ("SC_rgb_jpeg_dcmtk.dcm", "skipped: secondary capture"),
    ("ExplVR_BigEnd.dcm", "skipped: colour image (RGB)"),
    ("dicomdirtests/DICOMDIR", "skipped: DICOMDIR"),
    ("README.txt", "skipped: not a DICOM file"),
    ("liver_1frame.dcm", "skipped: a 1-bit image"),
    ("CT_small.dcm", "processed"),
    ("JPGExtended.dcm", "skipped: secondary capture"),
    ("693_J2KI.dcm", "processed"),
    # The same MR slice in several encodings: one is kept, the others are duplicates of it.
    ("MR_small_RLE.dcm", "skipped: duplicate slice position"),
])
def test_known_files_get_the_right_fate(converted, name, expected):
    _, out = converted
    assert accounted(report(out, "dicom2matrix"), out)[name].startswith(expected)


ONE_BY_ONE = ["CT_small.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm",
              "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "JPGExtended.dcm", "JPEG2000.dcm",
              "693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm", "JPEGLSNearLossless_16.dcm", "MR_small_padded.dcm"]


@pytest.mark.parametrize("name", ONE_BY_ONE)
def test_decoded_values_equal_pydicoms_modality_lut(name, tmp_path):
    """Each transfer syntax on its own: the volume equals pydicom 3's own decoding and rescale."""
    (tmp_path / "in").mkdir()
    ds = pydicom.dcmread(TEST_FILES / name)
    if ds.SOPClassUID.name.startswith("Secondary Capture"):
        # Relabelled as a CT slice (a secondary capture is skipped), its encoded pixels untouched.
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.Modality = "CT"
    ds.save_as(tmp_path / "in" / name)
    proc = run_command("dicom2matrix", "--any-modality", "--min-slices", "1", tmp_path / "in", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (series,) = contract.find_series(tmp_path / "out")
    expected = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    padding = contract.read_manifest(series).volume.padding
    if padding:
        expected[ds.pixel_array == ds.PixelPaddingValue] = padding["set_to"]
    assert np.array_equal(np.load(series / contract.VOLUME)[0], expected)


def test_the_anonymizer_then_the_converter(converted, tmp_path):
    anon = run_command("dcm_anon", "--no-tag-report", TEST_FILES, tmp_path / "anon")
    assert anon.returncode == 0 and "Traceback" not in anon.stderr, anon.stderr[-3000:]
    rep = report(tmp_path / "anon", "dcm_anon")
    # Each input once, by its position (names may be de-identified: dicomdirtests names folders by PatientID).
    positions = [e["input"] for e in rep["outputs"] + rep["skipped"] + rep["errors"] if "input" in e]
    assert sorted(positions) == list(range(1, len(EVERY) + 1))
    proc = run_command("dicom2matrix", "--any-modality", "--min-slices", "1", tmp_path / "anon", tmp_path / "vol")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    # What the anonymizer wrote (CT images only: it withholds the rest) converts like the originals did.
    _, out = converted
    ct = lambda s: contract.read_manifest(s).series.modality == "CT"
    before = [e for s in contract.find_series(out) if ct(s) for e in contract.read_manifest(s).slices]
    after = [e for s in contract.find_series(tmp_path / "vol") for e in contract.read_manifest(s).slices]
    assert len(after) == len(before)
