"""Flag values and series refused before Spark starts: exit 2 for flags, a failed series for data."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ctsvd_common import contract
from ssvd_denoise.options import Settings, parser
from ssvd_denoise.run import run as run_settings


def run(args, inputdir, outputdir):
    return run_settings(Settings.from_options(parser.parse_args(args)), inputdir, outputdir)


def report(outputdir):
    return json.loads((outputdir / "ssvd_denoise.report.json").read_text())


def spark_started(caplog):
    return any("starting Spark" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("args,message", [
    (["--k", "0"], "argument --k: expected a whole number of 1 or more, got '0'"),
    (["--oversample", "-1"], "argument --oversample: expected a whole number of 0 or more, got '-1'"),
    (["--power-iters", "-2"], "argument --power-iters: expected a whole number of 0 or more, got '-2'"),
    (["--partitions", "-1"], "argument --partitions: expected a whole number of 0 or more, got '-1'"),
    (["--seed", "-1"], "argument --seed: expected a whole number of 0 or more, got '-1'"),
    (["--executors", "-1"], "argument --executors: expected a whole number of 0 or more, got '-1'"),
    (["--mode", "regional"], "argument --mode: invalid choice: 'regional'"),
    (["--spark-conf", "oops,spark.executor.memory=1g"],
     "argument --spark-conf: expected spark.NAME=VALUE settings, got 'oops,spark.executor.memory=1g'"),
])
def test_an_unusable_flag_value_exits_2_as_the_flags_are_read(capsys, args, message):
    with pytest.raises(SystemExit) as e:
        parser.parse_args(args)
    assert e.value.code == 2
    assert message in capsys.readouterr().err.splitlines()[-1]


def test_k_0_is_refused_before_any_work(series_input, tmp_path):
    """The command: one line after the usage, exit 2, and nothing written."""
    inputdir, _ = series_input
    command = Path(sys.executable).parent / "ssvd_denoise"
    proc = subprocess.run([command, "--k", "0", inputdir, tmp_path / "out"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == ("ssvd_denoise: error: argument --k: expected a whole number of 1 or more, "
                                            "got '0'")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_argparse_type_errors_exit_2():
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["--k", "many"])
    assert e.value.code == 2


def test_non_finite_series_fail_with_a_count_and_spark_never_starts(tmp_path, caplog, decaying_volume, write_series):
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


def _truncated(folder, decaying_volume, write_series, manifest_for):
    write_series(folder, decaying_volume(m=8, rows=16, cols=64))
    data = (folder / contract.VOLUME).read_bytes()
    (folder / contract.VOLUME).write_bytes(data[:len(data) // 2])


def _one_slice(folder, decaying_volume, write_series, manifest_for):
    write_series(folder, decaying_volume(m=1, rows=16, cols=64))


def _all_zero(folder, decaying_volume, write_series, manifest_for):
    write_series(folder, np.zeros((8, 16, 64), np.float32))


def _shape_differs(folder, decaying_volume, write_series, manifest_for):
    write_series(folder, decaying_volume(m=8, rows=16, cols=64))
    contract.write_manifest(folder, manifest_for(np.zeros((9, 16, 64), np.float32)))


def _old_manifest(folder, decaying_volume, write_series, manifest_for):
    write_series(folder, decaying_volume(m=8, rows=16, cols=64))
    raw = json.loads((folder / contract.MANIFEST).read_text())
    (folder / contract.MANIFEST).write_text(json.dumps({**raw, "version": 1}))


def _no_headers(folder, decaying_volume, write_series, manifest_for):
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
def test_a_bad_series_is_one_line_and_costs_no_spark(tmp_path, caplog, make, reason, decaying_volume, write_series,
                                                    manifest_for):
    make(tmp_path / "in" / "series-001", decaying_volume, write_series, manifest_for)
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
