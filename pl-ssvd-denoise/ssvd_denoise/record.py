"""What a series' JSON records say: ``svd.json`` for the global SVD, ``local.json`` for the local denoiser."""

from __future__ import annotations

import numpy as np

from ctsvd_common import contract, noise
from ssvd_denoise import __version__, local
from ssvd_denoise.factor import SvdResult
from ssvd_denoise.series import Series

PLUGIN = f"pl-ssvd-denoise {__version__}"

ALGORITHMS = {
    "gram": "exact: eigen-decomposition of the slices × slices Gram matrix A·Aᵀ accumulated in float64 over "
            "pixel blocks (treeAggregate), then Vt = Σ⁻¹Uᵀ·A in one more pass",
    "randomized": "randomized subspace iteration with Rayleigh-Ritz (Halko, Martinsson & Tropp 2011), "
                  "float64 passes over float32 data, distributed over pixel blocks",
}

LOCAL_METHOD = ("local SVD in two stages against the series' measured noise (sigma map, in-plane NPS, slice "
                "correlation): patches followed across neighbouring slices and across rows, whitened and shrunk "
                "by Gavish-Donoho at the measured sigma (the pilot); then groups of similar patches "
                "Wiener-filtered in the pilot's higher-order SVD basis, each coefficient against its own noise "
                "variance, at a strength chosen by SURE")


def svd_record(result: SvdResult, reason: str, item: Series, partitions: int, shared: bool,
               cluster: dict, vt_by: str, model: dict | None) -> contract.SvdRecord:
    """The machine-readable account of one decomposition (svd.json)."""
    energy = result.s.astype(float) ** 2 / result.frobenius_norm ** 2 if result.frobenius_norm else result.s * 0
    return contract.SvdRecord(
        plugin=PLUGIN,
        method=result.method,
        method_reason=reason,
        algorithm=ALGORITHMS[result.method],
        matrix={"rows": item.shape[0], "cols": item.shape[1] * item.shape[2], "rows_are": "slices",
                "cols_are": "pixels (row-major within a slice)", "volume_shape": list(item.shape)},
        k=result.k,
        requested_k=result.requested_k,
        oversample=result.oversample,
        power_iters=result.power_iters,
        seed=result.seed,
        sample_rank=result.sample_rank,
        singular_values=[float(x) for x in result.s],
        energy_fraction=[float(x) for x in energy],
        frobenius_norm=result.frobenius_norm,
        residual_norm=result.residual_norm,
        relative_error=result.relative_error,
        spark={**cluster, "partitions": partitions, "data_access": "shared" if shared else "stream",
               "vt_written_by": vt_by},
        timings={"passes": result.passes, "total_seconds": result.seconds},
        warnings=item.warnings,
        spectrum=None if result.spectrum is None else [float(x) for x in result.spectrum],
        noise=model,
    )


def local_record(params: local.Params, found: dict, sigma: dict, tiles: int, spark: dict,
                 timings: dict) -> contract.LocalRecord:
    """The account of one local denoising (local.json)."""
    return contract.LocalRecord(
        plugin=PLUGIN, method=LOCAL_METHOD, parameters=local.parameters(params), automatic=True, noise_hu=sigma,
        noise=found["noise"], choices=found["choices"], tiles=tiles, spark=spark, timings=timings)


def noise_model(volume: np.ndarray) -> dict | None:
    """The series' measured noise (ctsvd_common.noise) as svd.json records it; None when the series
    is too small or all padding."""
    try:
        return noise.estimate(volume).summary()
    except ValueError:
        return None
