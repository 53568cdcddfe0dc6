"""The Spark-on-Kubernetes settings for ``--master k8s://https://HOST:PORT``, from flags and the pod.

The plugin runs as the Spark driver inside its own pod (client mode) and asks
the Kubernetes API for executor pods. Spark needs to be told:

* which image the executors run (this plugin's: the same Python, NumPy and
  package), in which namespace, under which service account;
* how many executors, with how much memory and how many cores;
* how executors reach the driver: the pod's IP (``POD_IP`` from the downward
  API, else what the host name resolves to) and fixed ports, so that a
  network policy can allow them; the driver pod's name, so that executor pods
  are owned by it and deleted with it;
* a volume mount, so that executors see the input and output folders at the
  same paths (then the blocks are read in place; without one they are sent).

Every value can still be set with ``--spark-conf``, which wins.
"""

from __future__ import annotations

import os
import socket
import sys
from argparse import ArgumentParser, Namespace
from pathlib import Path

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DRIVER_PORT = 7078
BLOCK_MANAGER_PORT = 7079
ENV_PREFIX = "CTSVD_K8S_"


def is_kubernetes(master: str) -> bool:
    return master.startswith("k8s://")


def add_flags(parser: ArgumentParser) -> None:
    """The Kubernetes flags; each defaults to the environment variable CTSVD_K8S_<NAME> where set."""
    env = os.environ.get
    group = parser.add_argument_group("Kubernetes (with --master k8s://https://HOST:PORT)")
    group.add_argument("--k8s-image", dest="k8s_image", default=env(f"{ENV_PREFIX}IMAGE", ""),
                       help="container image of the executors: this plugin's image (env CTSVD_K8S_IMAGE)")
    group.add_argument("--k8s-namespace", dest="k8s_namespace", default=env(f"{ENV_PREFIX}NAMESPACE", ""),
                       help="namespace of the executor pods; empty: the driver pod's own (env CTSVD_K8S_NAMESPACE)")
    group.add_argument("--k8s-service-account", dest="k8s_service_account",
                       default=env(f"{ENV_PREFIX}SERVICE_ACCOUNT", "spark"),
                       help="service account allowed to create pods (env CTSVD_K8S_SERVICE_ACCOUNT)")
    group.add_argument("--k8s-pvc", dest="k8s_pvc", default=env(f"{ENV_PREFIX}PVC", ""),
                       help="persistent volume claim holding the input and output folders, mounted into the "
                            "executors; empty: none, blocks are sent (env CTSVD_K8S_PVC)")
    group.add_argument("--k8s-mount", dest="k8s_mount", default=env(f"{ENV_PREFIX}MOUNT", ""),
                       help="where the claim is mounted, in the driver pod and the executors; empty: the "
                            "deepest folder holding both input and output (env CTSVD_K8S_MOUNT)")
    group.add_argument("--executors", type=int, default=int(env(f"{ENV_PREFIX}EXECUTORS", "2")),
                       help="number of executor pods (env CTSVD_K8S_EXECUTORS)")
    group.add_argument("--executor-memory", dest="executor_memory", default=env(f"{ENV_PREFIX}EXECUTOR_MEMORY", "2g"),
                       help="memory per executor, as Spark writes it: 2g, 1536m (env CTSVD_K8S_EXECUTOR_MEMORY)")
    group.add_argument("--executor-cores", dest="executor_cores", type=int,
                       default=int(env(f"{ENV_PREFIX}EXECUTOR_CORES", "2")),
                       help="cores per executor (env CTSVD_K8S_EXECUTOR_CORES)")


IMAGE_KEY = "spark.kubernetes.container.image"


def executor_image(options: Namespace, extra_conf: dict[str, str]) -> tuple[str, str]:
    """The executors' image and where it was given: ``--spark-conf`` (which has the last word), else
    ``--k8s-image`` or CTSVD_K8S_IMAGE; ("", "") when neither gives one."""
    if extra_conf.get(IMAGE_KEY):
        return extra_conf[IMAGE_KEY], f"--spark-conf {IMAGE_KEY}"
    if options.k8s_image:
        from_env = os.environ.get(f"{ENV_PREFIX}IMAGE") == options.k8s_image
        return options.k8s_image, f"{ENV_PREFIX}IMAGE" if from_env else "--k8s-image"
    return "", ""


def check(options: Namespace, extra_conf: dict[str, str]) -> str | None:
    """Why the Kubernetes flags cannot work, or None."""
    if not executor_image(options, extra_conf)[0]:
        return (f"--k8s-image: the executors need an image (this plugin's); set it, CTSVD_K8S_IMAGE or "
                f"{IMAGE_KEY} in --spark-conf")
    for flag, value in (("--executors", options.executors), ("--executor-cores", options.executor_cores)):
        if value < 1:
            return f"{flag}: expected a whole number of 1 or more, got {value}"
    return None


def pod_ip() -> str:
    """This pod's IP: ``POD_IP`` (downward API, ``status.podIP``) or what the host name resolves to."""
    return os.environ.get("POD_IP") or socket.gethostbyname(socket.gethostname())


def own_namespace(service_account_dir: Path = SERVICE_ACCOUNT_DIR) -> str:
    try:
        return (service_account_dir / "namespace").read_text().strip() or "default"
    except OSError:
        return "default"


def spark_conf(options: Namespace, inputdir: Path, outputdir: Path,
               service_account_dir: Path = SERVICE_ACCOUNT_DIR) -> dict[str, str]:
    """The Spark settings for the executors of this run (``--spark-conf`` is applied on top by the caller)."""
    conf = {
        "spark.submit.deployMode": "client",
        IMAGE_KEY: options.k8s_image,
        "spark.kubernetes.namespace": options.k8s_namespace or own_namespace(service_account_dir),
        "spark.kubernetes.authenticate.executor.serviceAccountName": options.k8s_service_account,
        "spark.executor.instances": str(options.executors),
        "spark.executor.memory": options.executor_memory,
        "spark.executor.cores": str(options.executor_cores),
        # The executors run the image's Python, at the path the driver runs.
        "spark.pyspark.python": sys.executable,
        "spark.driver.host": pod_ip(),
        "spark.driver.bindAddress": "0.0.0.0",
        "spark.driver.port": str(DRIVER_PORT),
        "spark.driver.blockManager.port": str(BLOCK_MANAGER_PORT),
    }
    if os.environ.get("HOSTNAME"):  # a pod's host name is its name: executors are then owned by it
        conf["spark.kubernetes.driver.pod.name"] = os.environ["HOSTNAME"]
    # In client mode the driver talks to the API server with the pod's own service-account token.
    if (service_account_dir / "token").is_file():
        conf["spark.kubernetes.authenticate.oauthTokenFile"] = str(service_account_dir / "token")
        conf["spark.kubernetes.authenticate.caCertFile"] = str(service_account_dir / "ca.crt")
    if options.k8s_pvc:
        mount = options.k8s_mount or os.path.commonpath([inputdir, outputdir])
        volume = "spark.kubernetes.executor.volumes.persistentVolumeClaim.data"
        conf.update({f"{volume}.options.claimName": options.k8s_pvc, f"{volume}.mount.path": mount,
                     f"{volume}.mount.readOnly": "false"})
    return conf
