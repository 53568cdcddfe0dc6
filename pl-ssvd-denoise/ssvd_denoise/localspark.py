"""The local SVD denoiser (:mod:`ssvd_denoise.localsvd`) spread over a Spark cluster.

Each pass of the ensemble runs as one Spark job of tiles: slabs along the
axis its patches follow. With ``shared`` data access (the executors see the
files) a task reads its slab from the memory-mapped volume and writes its
finished slab straight into the pass's output ``.npy``; otherwise the driver
sends each task its slab and writes what comes back. The passes are then
combined slice by slice on the driver. The tiles, passes and arithmetic are
those of the in-process path, so the bytes are the same.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ctsvd_common import atomic
from ssvd_denoise import localsvd

# A tile much thinner than the patches recomputes too much at its edges.
MIN_TILE_SLICES = 32


def tile_count(length: int, parallelism: int) -> int:
    """Two tiles per core, for balance, but none thinner than :data:`MIN_TILE_SLICES`."""
    return max(1, min(2 * parallelism, math.ceil(length / MIN_TILE_SLICES)))


def _shared_task(volume: str, output: str, length: int, p: localsvd.Pass):
    def run(tile: localsvd.Tile) -> np.ndarray:
        region = localsvd.along(np.load(volume, mmap_mode="r"), p.axis)[tile.first:tile.stop]
        planes, noise = localsvd.denoise_tile(region, tile, length, p.geometries)
        out = np.load(output, mmap_mode="r+")
        localsvd.along(out, p.axis)[tile.own_first:tile.own_stop] = planes
        out.flush()
        return noise
    return run


def _stream_task(length: int, p: localsvd.Pass):
    def run(item: tuple[localsvd.Tile, np.ndarray]) -> tuple[localsvd.Tile, np.ndarray, np.ndarray]:
        tile, region = item
        return (tile, *localsvd.denoise_tile(region, tile, length, p.geometries))
    return run


def _run_pass(sc, volume: np.ndarray, volume_path: Path, output: atomic.NpyWriter, shared: bool,
              p: localsvd.Pass) -> list[np.ndarray]:
    length = volume.shape[p.axis]
    plan = localsvd.tiles(length, tile_count(length, sc.defaultParallelism), p.geometries)
    if shared:
        task = _shared_task(str(volume_path), str(output.temp_path), length, p)
        return sc.parallelize(plan, len(plan)).map(task).collect()
    view = localsvd.along(volume, p.axis)
    items = [(t, np.ascontiguousarray(view[t.first:t.stop])) for t in plan]
    noise = []
    for tile, planes, sigma in sc.parallelize(items, len(items)).map(_stream_task(length, p)).toLocalIterator(
            prefetchPartitions=True):
        localsvd.along(output.array, p.axis)[tile.own_first:tile.own_stop] = planes
        noise.append(sigma)
    return noise


def denoise(sc, volume_path: Path, output: atomic.NpyWriter, shared: bool) -> tuple[dict, int]:
    """Denoise the volume at ``volume_path`` into ``output``; returns the noise estimate and the tile count.

    Every pass after the first writes beside ``output`` into a temporary
    ``.npy``, removed once the passes are combined into ``output``.
    """
    volume = np.load(volume_path, mmap_mode="r")
    outputs = [output] + [atomic.NpyWriter(output.dest.with_name(f"{output.dest.stem}-pass{i}.npy"), volume.shape)
                          for i in range(1, len(localsvd.ENSEMBLE))]
    try:
        noise, tiles = None, 0
        for p, out in zip(localsvd.ENSEMBLE, outputs):
            sigmas = _run_pass(sc, volume, volume_path, out, shared, p)
            noise = noise if noise is not None else sigmas
            tiles += tile_count(volume.shape[p.axis], sc.defaultParallelism)
        passes = [o.array for o in outputs]
        for z in range(volume.shape[0]):   # slice by slice: the combination is elementwise
            output.array[z] = localsvd.combine([a[z] for a in passes])
    finally:
        for extra in outputs[1:]:
            extra.discard()
    return localsvd.noise_summary(noise), tiles
