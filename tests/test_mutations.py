"""200 seeded byte flips and truncations of valid DICOM files, through dcm_anon and dicom2matrix: no
traceback, every input accounted for, and every file written as processed reads back with pydicom."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from ctsvd_testdata.phantom import write_demo_series

from plugin_commands import run_command

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")   # pydicom, reading the mutants back

MUTANTS = 200
SEED = 17
# Valid files of several encodings: our phantom's slices (explicit VR little endian, int16) and
# pydicom's own CT and MR files (implicit VR, big endian, JPEG lossless, RLE).
PYDICOM_FILES = ("CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm",
                 "MR_small_jpeg_ls_lossless.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm")


@pytest.fixture(scope="module")
def mutants(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mutants")
    write_demo_series(root / "valid", slices=6, size=64, seed=5)
    valid = sorted((root / "valid").rglob("*.dcm")) + [Path(get_testdata_file(name)) for name in PYDICOM_FILES]
    originals = [p.read_bytes() for p in valid]
    rng = random.Random(SEED)
    folder = root / "in"
    folder.mkdir()
    for i in range(MUTANTS):
        data = bytearray(rng.choice(originals))
        if i % 4 == 3:   # a quarter cut short, anywhere
            data = data[:rng.randrange(1, len(data))]
        else:            # the rest with 1 to 4 bytes changed, mostly in the header where the structure is
            for _ in range(rng.randint(1, 4)):
                end = len(data) if rng.random() < 0.25 else min(len(data), 1024)
                data[rng.randrange(end)] ^= rng.randrange(1, 256)
        (folder / f"mutant-{i:03d}.dcm").write_bytes(bytes(data))
    return folder


def reads_back(path: Path) -> None:
    """pydicom reads the file without force, and every element of it, nested ones included."""
    ds = pydicom.dcmread(path)
    for element in ds.iterall():
        element.value
    assert "SOPInstanceUID" in ds


def test_dcm_anon_writes_only_what_reads_back(mutants, tmp_path):
    out = tmp_path / "anon"
    proc = run_command("dcm_anon", "--no-tag-report", mutants, out)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    report = json.loads((out / "dcm_anon.report.json").read_text())
    counts = report["counts"]
    assert counts["outputs"] + counts["skipped"] + counts["failed"] == MUTANTS
    assert counts["outputs"] > 20 and counts["failed"] > 20   # both kinds of outcome really occur
    for entry in report["outputs"]:
        reads_back(out / entry["path"])
    assert len(list(out.rglob("*.dcm"))) == counts["outputs"]


def test_dicom2matrix_writes_only_what_reads_back(mutants, tmp_path):
    out = tmp_path / "volumes"
    proc = run_command("dicom2matrix", "--min-slices", "1", mutants, out)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    report = json.loads((out / "dicom2matrix.report.json").read_text())
    assert report["counts"]["skipped"] + report["counts"]["failed"] > 20
    for entry in report["outputs"]:
        series = out / entry["path"]
        volume = np.load(series / "volume.npy")
        assert volume.shape[0] == entry["slices"] and np.isfinite(volume).all()
        headers = sorted((series / "headers").iterdir())
        assert len(headers) == entry["slices"]
        for header in headers:
            reads_back(header)
