"""The local denoiser (:mod:`ssvd_denoise.local`) spread over a Spark cluster.

Each pass of the first stage's ensemble runs as one Spark job of tiles:
slabs along the axis its patches follow. With ``shared`` data access (the
executors see the files) a task reads its slab from the memory-mapped volume
and writes its finished slab straight into the pass's output ``.npy``;
otherwise the driver sends each task its slab and writes what comes back.
The passes are combined slice by slice on the driver into the pilot, and the
second stage runs as one more job of tiles over the volume and the pilot.
The tiles, passes and arithmetic are those of the in-process path, so the
bytes are the same.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ctsvd_common import atomic
from ssvd_denoise import localsvd, wiener

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


def _wiener_shared_task(volume: str, pilot: str, output: str, length: int):
    def run(tile: localsvd.Tile) -> None:
        window = slice(tile.first, tile.stop)
        planes = wiener.denoise_tile(np.load(volume, mmap_mode="r")[window], np.load(pilot, mmap_mode="r")[window],
                                     tile, length)
        out = np.load(output, mmap_mode="r+")
        out[tile.own_first:tile.own_stop] = planes
        out.flush()
    return run


def _wiener_stream_task(length: int):
    def run(item: tuple[localsvd.Tile, np.ndarray, np.ndarray]) -> tuple[localsvd.Tile, np.ndarray]:
        tile, region, pilot = item
        return tile, wiener.denoise_tile(region, pilot, tile, length)
    return run


def _run_wiener(sc, volume: np.ndarray, volume_path: Path, pilot: atomic.NpyWriter, output: atomic.NpyWriter,
                shared: bool) -> int:
    length = volume.shape[0]
    plan = localsvd.tiles(length, tile_count(length, sc.defaultParallelism), (wiener.SETTINGS.geometry,))
    if shared:
        pilot.array.flush()
        task = _wiener_shared_task(str(volume_path), str(pilot.temp_path), str(output.temp_path), length)
        sc.parallelize(plan, len(plan)).map(task).collect()
        return len(plan)
    items = [(t, np.ascontiguousarray(volume[t.first:t.stop]), np.ascontiguousarray(pilot.array[t.first:t.stop]))
             for t in plan]
    for tile, planes in sc.parallelize(items, len(items)).map(_wiener_stream_task(length)).toLocalIterator(
            prefetchPartitions=True):
        output.array[tile.own_first:tile.own_stop] = planes
    return len(plan)


def denoise(sc, volume_path: Path, output: atomic.NpyWriter, shared: bool) -> tuple[dict, int]:
    """Denoise the volume at ``volume_path`` into ``output``; returns the noise estimate and the tile count.

    The passes and the pilot are written beside ``output`` into temporary
    ``.npy`` files, removed once the second stage is done.
    """
    volume = np.load(volume_path, mmap_mode="r")
    scratch = lambda name: atomic.NpyWriter(output.dest.with_name(f"{output.dest.stem}-{name}.npy"), volume.shape)
    passes: list[atomic.NpyWriter] = []
    try:
        pilot = scratch("pilot")
        passes.append(pilot)
        passes += [scratch(f"pass{i}") for i in range(1, len(localsvd.ENSEMBLE))]
        noise, tiles = None, 0
        for p, out in zip(localsvd.ENSEMBLE, passes):
            sigmas = _run_pass(sc, volume, volume_path, out, shared, p)
            noise = noise if noise is not None else sigmas
            tiles += tile_count(volume.shape[p.axis], sc.defaultParallelism)
        arrays = [o.array for o in passes]
        for z in range(volume.shape[0]):   # slice by slice: the combination is elementwise, and in place
            pilot.array[z] = localsvd.combine([a[z] for a in arrays])
        tiles += _run_wiener(sc, volume, volume_path, pilot, output, shared)
    finally:
        for extra in passes:
            extra.discard()
    return localsvd.noise_summary(noise), tiles
