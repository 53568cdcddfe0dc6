"""openshift/: the kustomize overlays render (with ``kubectl kustomize``), every
object is valid for the Kubernetes versions OpenShift 4.16/4.17 ship (1.29,
1.30) and the Route for its schema, and the policies hold (restricted SCC,
resources, no secrets in plain sight, least RBAC, consistent names). Each
policy check is also shown to catch a deliberately bad object. Offline; the
live checks at the end run only when a cluster or a pfcon is named in the
environment.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from ctsvd_pipeline.files import PIPELINES

import k8s_policy as policy
from plugin_commands import BIN, ROOT

OPENSHIFT = ROOT / "openshift"
README = OPENSHIFT / "README.md"
ROUTE_SCHEMA = json.loads((OPENSHIFT / "schemas" / "route.openshift.io_v1_Route.schema.json").read_text())
NAMESPACE = "chris-compute"
K8S_VERSIONS = ("1.29.0", "1.30.0")  # the Kubernetes of OpenShift 4.16 and 4.17
# kustomization → whether the platform assigns UIDs (OpenShift's restricted-v2 SCC)
KUSTOMIZATIONS = {
    "overlays/openshift": True,
    "overlays/kubernetes": False,
    "standalone-spark": True,
}

# What each Role may do, from the calls its user makes (see the comments in
# base/pfcon-rbac.yaml and base/spark-driver-rbac.yaml).
ALLOWED_RBAC = {
    "pfcon": {
        ("batch", "jobs"): {"create", "get", "delete"},
        ("", "pods"): {"get", "list"},
        ("", "pods/log"): {"get"},
        ("", "pods/status"): {"get"},
    },
    "spark-driver": {
        ("", "pods"): {"create", "get", "list", "watch", "patch", "delete", "deletecollection"},
        ("", "configmaps"): {"create", "delete", "deletecollection"},
    },
}


def kubectl() -> str | None:
    """The test environment's kubectl (scripts/ensure-venv --test installs one there when PATH has
    none with kustomize 5), else PATH's."""
    return shutil.which("kubectl", path=str(BIN)) or shutil.which("kubectl")


@functools.cache
def kustomized(name: str) -> str:
    tool = kubectl()
    if tool is None:
        pytest.skip("kubectl is not installed (scripts/ensure-venv --test installs it): "
                    "the kustomizations cannot be rendered")
    done = subprocess.run([tool, "kustomize", str(OPENSHIFT / name)], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        pytest.fail(f"kubectl kustomize openshift/{name} failed: {done.stderr.strip()}")
    return done.stdout


def rendered(name: str) -> list[dict]:
    """The objects of one kustomization, as ``kubectl kustomize`` renders it (a fresh copy per call)."""
    return [o for o in yaml.safe_load_all(kustomized(name)) if o]


def find(objects: list[dict], kind: str, name: str) -> dict:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def executor_template(objects: list[dict]) -> dict:
    (pod,) = policy.embedded_pods(find(objects, "ConfigMap", "spark-executor-template"))
    return pod


def readme_spark_conf() -> dict[str, str]:
    from ssvd_denoise.spark.conf import parse_conf  # the plugin's own parser of --spark-conf
    found = re.findall(r"--spark-conf '([^']+)'", README.read_text())
    assert found, "openshift/README.md shows no --spark-conf '...' value"
    return parse_conf(found[0])


# --- schemas -----------------------------------------------------------------

def validate(obj: dict, version: str) -> None:
    if obj["kind"] == "Route":
        jsonschema.validate(obj, ROUTE_SCHEMA)
    else:
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_object_is_valid(name, version):
    objects = rendered(name)
    assert objects
    for obj in objects + [pod for o in objects for pod in policy.embedded_pods(o)]:
        try:
            validate(obj, version)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as e:
            pytest.fail(f"{policy.describe(obj)} is not valid for Kubernetes {version}: {e.message}")


def test_the_validators_reject_bad_objects():
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
               "spec": {"ports": [{"port": "http"}]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(service, K8S_VERSIONS[0])
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "c", "volumeMount": []}]}}  # misspelt field
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(pod, K8S_VERSIONS[0])
    route = find(rendered("overlays/openshift"), "Route", "pfcon")
    for change in (
        lambda r: r["spec"].pop("to"),
        lambda r: r["spec"]["tls"].update(termination="passthrough", insecureEdgeTerminationPolicy="Allow"),
        lambda r: r["spec"].update(path="/api", tls={"termination": "passthrough"}),
        lambda r: r["spec"]["port"].update(targetPort=""),
        lambda r: r["spec"].update(hostname="x"),
        lambda r: r.update(apiVersion="v1"),
    ):
        bad = copy.deepcopy(route)
        change(bad)
        with pytest.raises(jsonschema.ValidationError):
            validate(bad, K8S_VERSIONS[0])


# --- policies ----------------------------------------------------------------

@pytest.mark.parametrize("name, assigned_uid", KUSTOMIZATIONS.items())
def test_security_contexts_fit_the_restricted_scc(name, assigned_uid):
    assert policy.security_problems(rendered(name), assigned_uid) == []


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_container_has_requests_and_limits(name):
    assert policy.resource_problems(rendered(name)) == []


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_server_has_probes(name):
    assert policy.probe_problems(rendered(name)) == []


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_no_secret_values_in_plain_sight(name):
    assert policy.secret_problems(rendered(name)) == []


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_rbac_is_no_wider_than_needed(name):
    assert policy.rbac_problems(rendered(name), ALLOWED_RBAC) == []


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_names_referenced_across_objects_exist(name):
    assert policy.reference_problems(rendered(name)) == []


def pfcon_pod(objects):
    return find(objects, "Deployment", "pfcon")["spec"]["template"]


def test_security_check_catches_bad_pods():
    objects = rendered("overlays/openshift")
    cases = {
        "privileged": lambda p: p["spec"]["containers"][0]["securityContext"].update(privileged=True),
        "runAsUser is 0": lambda p: p["spec"]["securityContext"].update(runAsUser=0),
        "runAsNonRoot is not true": lambda p: p["spec"]["securityContext"].pop("runAsNonRoot"),
        "allowPrivilegeEscalation": lambda p: p["spec"]["containers"][0]["securityContext"].pop(
            "allowPrivilegeEscalation"),
        "does not drop ALL": lambda p: p["spec"]["containers"][0]["securityContext"].update(capabilities={}),
        "seccompProfile": lambda p: p["spec"]["securityContext"].pop("seccompProfile"),
        "which the SCC assigns": lambda p: p["spec"]["securityContext"].update(fsGroup=1001),
        "hostPath": lambda p: p["spec"]["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
    }
    for message, change in cases.items():
        bad = copy.deepcopy(objects)
        change(pfcon_pod(bad))
        problems = policy.security_problems(bad, assigned_uid=True)
        assert any(message in p for p in problems), (message, problems)
    # and inside the executor template a ConfigMap holds
    bad = copy.deepcopy(objects)
    cm = find(bad, "ConfigMap", "spark-executor-template")
    cm["data"]["executor-pod-template.yaml"] = cm["data"]["executor-pod-template.yaml"].replace(
        "allowPrivilegeEscalation: false", "privileged: true")
    assert any("privileged" in p for p in policy.security_problems(bad, assigned_uid=True))


def test_resource_check_catches_a_missing_limit():
    bad = copy.deepcopy(rendered("overlays/openshift"))
    pfcon_pod(bad)["spec"]["containers"][0]["resources"]["limits"].pop("memory")
    assert policy.resource_problems(bad) == [
        f"Deployment {NAMESPACE}/pfcon container pfcon: no limits for ['memory']"]


def test_probe_check_catches_missing_probes():
    bad = copy.deepcopy(rendered("overlays/openshift"))
    pfcon_pod(bad)["spec"]["containers"][0].pop("readinessProbe")
    find(bad, "Deployment", "spark-templates")["spec"]["template"]["spec"]["containers"][0].pop("livenessProbe")
    assert policy.probe_problems(bad) == [
        f"Deployment {NAMESPACE}/pfcon container pfcon: behind a Service, no readinessProbe",
        f"Deployment {NAMESPACE}/spark-templates container http: no livenessProbe"]


def test_secret_check_catches_plain_credentials():
    bad = copy.deepcopy(rendered("overlays/openshift"))
    pfcon_pod(bad)["spec"]["containers"][0]["env"].append({"name": "PFCON_PASSWORD", "value": "pfcon1234"})
    find(bad, "ConfigMap", "pfcon-config")["data"]["SECRET_KEY"] = "x"
    bad.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": NAMESPACE},
                "stringData": {"PFCON_PASSWORD": "x"}})
    problems = policy.secret_problems(bad)
    assert len(problems) == 3, problems


def test_rbac_check_catches_wide_rules():
    bad = copy.deepcopy(rendered("overlays/openshift"))
    find(bad, "Role", "pfcon")["rules"].append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]})
    find(bad, "Role", "spark-driver")["rules"][0]["verbs"].append("*")
    bad.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "x"}})
    problems = policy.rbac_problems(bad, ALLOWED_RBAC)
    assert any("core/secrets verbs ['get']" in p for p in problems), problems
    assert any("wildcard" in p for p in problems), problems
    assert any("cluster-wide" in p for p in problems), problems


def test_reference_check_catches_broken_names():
    objects = rendered("overlays/openshift")
    cases = {
        "matches no pod template": lambda o: find(o, "Service", "pfcon")["spec"]["selector"].update(x="y"),
        "is not a port of": lambda o: find(o, "Route", "pfcon")["spec"]["port"].update(targetPort="web"),
        "routes to missing Service": lambda o: find(o, "Route", "pfcon")["spec"]["to"].update(name="pfcon2"),
        "claims missing PVC": lambda o: find(o, "PersistentVolumeClaim", "storebase")["metadata"].update(name="s2"),
        "ServiceAccount pfcon is missing": lambda o: o.remove(find(o, "ServiceAccount", "pfcon")),
        "not chris-compute": lambda o: find(o, "RoleBinding", "pfcon")["subjects"][0].update(namespace="other"),
        "mounts undefined volume": lambda o: pfcon_pod(o)["spec"]["volumes"][0].update(name="v2"),
        "envFrom missing ConfigMap": lambda o: find(o, "ConfigMap", "pfcon-config")["metadata"].update(name="c2"),
    }
    for message, change in cases.items():
        bad = copy.deepcopy(objects)
        change(bad)
        problems = policy.reference_problems(bad)
        assert any(message in p for p in problems), (message, problems)


# --- pfcon's configuration and the Spark pieces ---------------------------------

@pytest.mark.parametrize("name", ["overlays/openshift", "overlays/kubernetes"])
def test_pfcon_configuration_is_consistent(name):
    objects = rendered(name)
    config = find(objects, "ConfigMap", "pfcon-config")["data"]
    pfcon = pfcon_pod(objects)
    assert config["APPLICATION_MODE"] == "production"  # else built-in development credentials
    assert config["CONTAINER_ENV"] == "kubernetes"  # the only engine that reads JOB_NAMESPACE
    namespaces = {o["metadata"]["name"] if o["kind"] == "Namespace" else o["metadata"]["namespace"] for o in objects}
    assert namespaces == {config["JOB_NAMESPACE"]}
    assert (config["PFCON_INNETWORK"], config["STORAGE_ENV"]) == ("false", "zipfile")
    assert config["COMPUTE_VOLUME_TYPE"] == "kubernetes_pvc"
    claim = find(objects, "PersistentVolumeClaim", config["VOLUME_NAME"])
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    mounts = {m["name"]: m["mountPath"] for m in pfcon["spec"]["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pfcon["spec"]["volumes"]}
    assert {volumes[n]: path for n, path in mounts.items()} == {config["VOLUME_NAME"]: config["STOREBASE_MOUNT"]}
    assert pfcon["spec"]["serviceAccountName"] == "pfcon"
    assert find(objects, "Deployment", "pfcon")["spec"]["template"]["spec"]["containers"][0]["image"] \
        .startswith("ghcr.io/fnndsc/pfcon:5.")
    pod_sc = pfcon["spec"]["securityContext"]
    if name == "overlays/openshift":
        assert "CONTAINER_USER" not in config  # the SCC picks the UID; a fixed one would be refused
    else:  # pfcon's jobs run as pfcon does, so both write in storeBase
        assert config["CONTAINER_USER"] == f"{pod_sc['runAsUser']}:{pod_sc['runAsGroup']}"


def test_kubernetes_namespace_admits_pfcons_jobs():
    """pfcon's job pods set no seccomp profile or runAsNonRoot, so Pod Security
    "restricted" would refuse them: enforce "baseline", warn about the rest."""
    objects = rendered("overlays/kubernetes")
    labels = find(objects, "Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"


def test_the_credentials_secret_is_documented():
    refs = policy.secret_refs(rendered("overlays/openshift"))
    assert refs == {"pfcon-credentials": {"PFCON_USER", "PFCON_PASSWORD", "SECRET_KEY"}}
    command = re.search(r"create secret generic pfcon-credentials(.*?)\n\s*\n", README.read_text(), re.S)
    assert command, "openshift/README.md does not show how to create pfcon-credentials"
    assert set(re.findall(r"--from-literal=(\w+)=", command.group(1))) == refs["pfcon-credentials"]


@pytest.mark.parametrize("name", ["overlays/openshift", "overlays/kubernetes"])
def test_executor_template_mounts_storebase_where_the_job_pod_does(name):
    objects = rendered(name)
    config = find(objects, "ConfigMap", "pfcon-config")["data"]
    pod = executor_template(objects)
    (container,) = pod["spec"]["containers"]
    assert {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]} == \
        {"storebase": config["VOLUME_NAME"]}
    # pfcon's job pods: key-<job>/incoming at /share/incoming read-only, key-<job>/outgoing at /share/outgoing
    mounts = {m["mountPath"]: (m["subPathExpr"], m.get("readOnly", False)) for m in container["volumeMounts"]}
    assert mounts == {"/share/incoming": ("$(STOREBASE_JOB_DIR)/incoming", True),
                      "/share/outgoing": ("$(STOREBASE_JOB_DIR)/outgoing", False)}
    assert "STOREBASE_JOB_DIR" in {e["name"] for e in container["env"]}
    assert "image" not in container  # Spark sets it from spark.kubernetes.container.image
    assert pod["spec"]["automountServiceAccountToken"] is False  # executors never call the API


def test_kubernetes_executor_template_differs_only_in_its_uid():
    openshift = executor_template(rendered("overlays/openshift"))
    kubernetes = executor_template(rendered("overlays/kubernetes"))
    pod_sc = kubernetes["spec"]["securityContext"]
    assert (pod_sc["runAsUser"], pod_sc["runAsGroup"], pod_sc["fsGroup"]) == (1001, 1001, 1001)
    for field in ("runAsUser", "runAsGroup", "fsGroup"):
        del pod_sc[field]
    assert kubernetes == openshift


def test_readme_pipeline_node_matches_the_command_line():
    """The README's pipeline node and its command line give the plugin the same
    settings, under parameter names the plugin has."""
    block = re.search(r"```yaml\n(  - title: ssvd\n.*?)```", README.read_text(), re.S)
    assert block, "openshift/README.md shows no pipeline node for ssvd"
    (node,) = yaml.safe_load(block.group(1))
    params = node["plugin_parameter_defaults"]
    from ssvd_denoise.spark.conf import parse_conf
    assert parse_conf(params["spark_conf"]) == readme_spark_conf()
    command = re.search(r"ssvd_denoise --master (\S+) --data-access (\S+)", README.read_text())
    assert (params["master"], params["data_access"]) == command.groups()
    help_text = subprocess.run([str(Path(sys.executable).parent / "ssvd_denoise"), "--help"], capture_output=True,
                               text=True, timeout=120, check=True).stdout
    for name in params:
        assert f"--{name.replace('_', '-')}" in help_text, f"ssvd_denoise has no parameter {name}"


def test_readme_pipeline_node_is_the_kubernetes_crossovers():
    block = re.search(r"```yaml\n(  - title: ssvd\n.*?)```", README.read_text(), re.S)
    (shown,) = yaml.safe_load(block.group(1))
    tree = yaml.safe_load((PIPELINES / "ct-denoise-crossover-k8s.yml").read_text())["plugin_tree"]
    (node,) = [n for n in tree if n["title"] == "ssvd"]
    assert node["compute_resource_name"] == "moc"
    assert {k: node[k] for k in shown if k != "plugin_parameter_defaults"} == \
           {k: v for k, v in shown.items() if k != "plugin_parameter_defaults"}
    params = node["plugin_parameter_defaults"]
    assert {k: params[k] for k in shown["plugin_parameter_defaults"]} == shown["plugin_parameter_defaults"]


def test_readme_spark_settings_match_the_manifests():
    conf = readme_spark_conf()
    objects = rendered("overlays/openshift")
    server = find(objects, "Service", "spark-templates")
    served = find(objects, "Deployment", "spark-templates")["spec"]["template"]["spec"]
    (key,) = find(objects, "ConfigMap", "spark-executor-template")["data"]
    assert served["volumes"][0]["configMap"]["name"] == "spark-executor-template"
    assert conf["spark.kubernetes.executor.podTemplateFile"] == \
        f"http://{server['metadata']['name']}:{server['spec']['ports'][0]['port']}/{key}"
    assert conf["spark.kubernetes.namespace"] == NAMESPACE
    assert conf["spark.kubernetes.container.image"] == served["containers"][0]["image"]
    # executors run the node's own image: the name its descriptor gives it (tests/test_packaging.py)
    version = tomllib.loads((ROOT / "pl-ssvd-denoise" / "pyproject.toml").read_text())["project"]["version"]
    assert conf["spark.kubernetes.container.image"] == f"docker.io/fnndsc/pl-ssvd-denoise:{version}"
    # the pod's memory is heap + overhead; the template's limit says the same
    limits = executor_template(objects)["spec"]["containers"][0]["resources"]["limits"]
    heap, overhead = (int(conf[k].rstrip("g")) for k in ("spark.executor.memory", "spark.executor.memoryOverhead"))
    assert f"{heap + overhead}Gi" == limits["memory"]
    assert conf["spark.executor.cores"] == limits["cpu"] == conf["spark.kubernetes.executor.limit.cores"]
    # settings that keep Spark from calling what its Role does not allow
    assert conf["spark.kubernetes.driver.service.deleteOnTermination"] == "false"
    assert conf["spark.kubernetes.driver.ownPersistentVolumeClaim"] == "false"


# --- the executor template with Spark itself (pyspark 4.3 on this machine) -------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(log: Path, text: str, proc: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while text not in log.read_text(errors="replace"):
        if proc.poll() is not None:
            pytest.fail(f"{log.name}: exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{log.name}: {text!r} not seen within {seconds} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.25)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def spark_driver(tmp_path_factory):
    """A Spark driver in this process, attached to a standalone master with no
    workers: executors come only from what the tests start."""
    import pyspark
    from pyspark.sql import SparkSession

    work = tmp_path_factory.mktemp("spark-driver")
    spark_home = Path(pyspark.__file__).parent
    port = free_port()
    env = {**os.environ, "SPARK_HOME": str(spark_home), "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_NO_DAEMONIZE": "1"}
    log = work / "master.log"
    master = subprocess.Popen([str(spark_home / "bin" / "spark-class"), "org.apache.spark.deploy.master.Master",
                               "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(free_port())],
                              env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    local_ip = os.environ.get("SPARK_LOCAL_IP")
    try:
        wait_for(log, "I have been elected leader", master)
        os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
        options = {"spark.master": f"spark://127.0.0.1:{port}", "spark.app.name": "executor-template",
                   "spark.driver.host": "127.0.0.1", "spark.ui.enabled": "false", "spark.executor.cores": "1"}
        spark = SparkSession.builder.config(map=options).getOrCreate()
        try:
            yield spark, work
        finally:
            spark.stop()
            # A driver's settings stay in its JVM's system properties, where every later SparkConf() of
            # this process (the plugin's own runs in other tests) would read them: take them back.
            system = spark.sparkContext._jvm.java.lang.System
            for key in options:
                system.clearProperty(key)
    finally:
        stop(master)
        if local_ip is None:
            os.environ.pop("SPARK_LOCAL_IP", None)
        else:
            os.environ["SPARK_LOCAL_IP"] = local_ip


def test_executor_template_command_starts_a_working_spark_executor(spark_driver):
    """The template's command, run with the environment Spark gives executor pods
    (BasicExecutorFeatureStep), starts KubernetesExecutorBackend from pyspark's
    jars; it registers with a real driver and runs Python tasks."""
    spark, work = spark_driver
    sc = spark.sparkContext
    conf = dict(sc.getConf().getAll())
    (container,) = executor_template(rendered("overlays/openshift"))["spec"]["containers"]
    java_opts = [f"-Dspark.driver.port={conf['spark.driver.port']}", *conf["spark.executor.extraJavaOptions"].split()]
    env = {
        **os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "SPARK_DRIVER_URL": f"spark://CoarseGrainedScheduler@127.0.0.1:{conf['spark.driver.port']}",
        "SPARK_EXECUTOR_ID": "1", "SPARK_EXECUTOR_CORES": "1", "SPARK_APPLICATION_ID": sc.applicationId,
        "SPARK_EXECUTOR_POD_IP": "127.0.0.1", "SPARK_RESOURCE_PROFILE_ID": "0",
        "SPARK_EXECUTOR_POD_NAME": "ssvd-exec-1", "SPARK_EXECUTOR_MEMORY": "512m",
        **{f"SPARK_JAVA_OPT_{i}": opt for i, opt in enumerate(java_opts)},
    }
    log = work / "executor.log"
    # Kubernetes appends the args Spark sets ("executor") to the template's command.
    executor = subprocess.Popen(container["command"] + ["executor"], env=env, stdout=open(log, "w"),
                                stderr=subprocess.STDOUT)
    try:
        wait_for(log, "Successfully registered with driver", executor)
        assert sc.parallelize(range(100), 4).map(lambda x: x * x).sum() == sum(x * x for x in range(100))
        assert "KubernetesExecutorBackend" in log.read_text()
    finally:
        stop(executor)


def test_spark_loads_the_executor_template_from_the_template_server(spark_driver, tmp_path):
    """Spark's own loader (KubernetesUtils.loadPodFromTemplate) downloads the
    template from a URL served the way the spark-templates Deployment serves
    the ConfigMap, and reads it as the executor pod."""
    spark, _ = spark_driver
    objects = rendered("overlays/openshift")
    for key, text in find(objects, "ConfigMap", "spark-executor-template")["data"].items():
        (tmp_path / key).write_text(text)
    served = find(objects, "Deployment", "spark-templates")["spec"]["template"]["spec"]["containers"][0]
    port = free_port()
    command = [sys.executable if c == "python" else c for c in served["command"]]
    command[command.index("8080")] = str(port)
    command[command.index("/templates")] = str(tmp_path)
    command[command.index("0.0.0.0")] = "127.0.0.1"
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = readme_spark_conf()["spark.kubernetes.executor.podTemplateFile"].replace(
            "spark-templates:8080", f"127.0.0.1:{port}")
        jvm = spark._jvm
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the template server did not start"
                time.sleep(0.2)
        client = jvm.io.fabric8.kubernetes.client.KubernetesClientBuilder().build()
        pod = jvm.org.apache.spark.deploy.k8s.KubernetesUtils.loadPodFromTemplate(
            client, url, jvm.scala.Option.apply(None), spark.sparkContext._jsc.sc().conf())
        client.close()
    finally:
        stop(server)
    container = pod.container()
    assert container.getName() == "spark-executor"
    assert {m.getMountPath(): m.getSubPathExpr() for m in container.getVolumeMounts()} == {
        "/share/incoming": "$(STOREBASE_JOB_DIR)/incoming", "/share/outgoing": "$(STOREBASE_JOB_DIR)/outgoing"}
    spec = pod.pod().getSpec()
    assert spec.getSecurityContext().getRunAsNonRoot()
    assert spec.getVolumes().get(0).getPersistentVolumeClaim().getClaimName() == "storebase"


# --- register.py, offline --------------------------------------------------------

def load_register():
    import importlib.util
    spec = importlib.util.spec_from_file_location("register", OPENSHIFT / "register.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_register_builds_cube_admin_requests(tmp_path):
    register = load_register()
    assert register._admin("https://cube.example.org/api/v1/") == "https://cube.example.org/chris-admin/api/v1/"
    assert register._admin("http://cube:8000/api/v1") == "http://cube:8000/chris-admin/api/v1/"
    descriptor = tmp_path / "pl-ssvd-denoise.json"
    descriptor.write_text('{"name": "pl-ssvd-denoise"}')
    headers, body = register.multipart({"compute_names": "host,openshift"}, {"fname": descriptor})
    boundary = headers["Content-Type"].split("boundary=")[1].encode()
    parts = body.split(b"--" + boundary)
    assert parts[0] == b"" and parts[-1] == b"--\r\n"
    assert b'name="compute_names"\r\n\r\nhost,openshift\r\n' in parts[1]
    assert b'name="fname"; filename="pl-ssvd-denoise.json"' in parts[2]
    assert parts[2].endswith(b'{"name": "pl-ssvd-denoise"}\r\n')


def test_register_exit_codes(monkeypatch, capsys):
    register = load_register()
    monkeypatch.delenv("PFCON_USER", raising=False)
    with pytest.raises(SystemExit) as stopped:
        register.main(["check", "--pfcon", "http://127.0.0.1:9/api/v1/"])
    assert stopped.value.code == 2 and "PFCON_USER" in capsys.readouterr().err
    monkeypatch.setenv("PFCON_USER", "pfcon")
    monkeypatch.setenv("PFCON_PASSWORD", "not-a-real-one")
    closed = free_port()  # nothing listens there: CUBE would refuse too, so the script stops first
    assert register.main(["check", "--pfcon", f"http://127.0.0.1:{closed}/api/v1/"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"register.py: POST http://127.0.0.1:{closed}/api/v1/auth-token/:") and "\n" not in error


# --- live checks, opt-in ---------------------------------------------------------

def test_live_server_side_dry_run():
    """KUBECONFIG (or OPENSHIFT_SERVER with OPENSHIFT_TOKEN) names a cluster where
    the namespace exists: the API server itself validates the overlay."""
    overlay = os.environ.get("CTSVD_OVERLAY", "overlays/openshift")
    tool = shutil.which("oc") or shutil.which("kubectl")
    if tool is None or not (os.environ.get("KUBECONFIG") or os.environ.get("OPENSHIFT_SERVER")):
        pytest.skip("set KUBECONFIG or OPENSHIFT_SERVER (+ OPENSHIFT_TOKEN) and have oc or kubectl")
    args = [tool, "apply", "--dry-run=server", "-f", "-"]
    if os.environ.get("OPENSHIFT_SERVER"):
        args += ["--server", os.environ["OPENSHIFT_SERVER"], "--token", os.environ.get("OPENSHIFT_TOKEN", "")]
    manifests = yaml.safe_dump_all(rendered(overlay))
    result = subprocess.run(args, input=manifests, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_live_pfcon_answers_like_cube_needs():
    """PFCON_URL (…/api/v1/), PFCON_USER, PFCON_PASSWORD: the deployed pfcon
    issues a token and reports the configuration CUBE registers."""
    if not os.environ.get("PFCON_URL"):
        pytest.skip("set PFCON_URL, PFCON_USER and PFCON_PASSWORD to check a deployed pfcon")
    info = load_register().pfcon_info(os.environ["PFCON_URL"], os.environ["PFCON_USER"], os.environ["PFCON_PASSWORD"])
    assert info["container_env"] == "kubernetes" and info["compute_volume_type"] == "kubernetes_pvc"
    assert info["pfcon_innetwork"] is False
