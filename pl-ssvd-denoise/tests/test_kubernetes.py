"""The Spark-on-Kubernetes configuration the plugin builds; a live cluster only when CTSVD_K8S_MASTER is set."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ctsvd_common import contract
from ssvd_denoise.spark import kubernetes
from ssvd_denoise.options import Settings, parser
from ssvd_denoise.run import run

MASTER = "k8s://https://api.example.invalid:6443"
VOLUME = "spark.kubernetes.executor.volumes.persistentVolumeClaim.data"


@pytest.fixture
def pod(tmp_path, monkeypatch):
    """A driver pod's environment: downward-API IP, host name = pod name, a mounted service account."""
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "namespace").write_text("chris-jobs\n")
    (account / "token").write_text("t")
    (account / "ca.crt").write_text("c")
    monkeypatch.setenv("POD_IP", "10.128.4.17")
    monkeypatch.setenv("HOSTNAME", "pl-ssvd-denoise-job-1-abcde")
    return account


def conf_for(args, account, inputdir=Path("/share/incoming"), outputdir=Path("/share/outgoing")):
    k8s = Settings.from_options(parser.parse_args(["--master", MASTER, *args])).kubernetes.with_environment()
    return kubernetes.spark_conf(k8s, inputdir, outputdir, account)


def test_the_generated_configuration_from_flags(pod):
    conf = conf_for(["--k8s-image", "quay.io/ctsvd/pl-ssvd-denoise:0.1.0", "--k8s-pvc", "chris-storebase",
                     "--executors", "4", "--executor-memory", "3g", "--executor-cores", "1",
                     "--k8s-service-account", "ctsvd-spark"], pod)
    assert conf == {
        "spark.submit.deployMode": "client",
        "spark.kubernetes.container.image": "quay.io/ctsvd/pl-ssvd-denoise:0.1.0",
        "spark.kubernetes.namespace": "chris-jobs",
        "spark.kubernetes.authenticate.executor.serviceAccountName": "ctsvd-spark",
        "spark.executor.instances": "4",
        "spark.executor.memory": "3g",
        "spark.executor.cores": "1",
        "spark.pyspark.python": os.sys.executable,
        "spark.driver.host": "10.128.4.17",
        "spark.driver.bindAddress": "0.0.0.0",
        "spark.driver.port": "7078",
        "spark.driver.blockManager.port": "7079",
        "spark.kubernetes.driver.pod.name": "pl-ssvd-denoise-job-1-abcde",
        "spark.kubernetes.authenticate.oauthTokenFile": str(pod / "token"),
        "spark.kubernetes.authenticate.caCertFile": str(pod / "ca.crt"),
        f"{VOLUME}.options.claimName": "chris-storebase",
        f"{VOLUME}.mount.path": "/share",
        f"{VOLUME}.mount.readOnly": "false",
    }


def test_defaults_come_from_the_environment(pod, monkeypatch):
    monkeypatch.setenv("CTSVD_K8S_IMAGE", "registry.local/ssvd:dev")
    monkeypatch.setenv("CTSVD_K8S_NAMESPACE", "imaging")
    monkeypatch.setenv("CTSVD_K8S_EXECUTORS", "3")
    monkeypatch.setenv("CTSVD_K8S_MOUNT", "/data")
    monkeypatch.setenv("CTSVD_K8S_PVC", "scans")
    k8s = kubernetes.Kubernetes.from_options(parser.parse_args([])).with_environment()
    conf = kubernetes.spark_conf(k8s, Path("/data/in"), Path("/data/out"), pod)
    assert conf["spark.kubernetes.container.image"] == "registry.local/ssvd:dev"
    assert conf["spark.kubernetes.namespace"] == "imaging" and conf["spark.executor.instances"] == "3"
    assert conf[f"{VOLUME}.mount.path"] == "/data" and conf[f"{VOLUME}.options.claimName"] == "scans"
    assert conf["spark.executor.memory"] == "2g" and conf["spark.executor.cores"] == "2"


def test_outside_a_pod_no_token_no_volume_and_the_default_namespace(tmp_path, monkeypatch):
    monkeypatch.delenv("POD_IP", raising=False)
    monkeypatch.delenv("HOSTNAME", raising=False)
    conf = conf_for(["--k8s-image", "img"], tmp_path / "no-account")
    assert conf["spark.kubernetes.namespace"] == "default"
    assert not any(k.startswith("spark.kubernetes.authenticate.oauth") or k.startswith(VOLUME) for k in conf)
    assert "spark.kubernetes.driver.pod.name" not in conf
    assert conf["spark.driver.host"]  # the host name's address


def test_spark_conf_overrides_and_a_missing_image_is_a_usage_error(series_input, tmp_path, pod, monkeypatch,
                                                                    started):
    inputdir, _ = series_input
    args = ["--master", MASTER, "--k8s-image", "img", "--executors", "4",
            "--spark-conf", "spark.executor.instances=9,spark.kubernetes.namespace=other"]
    assert run(Settings.from_options(parser.parse_args(args)), inputdir, tmp_path / "out") == 1
    assert started["master"] == MASTER
    assert started["conf"]["spark.executor.instances"] == "9"
    assert started["conf"]["spark.kubernetes.namespace"] == "other"
    assert started["conf"]["spark.kubernetes.container.image"] == "img"

    monkeypatch.delenv("CTSVD_K8S_IMAGE", raising=False)
    settings = Settings.from_options(parser.parse_args(["--master", MASTER, "--k8s-image", ""]))
    assert run(settings, inputdir, tmp_path / "out2") == 2
    report = json.loads((tmp_path / "out2" / "ssvd_denoise.report.json").read_text())
    assert report["errors"][0]["reason"].startswith("--k8s-image: the executors need an image")


@pytest.mark.skipif(not os.environ.get("CTSVD_K8S_MASTER"),
                    reason="set CTSVD_K8S_MASTER=k8s://https://HOST:PORT (and CTSVD_K8S_IMAGE, CTSVD_K8S_*) "
                           "to run against a live cluster, from a pod of that cluster")
def test_live_cluster(series_input, tmp_path):
    inputdir, volume = series_input
    out = Path(os.environ.get("CTSVD_K8S_OUTPUT", tmp_path / "out"))
    args = ["--master", os.environ["CTSVD_K8S_MASTER"], "--mode", "global", "--k", "8"]
    assert run(Settings.from_options(parser.parse_args(args)), inputdir, out) == 0
    record = contract.read_svd(out / "series-001")
    assert record.spark["master"].startswith("k8s://") and record.spark["executors"] >= 1
    reference = np.linalg.svd(volume.reshape(volume.shape[0], -1).astype(np.float64), compute_uv=False)[:8]
    assert np.max(np.abs(np.array(record.singular_values) - reference) / reference) < 1e-6


@pytest.mark.parametrize("args, env, image, source", [
    (["--spark-conf", "spark.kubernetes.container.image=from-conf"], None, "from-conf",
     "--spark-conf spark.kubernetes.container.image"),
    (["--k8s-image", "from-flag", "--spark-conf", "spark.kubernetes.container.image=from-conf"], None, "from-conf",
     "--spark-conf spark.kubernetes.container.image"),
    (["--k8s-image", "from-flag"], None, "from-flag", "--k8s-image"),
    ([], "from-env", "from-env", "CTSVD_K8S_IMAGE"),
])
def test_the_executor_image_from_spark_conf_flag_or_environment(series_input, tmp_path, pod, monkeypatch, caplog, capsys,
                                                                started, args, env, image, source):
    """As the crossover pipeline gives it: only in --spark-conf. The run starts Spark with that image and says
    in one line where the image came from."""
    inputdir, _ = series_input
    if env:
        monkeypatch.setenv("CTSVD_K8S_IMAGE", env)
    else:
        monkeypatch.delenv("CTSVD_K8S_IMAGE", raising=False)
    assert run(Settings.from_options(parser.parse_args(["--master", MASTER, *args])), inputdir, tmp_path / "out") == 1
    assert started["conf"]["spark.kubernetes.container.image"] == image
    log = caplog.text + capsys.readouterr().err
    assert log.count("executor image:") == 1 and f"executor image: {image} (from {source})" in log


def test_a_bad_environment_value_is_a_usage_error_when_the_run_starts(series_input, tmp_path, monkeypatch, caplog):
    inputdir, _ = series_input
    monkeypatch.setenv("CTSVD_K8S_EXECUTORS", "many")
    settings = Settings.from_options(parser.parse_args(["--master", MASTER, "--k8s-image", "img"]))
    assert run(settings, inputdir, tmp_path / "out") == 2
    (error,) = json.loads((tmp_path / "out" / "ssvd_denoise.report.json").read_text())["errors"]
    assert error["reason"] == "CTSVD_K8S_EXECUTORS: expected a whole number of 1 or more, got 'many'"
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [error["reason"]]


def test_help_and_the_flags_defaults_do_not_depend_on_the_environment(monkeypatch):
    """The descriptor is made from the parser: it must be the same whoever generates it."""
    command = [sys.executable, "-m", "ssvd_denoise", "--help"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(kubernetes.ENV_PREFIX)}
    bad = {**clean, "CTSVD_K8S_EXECUTORS": "many", "CTSVD_K8S_IMAGE": "img", "CTSVD_K8S_EXECUTOR_MEMORY": "9g"}
    helps = [subprocess.run(command, env=env, capture_output=True, text=True, timeout=120) for env in (clean, bad)]
    assert [h.returncode for h in helps] == [0, 0] and helps[0].stdout == helps[1].stdout
    assert "CTSVD_K8S_EXECUTORS" in helps[0].stdout


def test_a_flag_wins_over_the_environment_which_wins_over_the_default(monkeypatch):
    monkeypatch.setenv("CTSVD_K8S_EXECUTORS", "3")
    monkeypatch.setenv("CTSVD_K8S_EXECUTOR_MEMORY", "5g")
    k8s = kubernetes.Kubernetes.from_options(parser.parse_args(["--executors", "4"])).with_environment()
    assert (k8s.executors, k8s.executor_memory, k8s.executor_cores, k8s.k8s_service_account) == (4, "5g", 2, "spark")
