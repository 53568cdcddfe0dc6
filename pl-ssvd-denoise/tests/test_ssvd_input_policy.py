"""Flag values and series refused before Spark starts: exit 2 for flags, a failed series for data."""

import json

import numpy as np
import pytest

from ctsvd_common import contract
from ssvd_denoise.__main__ import main, parser

from conftest import decaying_volume, manifest_for, write_series


def run(args, inputdir, outputdir):
    return main(parser.parse_args(args), inputdir, outputdir)


def report(outputdir):
    return json.loads((outputdir / "ssvd_denoise.report.json").read_text())


def spark_started(caplog):
    return any("starting Spark" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("args,flag", [
    (["--k", "0"], "--k"),
    (["--oversample", "-1"], "--oversample"),
    (["--power-iters", "-2"], "--power-iters"),
    (["--partitions", "-1"], "--partitions"),
    (["--seed", "-1"], "--seed"),
    (["--spark-conf", "spark.executor.memory=1g,oops"], "--spark-conf"),
])
def test_an_unusable_flag_value_exits_2_before_any_work(series_input, tmp_path, caplog, args, flag):
    inputdir, _ = series_input
    assert run(args, inputdir, tmp_path / "out") == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].startswith(f"{flag}: expected ")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ssvd_denoise.report.json"]
    assert report(tmp_path / "out")["status"] == "usage-error"
    assert not spark_started(caplog)


def test_argparse_type_errors_exit_2():
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["--k", "many"])
    assert e.value.code == 2


def test_non_finite_series_fail_with_a_count_and_spark_never_starts(tmp_path, caplog):
    inputdir = tmp_path / "in"
    for name, bad in (("series-001", np.nan), ("series-002", -np.inf)):
        volume = decaying_volume(m=8, rows=16, cols=64)
        volume[2, 3, 4:7] = bad
        write_series(inputdir / name, volume)
    assert run([], inputdir, tmp_path / "out") == 1
    r = report(tmp_path / "out")
    assert {e["file"]: e["reason"] for e in r["errors"]} == {
        "series-002": "the volume holds 3 non-finite values (NaN or infinity)",
        "series-001": "the volume holds 3 non-finite values (NaN or infinity)",
    }
    assert not spark_started(caplog)
    assert any("Spark was not started" in r.getMessage() for r in caplog.records)


def _truncated(folder):
    write_series(folder, decaying_volume(m=8, rows=16, cols=64))
    data = (folder / contract.VOLUME).read_bytes()
    (folder / contract.VOLUME).write_bytes(data[:len(data) // 2])


def _one_slice(folder):
    write_series(folder, decaying_volume(m=1, rows=16, cols=64))


def _all_zero(folder):
    write_series(folder, np.zeros((8, 16, 64), np.float32))


def _shape_differs(folder):
    write_series(folder, decaying_volume(m=8, rows=16, cols=64))
    contract.write_manifest(folder, manifest_for(np.zeros((9, 16, 64), np.float32)))


def _old_manifest(folder):
    write_series(folder, decaying_volume(m=8, rows=16, cols=64))
    raw = json.loads((folder / contract.MANIFEST).read_text())
    (folder / contract.MANIFEST).write_text(json.dumps({**raw, "version": 1}))


def _no_headers(folder):
    write_series(folder, decaying_volume(m=8, rows=16, cols=64))
    (folder / contract.HEADERS).rmdir()


@pytest.mark.parametrize("make,reason", [
    (_truncated, "volume.npy: cannot read the volume (ValueError: truncated or not a .npy file)"),
    (_one_slice, "the volume has 1 slice(s); an SVD needs at least 2"),
    (_all_zero, "the volume is all zeros: there is nothing to decompose"),
    (_shape_differs, "volume.npy: shape (8, 16, 64) differs from the manifest's [9, 16, 64]"),
    (_old_manifest, "ctsvd-series-manifest version 1 is not supported"),
    (_no_headers, "headers missing from the series folder"),
])
def test_a_bad_series_is_one_line_and_costs_no_spark(tmp_path, caplog, make, reason):
    make(tmp_path / "in" / "series-001")
    assert run([], tmp_path / "in", tmp_path / "out") == 1
    errors = report(tmp_path / "out")["errors"]
    assert len(errors) == 1 and errors[0]["file"] == "series-001"
    assert reason in errors[0]["reason"] and "\n" not in errors[0]["reason"]
    assert str(tmp_path) not in errors[0]["reason"]
    assert not spark_started(caplog)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ssvd_denoise.report.json"]


def test_a_link_out_of_the_input_is_never_read_or_passed_forward(series_input, tmp_path, caplog):
    """headers/0000.dcm pointing at a system file: the series fails before Spark, nothing is copied."""
    inputdir, _ = series_input
    header = inputdir / "series-001" / contract.HEADERS / "0000.dcm"
    header.symlink_to("/etc/passwd")
    assert run(["--k", "2"], inputdir, tmp_path / "out") == 1
    (error,) = report(tmp_path / "out")["errors"]
    assert error["reason"] == f"headers/{header.name}: a link to outside the input folder, not followed"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ssvd_denoise.report.json"]
    assert not spark_started(caplog)
