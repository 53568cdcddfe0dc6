"""The plugin end to end on a real Spark in local mode."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ctsvd_common import contract
from ssvd_denoise.options import Settings, parser
from ssvd_denoise.run import run


def run_plugin(args, inputdir, outputdir):
    return run(Settings.from_options(parser.parse_args(args)), inputdir, outputdir)


def load(series_dir):
    return (np.load(series_dir / contract.SVD_U), np.load(series_dir / contract.SVD_S),
            np.load(series_dir / contract.SVD_VT), json.loads((series_dir / contract.SVD_JSON).read_text()))


@pytest.mark.parametrize("method", ["auto", "randomized"])
def test_local_mode_matches_lapack_and_passes_the_series_forward(series_input, tmp_path, method):
    inputdir, volume = series_input
    out = tmp_path / "out"
    assert run_plugin(["--k", "12", "--master", "local[2]", "--method", method], inputdir, out) == 0
    series = out / "series-001"
    U, s, Vt, record = load(series)
    A = volume.reshape(volume.shape[0], -1).astype(np.float64)
    reference = np.linalg.svd(A, compute_uv=False)
    assert U.shape == (48, 12) and s.shape == (12,) and Vt.shape == (12, A.shape[1])
    assert U.dtype == s.dtype == Vt.dtype == np.float32
    # float32 storage bounds the agreement; the Gram route is exact before that.
    assert np.max(np.abs(s - reference[:12]) / reference[:12]) < (1e-6 if method == "auto" else 1e-3)
    assert np.allclose(Vt @ Vt.T, np.eye(12), atol=1e-4)
    rebuilt = (U.astype(np.float64) * s) @ Vt
    assert record["relative_error"] == pytest.approx(np.linalg.norm(A - rebuilt) / np.linalg.norm(A), rel=1e-3)
    if method == "auto":  # 48 slices: the exact route, two passes
        assert record["method"] == "gram" and record["method_reason"].startswith("auto: 48 slices ≤ ")
        assert [p["pass"] for p in record["timings"]["passes"]] == ["Gram matrix", "eigen-images"]
    else:
        assert record["method"] == "randomized" and record["method_reason"] == "--method randomized"
        assert record["k"] == 12 and record["oversample"] == 15 and record["power_iters"] == 2
        assert len(record["timings"]["passes"]) == 4
    assert record["warnings"] == []
    typed = contract.read_svd(series)
    assert typed.k == 12 and typed.singular_values == record["singular_values"]
    assert record["spark"]["master"] == "local[2]" and record["spark"]["data_access"] == "shared"
    # Executors wrote their columns of Vt in place, into a file whose data start on a page.
    assert record["spark"]["vt_written_by"] == "executors"
    assert np.load(series / contract.SVD_VT, mmap_mode="r").offset == 4096
    # What later stages need came along, byte for byte.
    for name in (contract.VOLUME, contract.MANIFEST):
        assert (series / name).read_bytes() == (inputdir / "series-001" / name).read_bytes()
    assert not [p for p in out.rglob(".*")], "temporary files left behind"
    report = json.loads((out / "ssvd_denoise.report.json").read_text())
    assert report["status"] == "ok" and report["outputs"][0]["k"] == 12
    assert report["outputs"][0]["method"] == record["method"]


def test_streamed_blocks_give_the_same_factors(series_input, tmp_path):
    inputdir, _ = series_input
    assert run_plugin(["--k", "6", "--master", "local[2]", "--partitions", "3"], inputdir, tmp_path / "a") == 0
    assert run_plugin(["--k", "6", "--master", "local[2]", "--partitions", "3", "--data-access", "stream"],
                      inputdir, tmp_path / "b") == 0
    Ua, sa, Va, ra = load(tmp_path / "a" / "series-001")
    Ub, sb, Vb, rb = load(tmp_path / "b" / "series-001")
    assert rb["spark"]["data_access"] == "stream" and rb["spark"]["partitions"] == 3
    assert rb["spark"]["vt_written_by"] == "driver"
    assert np.allclose(sa, sb, rtol=1e-6) and np.allclose(Va, Vb, atol=1e-5) and np.allclose(Ua, Ub, atol=1e-5)


def test_k_above_the_slice_count_is_clipped_with_a_warning(series_input, tmp_path, caplog):
    inputdir, volume = series_input
    assert run_plugin(["--k", "500", "--power-iters", "0"], inputdir, tmp_path / "out") == 0
    U, s, Vt, record = load(tmp_path / "out" / "series-001")
    assert record["k"] == 48 and record["requested_k"] == 500
    warning = "--k 500 is more than the 48 slices: at most 48 components are computed"
    assert record["warnings"] == [warning]
    assert f"series-001: {warning}" in [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    rebuilt = ((U * s) @ Vt).reshape(volume.shape)
    assert np.abs(rebuilt - volume).max() < 1e-3 * np.abs(volume).max()


def test_no_series_is_a_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = subprocess.run([sys.executable, "-m", "ssvd_denoise", str(tmp_path / "empty"), str(tmp_path / "out")],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if " ERROR: " in line]
    assert len(errors) == 1 and "no series found" in errors[0] and "manifest.json" in errors[0]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ssvd_denoise.report.json"]


def test_bad_series_fail_alone_beside_a_good_one(series_input, tmp_path, write_series):
    inputdir, volume = series_input
    write_series(inputdir / "series-002", np.zeros_like(volume))
    truncated = write_series(inputdir / "series-003", volume) / contract.VOLUME
    truncated.write_bytes(truncated.read_bytes()[:1000])
    assert run_plugin(["--k", "4"], inputdir, tmp_path / "out") == 0
    report = json.loads((tmp_path / "out" / "ssvd_denoise.report.json").read_text())
    assert report["status"] == "ok-with-failures"
    assert {e["file"]: e["reason"] for e in report["errors"]} == {
        "series-002": "the volume is all zeros: there is nothing to decompose",
        "series-003": "volume.npy: cannot read the volume (ValueError: truncated or not a .npy file)",
    }
    assert [o["path"] for o in report["outputs"]] == ["series-001"]
    assert contract.read_svd(tmp_path / "out" / "series-001").k == 4
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["series-001", "ssvd_denoise.report.json"]
    # --strict turns the same run into a failure, outputs and all.
    assert run_plugin(["--k", "4", "--strict"], inputdir, tmp_path / "strict") == 1
    assert (tmp_path / "strict" / "series-001" / contract.SVD_VT).exists()


def _one_error(proc):
    errors = [line for line in proc.stderr.splitlines() if " ERROR: " in line]
    assert proc.returncode == 1 and len(errors) == 1, proc.stderr[-2000:]
    return errors[0]


def test_an_unreachable_master_is_named_at_once(series_input, tmp_path):
    inputdir, _ = series_input
    proc = subprocess.run([sys.executable, "-m", "ssvd_denoise", "--master", "spark://127.0.0.1:1",
                           str(inputdir), str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert _one_error(proc).endswith("no Spark master answered at spark://127.0.0.1:1 within 10 s "
                                     "(127.0.0.1:1: Connection refused)")


def test_missing_java_is_one_line(series_input, tmp_path):
    inputdir, _ = series_input
    env = {**os.environ, "JAVA_HOME": str(tmp_path / "no-java"), "PATH": str(Path(sys.executable).parent)}
    proc = subprocess.run([sys.executable, "-m", "ssvd_denoise", str(inputdir), str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert "JAVA_GATEWAY_EXITED" in _one_error(proc)
    assert not (tmp_path / "out" / "series-001").exists()


def test_local_star_is_sized_by_the_containers_cpu_limit(tmp_path, monkeypatch):
    """ChRIS runs the node with a cpu_limit (a cgroup CPU quota); local[*] takes that many cores, rounded up,
    never more than the CPUs the process may run on."""
    from ssvd_denoise.spark.session import cpu_limit, local_master
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert cpu_limit(v2) == 1.5 and local_master("local[*]", v2) == "local[2]"
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cpu_limit(v2) is None and local_master("local[*]", v2) == "local[8]"
    (v2 / "cpu.max").write_text("2000000 100000\n")  # 20 CPUs allowed, 8 to run on
    assert local_master("local[*]", v2) == "local[8]"
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("200000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert local_master("local[*]", v1.parent) == "local[2]"
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert local_master("local[*]", v1.parent) == "local[8]"
    assert local_master("local[3]", v2) == "local[3]" and local_master("spark://h:7077", v2) == "spark://h:7077"
    assert cpu_limit(tmp_path / "none") is None
