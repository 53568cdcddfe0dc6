"""Denoising quality on a simulated low-dose CT stack: our SVD denoisers against classical ones.

    .venv/bin/python benchmarks/denoise_quality.py [--slices 96] [--size 256] [--i0 1e4] [--seed 0]
        [--skip bm3d,bm4d] [--save-stack PATH.npz | --load-stack PATH.npz] [--json PATH]

Builds a LoDoPaB-style stack (:func:`ctsvd_local.lowdose.simulate_low_dose`:
Poisson noise on parallel-beam sinograms, ramp-filtered FBP), then runs every
denoiser on the same noisy volume and scores it against the noiseless FBP
(same blur, no noise):

* PSNR over the window [-1024, 1500] HU (data range 2524) on the whole volume;
* SSIM, the mean over slices of ``skimage.metrics.structural_similarity``
  (data range 2524, both images clipped to the window).

The classical peers get oracle tuning (their parameter is picked by PSNR
against the reference), so they are shown at their best. BM3D and BM4D are
slow, so their three-value grid (``sigma_psd`` as 1.5, 2, 2.5 x the oracle
noise std) is scored on a subset (a few slices spread along z; every slice
of a central 96 x 96 column) and only the winner runs on the whole stack.

Ours runs with no tuning: the local denoiser ``ssvd_denoise.local.denoise``
(its first stage alone too, to show what the second adds) and the global
truncated SVD of the slices x pixels matrix at the Gavish-Donoho rank; the
global SVD at its oracle-best rank is shown too, as the ceiling of that approach.

The peers need ``benchmarks/requirements.txt`` (scikit-image, scipy, bm3d, bm4d).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ctsvd_local.lowdose import DATA_RANGE_HU, WINDOW_HU, psnr, scan_circle, simulate_low_dose

PEERS = ("gaussian", "tv", "bm3d", "bm4d")
GAUSSIAN_SIGMA_XY = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)      # voxels in-plane
GAUSSIAN_SIGMA_Z = (0.0, 0.5, 1.0, 1.5)                   # voxels along z (slices are 2.5 mm)
TV_WEIGHTS = (0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08)   # on HU / 2524
BM_SIGMA_FACTORS = (1.5, 2.0, 2.5)    # x the noise std: FBP noise is correlated, so the best
                                      # white-noise sigma lies above the true one
BM3D_TUNE_SLICES = 4                  # spread over the stack: the noise level varies along z
BM4D_TUNE_CROP = 96                   # in-plane, every slice


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    """The noisy volume, its noiseless reference and how they were made."""

    noisy: np.ndarray
    reference: np.ndarray
    meta: dict


def build_stack(a: argparse.Namespace) -> Stack:
    """Simulate the stack from the flags, or load the one ``--load-stack`` names."""
    if a.load_stack:
        with np.load(a.load_stack) as z:
            meta = json.loads(str(z["meta"]))
            stack = Stack(z["noisy_hu"], z["reference_hu"], meta)
        print(f"stack: loaded {a.load_stack} (the simulation flags are ignored)")
        return stack
    t0 = time.perf_counter()
    s = simulate_low_dose(a.slices, a.size, i0=a.i0, angles=a.angles, seed=a.seed, workers=a.workers)
    meta = {"slices": a.slices, "size": a.size, "i0": s.i0, "seed": s.seed,
            "mu_water_per_mm": s.mu_water_per_mm, "spacing_mm": list(s.spacing_mm),
            "angles": s.angles, "line_integral_max": s.line_integral_max,
            "simulate_seconds": time.perf_counter() - t0}
    stack = Stack(s.noisy_hu, s.reference_hu, meta)
    if a.save_stack:
        np.savez(a.save_stack, noisy_hu=stack.noisy, reference_hu=stack.reference,
                 meta=json.dumps(meta))
        print(f"stack: saved to {a.save_stack}")
    return stack


def noise_std(stack: Stack, region=...) -> float:
    """Std of ``noisy - reference`` (HU) over ``stack[region]``, inside the scan circle.

    The oracle noise level BM3D and BM4D are tuned around (outside the circle
    both are exactly air, so it would only dilute the figure).
    """
    inside = np.broadcast_to(scan_circle(stack.noisy.shape[-1]), stack.noisy.shape)[region]
    noise = (stack.noisy[region] - stack.reference[region])[inside]
    return float(noise.std(dtype=np.float64))


# --------------------------------------------------------------------------- scoring


def ssim(test: np.ndarray, reference: np.ndarray) -> float:
    """Mean over slices of SSIM with data range 2524, both clipped to the window."""
    from skimage.metrics import structural_similarity

    lo, hi = WINDOW_HU
    ref = np.clip(reference, lo, hi)
    out = np.clip(test, lo, hi)
    return float(np.mean([structural_similarity(r, o, data_range=DATA_RANGE_HU)
                          for r, o in zip(ref, out)]))


@dataclass
class Row:
    """One line of the table."""

    method: str
    psnr_db: float | None = None
    ssim: float | None = None
    seconds: float | None = None       # the run at the chosen parameter, on the whole stack
    tune_seconds: float = 0.0          # picking the parameter (the grid), on top
    parameter: str = ""
    note: str = ""


def timed(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def grid_search(grid: list | tuple, run: Callable[[object], np.ndarray], reference: np.ndarray,
                *, warn_edge: bool = True):
    """Run ``run(p)`` for every ``p`` in ``grid``; the one with the best PSNR.

    With ``warn_edge``, says so when the best is the first or last value (the
    grid may be too narrow there).

    Returns ``(best p, its output, its run time, total seconds, {p: psnr})``.
    """
    t0 = time.perf_counter()
    best = None
    scores = {}
    for p in grid:
        out, dt = timed(lambda: run(p))
        scores[p] = psnr(out, reference)
        if best is None or scores[p] > scores[best[0]]:
            best = (p, out, dt)
    if warn_edge and len(scores) > 1 and best[0] in (grid[0], grid[-1]):
        print(f"  note: the best parameter {best[0]} is at the edge of the grid", flush=True)
    return (*best, time.perf_counter() - t0, scores)


def scored(method: str, out: np.ndarray, reference: np.ndarray, **fields) -> Row:
    return Row(method, psnr(out, reference), ssim(out, reference), **fields)


# --------------------------------------------------------------------------- peers


def to_unit(hu: np.ndarray) -> np.ndarray:
    """HU -> window units, ``(HU + 1024) / 2524``; not clipped, so air noise is not biased."""
    return ((hu.astype(np.float32) - WINDOW_HU[0]) / DATA_RANGE_HU).astype(np.float32)


def from_unit(x: np.ndarray) -> np.ndarray:
    return (np.asarray(x, np.float32) * DATA_RANGE_HU + WINDOW_HU[0]).astype(np.float32)


def run_gaussian(stack: Stack) -> Row:
    """3-D Gaussian, (sigma_z, sigma_xy) picked on a grid over the whole stack."""
    from scipy.ndimage import gaussian_filter

    grid = [(z, xy) for z in GAUSSIAN_SIGMA_Z for xy in GAUSSIAN_SIGMA_XY]
    (sz, sxy), out, dt, tune, _ = grid_search(
        grid, lambda p: gaussian_filter(stack.noisy, sigma=(p[0], p[1], p[1])), stack.reference)
    return scored("gaussian 3-D", out, stack.reference, seconds=dt, tune_seconds=tune,
                  parameter=f"sigma z={sz:g} xy={sxy:g} vox", note=f"grid of {len(grid)}, whole stack")


def run_tv(stack: Stack) -> Row:
    """3-D TV (Chambolle) on window units, weight picked on a grid over the whole stack."""
    from skimage.restoration import denoise_tv_chambolle

    x = to_unit(stack.noisy)
    w, out, dt, tune, _ = grid_search(
        TV_WEIGHTS, lambda w: from_unit(denoise_tv_chambolle(x, weight=w)), stack.reference)
    return scored("TV 3-D Chambolle", out, stack.reference, seconds=dt, tune_seconds=tune,
                  parameter=f"weight={w:g} (HU/2524 units)",
                  note=f"grid of {len(TV_WEIGHTS)}, whole stack")


def _tune_then_run(stack: Stack, method: str, denoise, region: tuple, where: str) -> tuple[Row, float]:
    """Pick the sigma factor on ``stack[region]``, then run it once on the whole stack.

    ``denoise(region, factor)`` returns the denoised ``stack.noisy[region]`` in
    HU, with ``sigma_psd`` = ``factor`` x the noise std of the data it is given.
    Returns the row and the factor.
    """
    f, _, _, tune, scores = grid_search(BM_SIGMA_FACTORS, lambda f: denoise(region, f),
                                        stack.reference[region])
    print(f"  {method}: tuned on {where}: " +
          ", ".join(f"{k:g}x -> {v:.2f} dB" for k, v in scores.items()), flush=True)
    out, dt = timed(lambda: denoise(..., f))
    row = scored(method, out, stack.reference, seconds=dt, tune_seconds=tune,
                 parameter=f"sigma_psd={f:g}x noise std", note=f"picked on {where}, then run on all slices")
    return row, f


def run_bm3d(stack: Stack) -> Row:
    """BM3D slice by slice, each slice at ``factor`` x its own noise std.

    FBP noise varies along z (about 80 HU through the lungs, 150 HU through
    the abdomen and shoulders), and a 2-D denoiser is given the noise level
    of the image it denoises. The factor is picked on a few slices spread
    over the stack.
    """
    import bm3d

    m = stack.noisy.shape[0]
    x = to_unit(stack.noisy)
    sigma = np.array([noise_std(stack, k) for k in range(m)]) / DATA_RANGE_HU

    def denoise(region, f):
        return from_unit(np.stack([bm3d.bm3d(x[k], f * sigma[k]) for k in np.arange(m)[region]]))

    n = min(BM3D_TUNE_SLICES, m)
    picks = np.unique(((np.arange(n) + 0.5) * m / n).astype(int))
    row, _ = _tune_then_run(stack, "BM3D per slice", denoise, (picks,),
                            f"{len(picks)} slices {picks.tolist()}")
    row.parameter += (f" of each slice (noise std {sigma.min() * DATA_RANGE_HU:.0f}"
                      f"-{sigma.max() * DATA_RANGE_HU:.0f} HU)")
    return row


def run_bm4d(stack: Stack) -> Row:
    """BM4D on the whole volume at ``factor`` x its noise std; factor picked on a central column."""
    import bm4d

    x = to_unit(stack.noisy)

    def denoise(region, f):
        sigma = f * noise_std(stack, region) / DATA_RANGE_HU
        return from_unit(bm4d.bm4d(x[region], sigma))

    _, rows, cols = stack.noisy.shape
    crop = tuple(slice(max(0, (n - BM4D_TUNE_CROP) // 2), max(0, (n - BM4D_TUNE_CROP) // 2) + BM4D_TUNE_CROP)
                 for n in (rows, cols))
    region = (slice(None), *crop)
    row, f = _tune_then_run(stack, "BM4D", denoise, region,
                            "all slices x central {}x{}".format(*stack.noisy[region].shape[1:]))
    row.parameter += f" ({f * noise_std(stack):.0f} HU)"
    return row


# --------------------------------------------------------------------------- ours


def gavish_donoho_rank(s: np.ndarray, m: int, n: int) -> int:
    """Rank kept by the optimal hard threshold for unknown noise (Gavish & Donoho 2014).

    ``tau = omega(beta) * median(s)`` with ``beta = min(m, n) / max(m, n)`` and
    the cubic approximation ``omega = 0.56 b^3 - 0.95 b^2 + 1.82 b + 1.43``.
    """
    b = min(m, n) / max(m, n)
    omega = 0.56 * b ** 3 - 0.95 * b ** 2 + 1.82 * b + 1.43
    return int(np.count_nonzero(s > omega * np.median(s)))


def run_global_svd(stack: Stack) -> list[Row]:
    """Truncated exact SVD of the slices x pixels matrix: Gavish-Donoho rank and oracle rank."""
    matrix = stack.noisy.reshape(stack.noisy.shape[0], -1)
    t0 = time.perf_counter()
    u, s, vt = np.linalg.svd(matrix.astype(np.float64), full_matrices=False)

    def rebuild(k: int) -> np.ndarray:
        return ((u[:, :k] * s[:k]) @ vt[:k]).astype(np.float32).reshape(stack.noisy.shape)

    k_gd = gavish_donoho_rank(s, *matrix.shape)
    out = rebuild(k_gd)
    dt = time.perf_counter() - t0
    rows = [scored("ours: global SVD, GD rank", out, stack.reference, seconds=dt,
                   parameter=f"rank={k_gd} of {len(s)}", note="automatic (Gavish-Donoho, unknown noise)")]
    k, out, _, tune, _ = grid_search(list(range(1, len(s) + 1)), rebuild, stack.reference,
                                     warn_edge=False)
    rows.append(scored("ours: global SVD, oracle rank", out, stack.reference, seconds=dt,
                       tune_seconds=tune, parameter=f"rank={k} of {len(s)}",
                       note="oracle: every rank scored"))
    return rows


def run_local(stack: Stack) -> list[Row]:
    """Our local denoiser, automatic (``ssvd_denoise.local.denoise``): its first stage alone (the
    pilot), then both stages, timed apart. The note holds the first stage's noise estimate."""
    from ssvd_denoise import localsvd, wiener

    (pilot, noise), t1 = timed(lambda: localsvd.denoise(stack.noisy.copy()))
    final, t2 = timed(lambda: wiener.denoise(stack.noisy, pilot))
    note = f"noise estimate {json.dumps(noise)}"
    return [scored("ours: local SVD, stage 1 only", pilot, stack.reference, seconds=t1,
                   parameter="automatic", note="ssvd_denoise.localsvd.denoise; " + note),
            scored("ours: local SVD", final, stack.reference, seconds=t1 + t2, parameter="automatic",
                   note="ssvd_denoise.local.denoise (stage 1, then wiener); " + note)]


# --------------------------------------------------------------------------- table


def format_table(rows: list[Row]) -> str:
    """Aligned text table of the rows."""
    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    head = ("method", "PSNR dB", "SSIM", "time s", "tune s", "parameter")
    body = [(r.method, fmt(r.psnr_db, ".2f"), fmt(r.ssim, ".4f"), fmt(r.seconds, ".1f"),
             fmt(r.tune_seconds or None, ".1f"), r.parameter) for r in rows]
    widths = [max(len(line[i]) for line in (head, *body)) for i in range(len(head))]
    lines = []
    for line in (head, *body):
        cells = [line[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(line[1:5], widths[1:5])]
        lines.append("  ".join(cells + [line[5]]).rstrip())
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--slices", type=int, default=96)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--i0", type=float, default=1e4, help="incident photons per detector bin and view")
    p.add_argument("--angles", type=int, default=None,
                   help="views over 180°; default ceil(size·π/2). LoDoPaB-CT uses 1000 (less noise per slice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="processes for the simulation (default: CPUs)")
    p.add_argument("--skip", default="", help=f"comma list of peers to skip: {','.join(PEERS)}")
    io = p.add_mutually_exclusive_group()
    io.add_argument("--save-stack", metavar="PATH.npz", help="write the simulated stack for later runs")
    io.add_argument("--load-stack", metavar="PATH.npz", help="reuse a stack written by --save-stack")
    p.add_argument("--json", metavar="PATH", help="also write the table as JSON")
    a = p.parse_args(argv)
    a.skip = {s.strip().lower() for s in a.skip.split(",") if s.strip()}
    unknown = a.skip - set(PEERS)
    if unknown:
        p.error(f"--skip: unknown peer(s) {', '.join(sorted(unknown))}; choose from {', '.join(PEERS)}")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    stack = build_stack(a)
    meta = stack.meta
    print(f"stack: {stack.noisy.shape[0]} x {stack.noisy.shape[1]}x{stack.noisy.shape[2]}, "
          f"I0={meta['i0']:g}, seed={meta['seed']}, {meta['angles']} views, "
          f"max line integral {meta['line_integral_max']:.2f}, noise std {noise_std(stack):.1f} HU"
          + (f", simulated in {meta['simulate_seconds']:.1f} s" if "simulate_seconds" in meta else ""),
          flush=True)

    steps: list[tuple[str, Callable[[], Row | list[Row]]]] = [
        ("noisy", lambda: scored("noisy input", stack.noisy, stack.reference, seconds=0.0)),
        ("gaussian", lambda: run_gaussian(stack)),
        ("tv", lambda: run_tv(stack)),
        ("bm3d", lambda: run_bm3d(stack)),
        ("bm4d", lambda: run_bm4d(stack)),
        ("local", lambda: run_local(stack)),
        ("global", lambda: run_global_svd(stack)),
    ]
    rows: list[Row] = []
    for name, step in steps:
        if name in a.skip:
            print(f"{name}: skipped", flush=True)
            continue
        try:
            out = step()
        except Exception as exc:                          # one peer failing must not lose the others
            traceback.print_exc()
            out = Row(name, parameter=f"failed: {exc}")
        for row in out if isinstance(out, list) else [out]:
            rows.append(row)
            print(f"  {row.method}: {row.psnr_db:.2f} dB, SSIM {row.ssim:.4f}, {row.seconds:.1f} s"
                  if row.psnr_db is not None else f"  {row.method}: {row.parameter or row.note}", flush=True)

    print()
    print(format_table(rows))
    if a.json:
        Path(a.json).write_text(json.dumps({"stack": meta, "noise_std_hu": noise_std(stack),
                                            "window_hu": list(WINDOW_HU),
                                            "rows": [asdict(r) for r in rows]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
