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
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Mapping

from ctsvd_common.cli import Whole

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DRIVER_PORT = 7078
BLOCK_MANAGER_PORT = 7079
ENV_PREFIX = "CTSVD_K8S_"
IMAGE_KEY = "spark.kubernetes.container.image"


def is_kubernetes(master: str) -> bool:
    return master.startswith("k8s://")


@dataclass(frozen=True)
class Kubernetes:
    """The Kubernetes flags. A flag left at "" or 0 is the environment's: CTSVD_K8S_<NAME>, read when
    the run starts (:meth:`with_environment`), else the built-in default (:data:`DEFAULTS`)."""

    k8s_image: str = ""
    k8s_namespace: str = ""
    k8s_service_account: str = ""
    k8s_pvc: str = ""
    k8s_mount: str = ""
    executors: int = 0
    executor_memory: str = ""
    executor_cores: int = 0

    @classmethod
    def from_options(cls, options: Namespace) -> Kubernetes:
        return cls(**{f.name: getattr(options, f.name) for f in fields(cls)})

    def with_environment(self, environ: Mapping[str, str] = os.environ) -> Kubernetes:
        """Every setting left to the environment taken from its variable, else the built-in default;
        ValueError names a variable whose value cannot be used."""
        settings = {}
        for name, (variable, default) in DEFAULTS.items():
            value, given = getattr(self, name), environ.get(variable, "").strip()
            if not value and given and isinstance(default, int):
                if not given.isdigit() or int(given) < 1:
                    raise ValueError(f"{variable}: expected a whole number of 1 or more, got {given!r}")
                value = int(given)
            settings[name] = value or given or default
        return Kubernetes(**settings)


# Each setting's environment variable and built-in default.
DEFAULTS: dict[str, tuple[str, str | int]] = {
    "k8s_image": (f"{ENV_PREFIX}IMAGE", ""),
    "k8s_namespace": (f"{ENV_PREFIX}NAMESPACE", ""),
    "k8s_service_account": (f"{ENV_PREFIX}SERVICE_ACCOUNT", "spark"),
    "k8s_pvc": (f"{ENV_PREFIX}PVC", ""),
    "k8s_mount": (f"{ENV_PREFIX}MOUNT", ""),
    "executors": (f"{ENV_PREFIX}EXECUTORS", 2),
    "executor_memory": (f"{ENV_PREFIX}EXECUTOR_MEMORY", "2g"),
    "executor_cores": (f"{ENV_PREFIX}EXECUTOR_CORES", 2),
}


def add_flags(parser: ArgumentParser) -> None:
    """The Kubernetes flags. Their defaults ("" and 0) do not depend on the environment, so neither do
    ``--help`` and the plugin's descriptor: the environment is read when a run starts."""

    def blank(name: str, otherwise: str = "") -> str:
        variable, default = DEFAULTS[name]
        return f"{'0' if isinstance(default, int) else 'empty'}: {variable}, else {otherwise or default}"

    group = parser.add_argument_group("Kubernetes (with --master k8s://https://HOST:PORT)")
    group.add_argument("--k8s-image", dest="k8s_image", type=str, default="",
                       help=f"container image of the executors: this plugin's ({blank('k8s_image', 'none')})")
    group.add_argument("--k8s-namespace", dest="k8s_namespace", type=str, default="",
                       help="namespace of the executor pods ({})".format(
                           blank("k8s_namespace", "the driver pod's own")))
    group.add_argument("--k8s-service-account", dest="k8s_service_account", type=str, default="",
                       help=f"service account allowed to create pods ({blank('k8s_service_account')})")
    group.add_argument("--k8s-pvc", dest="k8s_pvc", type=str, default="",
                       help="persistent volume claim holding the input and output folders, mounted into the "
                            f"executors ({blank('k8s_pvc', 'none: blocks are sent')})")
    group.add_argument("--k8s-mount", dest="k8s_mount", type=str, default="",
                       help="where the claim is mounted, in the driver pod and the executors "
                            f"({blank('k8s_mount', 'the deepest folder holding both input and output')})")
    group.add_argument("--executors", type=int, default=0, action=Whole,
                       help=f"number of executor pods ({blank('executors')})")
    group.add_argument("--executor-memory", dest="executor_memory", type=str, default="",
                       help=f"memory per executor, as Spark writes it: 2g, 1536m ({blank('executor_memory')})")
    group.add_argument("--executor-cores", dest="executor_cores", type=int, default=0, action=Whole,
                       help=f"cores per executor ({blank('executor_cores')})")


def executor_image(given: Kubernetes, extra_conf: dict[str, str],
                   environ: Mapping[str, str] = os.environ) -> tuple[str, str]:
    """The executors' image and where it was given: ``--spark-conf`` (which has the last word), else
    ``--k8s-image``, else CTSVD_K8S_IMAGE; ValueError when none gives one."""
    variable = DEFAULTS["k8s_image"][0]
    for image, source in ((extra_conf.get(IMAGE_KEY, ""), f"--spark-conf {IMAGE_KEY}"),
                          (given.k8s_image, "--k8s-image"), (environ.get(variable, "").strip(), variable)):
        if image:
            return image, source
    raise ValueError(f"--k8s-image: the executors need an image (this plugin's); set it, {variable} or "
                     f"{IMAGE_KEY} in --spark-conf")


def pod_ip() -> str:
    """This pod's IP: ``POD_IP`` (downward API, ``status.podIP``) or what the host name resolves to."""
    return os.environ.get("POD_IP") or socket.gethostbyname(socket.gethostname())


def own_namespace(service_account_dir: Path = SERVICE_ACCOUNT_DIR) -> str:
    try:
        return (service_account_dir / "namespace").read_text().strip() or "default"
    except OSError:
        return "default"


def spark_conf(k8s: Kubernetes, inputdir: Path, outputdir: Path,
               service_account_dir: Path = SERVICE_ACCOUNT_DIR) -> dict[str, str]:
    """The Spark settings for the executors of this run (``--spark-conf`` is applied on top by the caller)."""
    conf = {
        "spark.submit.deployMode": "client",
        IMAGE_KEY: k8s.k8s_image,
        "spark.kubernetes.namespace": k8s.k8s_namespace or own_namespace(service_account_dir),
        "spark.kubernetes.authenticate.executor.serviceAccountName": k8s.k8s_service_account,
        "spark.executor.instances": str(k8s.executors),
        "spark.executor.memory": k8s.executor_memory,
        "spark.executor.cores": str(k8s.executor_cores),
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
    if k8s.k8s_pvc:
        mount = k8s.k8s_mount or os.path.commonpath([inputdir, outputdir])
        volume = "spark.kubernetes.executor.volumes.persistentVolumeClaim.data"
        conf.update({f"{volume}.options.claimName": k8s.k8s_pvc, f"{volume}.mount.path": mount,
                     f"{volume}.mount.readOnly": "false"})
    return conf
