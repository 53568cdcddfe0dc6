"""Real de-identified chest CT slices (TCIA COVID-19-NY-SBU) through the first two stages.

Skipped when ../shared/data is not beside the clone, as in users' clones.
"""

import json

import numpy as np
import pydicom

from ctsvd_common import contract

from plugin_commands import all_files, error_lines, run_command, source as path_of


def test_tcia_slices_go_through_anonymizer_and_converter(shared_data, tmp_path):
    source = shared_data("covid-19-ny-sbu")
    anon = run_command("dcm_anon", source, tmp_path / "anon")
    assert anon.returncode == 0 and error_lines(anon.stderr) == []
    dicoms = [f for f in all_files(tmp_path / "anon") if f.suffix == ".dcm"]
    assert len(dicoms) == 62

    # One or two slices per series in this sample: converted only with --min-slices 1.
    volumes = run_command("dicom2matrix", "--min-slices", "1", tmp_path / "anon", tmp_path / "volumes")
    assert volumes.returncode == 0 and error_lines(volumes.stderr) == []
    report = json.loads((tmp_path / "volumes" / "dicom2matrix.report.json").read_text())
    assert report["summary"]["images"] == 62 and report["errors"] == []

    # The layout is kept; the folders named after PatientIDs are renamed: the report says which input is which.
    inputs = sorted(str(p.relative_to(source)) for p in all_files(source))
    anon_report = json.loads((tmp_path / "anon" / "dcm_anon.report.json").read_text())
    original_of = {o["path"]: source / inputs[o["input"] - 1] for o in anon_report["outputs"]}
    for series in contract.find_series(tmp_path / "volumes"):
        manifest = contract.read_manifest(series)
        assert manifest.series.patient_identity_removed is True
        first = manifest.slices[0]
        written = path_of(tmp_path / "anon", first.source)
        anonymized = pydicom.dcmread(tmp_path / "anon" / written)
        original = pydicom.dcmread(original_of[written])
        assert anonymized.SOPInstanceUID != original.SOPInstanceUID
        hu = original.pixel_array * float(original.RescaleSlope) + float(original.RescaleIntercept)
        if "PixelPaddingValue" in original:
            hu[original.pixel_array == original.PixelPaddingValue] = -1024
        assert np.array_equal(np.load(series / contract.VOLUME)[0], hu.astype(np.float32))
