"""The ChRIS plugin descriptor, and a run over real (already de-identified) chest CT slices."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from ctsvd_testdata.anon_tree import output_dicoms
from ctsvd_testdata.shared import data_dir

COVID = data_dir("covid-19-ny-sbu")


def test_chris_plugin_descriptor():
    bin_dir = Path(sys.executable).parent
    # chris_plugin_info finds the command on PATH, as in the plugin's image.
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run([str(bin_dir / "chris_plugin_info"), "-d", "docker.io/fnndsc/pl-dcm-anon:0.1.0",
                           "pl-dcm-anon"], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["type"] == "ds"
    assert info["selfexec"] == "dcm_anon"
    assert info["version"] == "0.1.0"
    assert info["title"] == "DICOM de-identification (PS3.15 Basic Profile)"
    assert info["category"] == "DICOM"
    assert info["min_memory_limit"] == "500Mi" and info["min_cpu_limit"] == "1000m"
    params = {p["flag"]: p for p in info["parameters"]}
    assert set(params) == {"--keep-dates", "--shift-dates", "--clean-descriptors", "--keep-safe-private",
                           "--keep-uids", "--keep-device-id", "--keep-patient-chars",
                           "--keep-institution-id", "--pseudonym-key", "--no-tag-report", "--workers",
                           "--strict", "--input-map", "--overwrite"}
    for flag, p in params.items():
        assert p["optional"] is True and p["help"]
        if flag in ("--pseudonym-key", "--input-map"):
            assert (p["type"], p["action"], p["default"]) == ("str", "store", "")
        elif flag == "--workers":
            assert (p["type"], p["action"], p["default"]) == ("int", "store", 0)
        else:
            assert (p["type"], p["action"], p["default"]) == ("bool", "store_true", False)


@pytest.mark.skipif(COVID is None, reason="shared COVID-19-NY-SBU slices not available")
def test_real_chest_ct_slices(tmp_path, run):
    out = tmp_path / "out"
    assert run(COVID, out) == 0
    written = output_dicoms(out)
    assert len(written) == 62
    originals, patient_ids = set(), set()
    for src in COVID.rglob("*.dcm"):
        ds = pydicom.dcmread(src, stop_before_pixels=True)
        originals.update({ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID})
        patient_ids.add(str(ds.PatientID))
    # TCIA names each patient's folder after the PatientID: the layout is kept, the names are not.
    inputs = sorted(str(p.relative_to(COVID)) for p in COVID.rglob("*.dcm"))
    report = json.loads((out / "dcm_anon.report.json").read_text())
    source = {o["path"]: COVID / inputs[o["input"] - 1] for o in report["outputs"]}
    # TCIA names each patient's folder after the PatientID and each file after the study date:
    # outputs are named by series and position only.
    for path in written:
        assert re.fullmatch(r"series-\d{3}/\d{4}\.dcm", path.relative_to(out).as_posix())
    assert not [p for p in out.rglob("*") if any(i in str(p) for i in patient_ids)]
    for path in written:
        ds, original = pydicom.dcmread(path), pydicom.dcmread(source[str(path.relative_to(out))])
        assert ds.PatientIdentityRemoved == "YES"
        assert all(not elem.tag.is_private for elem in ds.iterall())
        assert ds.SOPInstanceUID not in originals and ds.StudyInstanceUID not in originals
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.PixelData == original.PixelData
        for keyword in ("Rows", "Columns", "PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient",
                        "RescaleIntercept", "RescaleSlope", "SliceThickness"):
            assert ds.get(keyword) == original.get(keyword), keyword
    assert report["summary"]["files_written"] == 62 and report["summary"]["patients"] == 10
    assert not report["errors"] and not report["skipped"]
    assert len(list((out / "tag-report").rglob("dicom-tags.json"))) == len({p.parent for p in written})
