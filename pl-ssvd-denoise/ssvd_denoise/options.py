"""pl-ssvd-denoise's flags (:data:`parser`) and the settings a run takes from them (:class:`Settings`)."""

from __future__ import annotations

from argparse import ArgumentDefaultsHelpFormatter, ArgumentParser, Namespace
from dataclasses import dataclass

from ctsvd_common.cli import Whole, add_version
from ctsvd_common.stage import Policy, add_policy_flags
from ssvd_denoise.factor.gram import GRAM_MAX_SLICES, METHODS
from ssvd_denoise.spark.conf import SparkConf
from ssvd_denoise.spark.kubernetes import Kubernetes, add_flags as add_kubernetes_flags

MODES = ("both", "global", "local")
DATA_ACCESS = ("auto", "shared", "stream")

parser = ArgumentParser(
    description="Denoise each CT series with SVDs on Apache Spark, two ways. Local (the recommended output): "
    "denoise small patches across neighbouring slices by SVD against the series' measured noise, then "
    "Wiener-filter groups of similar patches in their higher-order SVD basis, spread over Spark by slabs. "
    "Global (for comparison; the paper's method): factor the series (slices × pixels) as U·diag(s)·Vt, "
    f"distributed over pixels: exactly from the slices × slices Gram matrix up to {GRAM_MAX_SLICES} slices, "
    "with a randomized (Halko) SVD above, the knobs of Mahout's dssvd(k, p, q); pl-svd-render rebuilds it at "
    "a rank. Input: the series folders of pl-dicom2matrix. Output: the same folders with local.npy and "
    "local.json (local) and U.npy, s.npy, Vt.npy and svd.json (global) added.",
    formatter_class=ArgumentDefaultsHelpFormatter,
)
parser.add_argument("--mode", type=str, default="both", choices=MODES,
                    help="both, global (the truncated SVD of the whole series) or local (SVDs of patches "
                    "across neighbouring slices)")
parser.add_argument("--method", type=str, default="auto", choices=METHODS,
                    help="global SVD: gram (exact, from the slices × slices Gram matrix: two passes), randomized "
                    f"(Halko's sampling with --k, --oversample, --power-iters, --seed), or auto (gram up to "
                    f"{GRAM_MAX_SLICES} slices, randomized above)")
parser.add_argument("--k", type=int, default=50, action=Whole, minimum=1,
                    help="number of singular components (eigen-images) to compute; clipped to the number of slices")
parser.add_argument("--oversample", type=int, default=15, action=Whole,
                    help="extra random sample vectors p (the sample has k + p columns)")
parser.add_argument("--power-iters", dest="power_iters", type=int, default=2, action=Whole,
                    help="power (subspace) iterations q; each is one pass over the data")
parser.add_argument("--seed", type=int, default=0, action=Whole,
                    help="seed of the random test matrix (0 or more); equal seeds give equal results")
parser.add_argument("--master", type=str, default="local[*]",
                    help="Spark master: local[*], spark://HOST:7077 or k8s://https://HOST:PORT")
parser.add_argument("--partitions", type=int, default=0, action=Whole,
                    help="pixel blocks per series; 0 picks one per core (more for very large series)")
parser.add_argument("--data-access", dest="data_access", type=str, default="auto", choices=DATA_ACCESS,
                    help="how executors reach the volume: shared (they read the file), stream (the driver sends "
                    "blocks, Spark caches them), auto (shared when every executor sees the file)")
parser.add_argument("--spark-conf", dest="spark_conf", type=str, default="", action=SparkConf,
                    help="extra Spark settings, spark.NAME=VALUE, e.g. spark.executor.memory=4g; give it once per "
                    "setting, or several settings in one value, comma-separated (a comma starts a new setting "
                    "only before spark.NAME=, so values may hold commas)")
add_kubernetes_flags(parser)
add_policy_flags(parser)
add_version(parser, "pl-ssvd-denoise")


@dataclass(frozen=True)
class Settings:
    """One run's settings, in the parser's flag order (the report lists them so)."""

    mode: str = "both"
    method: str = "auto"
    k: int = 50
    oversample: int = 15
    power_iters: int = 2
    seed: int = 0
    master: str = "local[*]"
    partitions: int = 0
    data_access: str = "auto"
    spark_conf: str = ""
    kubernetes: Kubernetes = Kubernetes()
    policy: Policy = Policy()

    @classmethod
    def from_options(cls, options: Namespace) -> Settings:
        return cls(mode=options.mode, method=options.method, k=options.k, oversample=options.oversample,
                   power_iters=options.power_iters, seed=options.seed, master=options.master,
                   partitions=options.partitions, data_access=options.data_access, spark_conf=options.spark_conf,
                   kubernetes=Kubernetes.from_options(options), policy=Policy.from_options(options))
