"""Each denoiser's output for one series, loaded and described: what the render publishes and compares.

A series folder may hold the global SVD factors (pl-ssvd-denoise's global
mode), the locally denoised ``local.npy`` (its local mode), or both.
``--use`` says which one is published; the other, when there, is shown beside it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ctsvd_common import contract
from ctsvd_common.contract import relative_reason
from ctsvd_common.stage import InputFailed, Stage
from svd_render import __version__, images, rank
from svd_render.rebuild import load_factors, rebuild

# What marks a series as holding each denoiser's output, and what to say when it does not.
PRESENT = {"global": contract.SVD_JSON, "local": contract.LOCAL}
ABSENT = {"global": f"--use global: this series has no SVD factors ({contract.SVD_JSON}); "
                    "pl-ssvd-denoise writes them in its global mode",
          "local": f"--use local: this series has no {contract.LOCAL}; pl-ssvd-denoise writes it in its local mode"}


@dataclass
class Result:
    """One denoiser's output for a series, and what to say about it."""

    denoiser: str                    # "global" or "local"
    volume: np.ndarray               # float32 (slices, rows, cols), HU
    heading: str                     # names it in the montage and the slice viewer
    summary: str                     # one line for the log
    method: str
    automatic: bool
    parameters: dict
    description: str                 # the derived series' SeriesDescription, before the source's
    derivation: str                  # its DerivationDescription
    facts: list[tuple[str, str]]
    record: dict = field(default_factory=dict)    # RenderRecord fields only this denoiser has
    warnings: list[str] = field(default_factory=list)
    scree: str | None = None

    @property
    def title(self) -> str:
        return f"{self.heading}{' (automatic)' if self.automatic else ''}"


def global_result(series_dir: Path, shape: tuple[int, int, int], wanted_rank: int | None,
                  percent_removed: float) -> Result:
    """The truncated SVD of the whole series, at the rank the flags choose."""
    factors = load_factors(series_dir, shape)
    svd = factors.record
    choice = rank.choose(wanted_rank, percent_removed, factors.s, shape[0], shape[1] * shape[2], svd.frobenius_norm,
                         svd.noise, None if svd.spectrum is None else np.asarray(svd.spectrum))
    noise = choice.noise
    setup = (f"k = {factors.k}, exact (slices x slices Gram matrix)" if svd.method == "gram" else
             f"k = {factors.k}, randomized: oversampling {svd.oversample}, {svd.power_iters} power iterations, "
             f"seed {svd.seed}")
    return Result(
        "global", rebuild(factors, choice.rank, shape), f"global r{choice.rank}/{factors.k}",
        summary=f"global SVD, {choice.describe()} of k = {factors.k}, noise {noise.describe()}",
        method=choice.method, automatic=choice.automatic,
        parameters={"k": factors.k, "svd_method": svd.method, "oversample": svd.oversample, "power_iters": svd.power_iters, "seed": svd.seed,
                    "rank_rule": choice.rule, "noise_hu": noise.sigma, "noise_estimable": noise.estimable},
        description=f"SVD denoised global r{choice.rank}/{factors.k}",
        derivation=(f"Truncated SVD of the series: rank {choice.rank} of {factors.k} components ({choice.method}); "
                    f"{setup}; pl-svd-render {__version__}"),
        facts=[("global SVD", setup), ("SVD error ‖A − U S Vt‖ / ‖A‖", f"{svd.relative_error:.4g}"),
               ("global rank kept", choice.describe()),
               ("noise measured in the series (RMS over the field)" if svd.noise else "noise from the SVD spectrum",
                noise.describe())],
        record={"rank": choice.rank, "k": factors.k, "threshold": choice.threshold,
                "noise_hu_estimate": noise.sigma if noise.estimable else None},
        warnings=list(choice.warnings),
        scree=images.scree_svg(factors.s, choice.rank, choice.threshold))


# How local.json's noise levels read in the report.
NOISE_LABELS = {"uniform": "in uniform regions"}


def local_result(series_dir: Path, manifest: contract.Manifest) -> Result:
    """``local.npy`` as pl-ssvd-denoise wrote it, described by ``local.json``."""
    local = contract.read_local(series_dir)
    volume = contract.open_volume(series_dir, manifest, name=contract.LOCAL)
    strength = "automatic" if local.automatic else "strength given"
    noise = ", ".join(f"{NOISE_LABELS.get(k, k)} {v:.3g}" for k, v in local.noise_hu.items()) + " HU"
    return Result(
        "local", volume, "local", summary=f"local SVD ({strength}), noise {noise}",
        method=local.method, automatic=local.automatic,
        parameters={**local.parameters, "noise_hu": local.noise_hu},
        description="SVD denoised local",
        derivation=(f"Local SVD denoising ({strength}; noise {noise}); pl-svd-render {__version__}; "
                    f"{local.method}; parameters {json.dumps(local.parameters, separators=(',', ':'))}"),
        facts=[("local SVD", f"{local.method} ({strength})"), ("measured noise σ", noise),
               *model_facts(local)],
        record={"noise_model": local.noise},
        warnings=list(local.warnings))


def model_facts(local: contract.LocalRecord) -> list[tuple[str, str]]:
    """What the report says of the measured noise model and the choices made from it."""
    facts = []
    rho = local.noise.get("slice_correlation", [])
    if len(rho) > 1:
        facts.append(("noise shared with the next slices", ", ".join(f"{r:.2f}" for r in rho[1:3])))
    if "nps" in local.noise:
        nps = local.noise["nps"]
        facts.append(("noise power spectrum", f"peak at {nps['peak_cycles_per_pixel']:g} cycles/pixel"
                      if nps.get("measured", True) else
                      "not measured: too little of the series is free of anatomy, so the noise is taken as white"))
    for name, choice in local.choices.items():
        facts.append((name, f"{choice.get('strength', '')}: {choice.get('why', '')}"))
    return facts


def load_results(stage: Stage, series_dir: Path, manifest: contract.Manifest, use: str, wanted_rank: int | None,
                 percent_removed: float, warnings: list[str]) -> tuple[Result, Result | None]:
    """The result to publish, and the other denoiser's when the series has it.

    The published one fails the series when it is absent or unusable; an
    unusable other one is a failed item that costs only its columns.
    """
    load = {"global": lambda: global_result(series_dir, manifest.shape, wanted_rank, percent_removed),
            "local": lambda: local_result(series_dir, manifest)}
    present = {name: (series_dir / f).exists() for name, f in PRESENT.items()}
    chosen = use if use != "auto" else ("local" if present["local"] else "global")
    if not present[chosen]:
        raise InputFailed(ABSENT[chosen])
    published = load[chosen]()
    (other_name,) = set(load) - {chosen}
    other = None
    if present[other_name]:
        try:
            other = load[other_name]()
        except contract.ContractError as e:
            reason = f"{relative_reason(e, series_dir)}; the {other_name} result is left out of the comparison"
            stage.fail(series_dir, reason)
            warnings.append(reason)
    if other is not None:
        warnings += [f"{other_name} comparison: {w}" for w in other.warnings]
    if chosen == "local" and (wanted_rank or percent_removed):
        warnings.append("--rank and --percent-removed apply to the global comparison only: "
                        "this node publishes local.npy")
    return published, other
