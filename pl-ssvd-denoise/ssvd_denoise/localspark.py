"""The local SVD denoiser (:mod:`ssvd_denoise.localsvd`) spread over a Spark cluster.

One task per tile, a slab of whole slices. With ``shared`` data access (the
executors see the files) a task reads its slices from the memory-mapped
volume and writes its finished slices straight into the output ``.npy``;
otherwise the driver sends each task its slices and writes what comes back.
Either way the tiles are those of the in-process path, so the bytes are the
same.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ssvd_denoise import localsvd

# A tile much thinner than the patches recomputes too much at its edges.
MIN_TILE_SLICES = 32


def tile_count(slices: int, parallelism: int) -> int:
    """Two tiles per core, for balance, but none thinner than :data:`MIN_TILE_SLICES`."""
    return max(1, min(2 * parallelism, math.ceil(slices / MIN_TILE_SLICES)))


def _shared_task(volume: str, output: str, slices: int):
    def run(tile: localsvd.Tile) -> np.ndarray:
        region = np.load(volume, mmap_mode="r")[tile.first:tile.stop]
        planes, noise = localsvd.denoise_tile(region, tile, slices)
        out = np.load(output, mmap_mode="r+")
        out[tile.own_first:tile.own_stop] = planes
        out.flush()
        return noise
    return run


def _stream_task(slices: int):
    def run(item: tuple[localsvd.Tile, np.ndarray]) -> tuple[localsvd.Tile, np.ndarray, np.ndarray]:
        tile, region = item
        return (tile, *localsvd.denoise_tile(region, tile, slices))
    return run


def denoise(sc, volume_path: Path, output, shared: bool) -> tuple[dict, int]:
    """Denoise the volume at ``volume_path`` into ``output`` (an ``atomic.NpyWriter``).

    Returns the noise estimate and the number of tiles.
    """
    volume = np.load(volume_path, mmap_mode="r")
    slices = volume.shape[0]
    plan = localsvd.tiles(slices, tile_count(slices, sc.defaultParallelism))
    if shared:
        task = _shared_task(str(volume_path), str(output.temp_path), slices)
        noise = sc.parallelize(plan, len(plan)).map(task).collect()
    else:
        items = [(t, np.asarray(volume[t.first:t.stop])) for t in plan]
        noise = []
        for tile, planes, sigma in sc.parallelize(items, len(items)).map(_stream_task(slices)).toLocalIterator(
                prefetchPartitions=True):
            output.array[tile.own_first:tile.own_stop] = planes
            noise.append(sigma)
    return localsvd.noise_summary(noise), len(plan)
