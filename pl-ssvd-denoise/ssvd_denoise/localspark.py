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

from ctsvd_common import atomic, noise
from ssvd_denoise import local, localsvd, wiener

# A tile much thinner than the patches recomputes too much at its edges.
MIN_TILE_SLICES = 32


def tile_count(length: int, parallelism: int) -> int:
    """Two tiles per core, for balance, but none thinner than :data:`MIN_TILE_SLICES`."""
    return max(1, min(2 * parallelism, math.ceil(length / MIN_TILE_SLICES)))


def _shared_task(volume: str, output: str, length: int, p: localsvd.Pass, field: localsvd.NoiseField):
    def run(tile: localsvd.Tile) -> None:
        region = localsvd.along(np.load(volume, mmap_mode="r"), p.axis)[tile.first:tile.stop]
        planes = localsvd.denoise_tile(region, tile, length, p.geometries, field)
        out = np.load(output, mmap_mode="r+")
        localsvd.along(out, p.axis)[tile.own_first:tile.own_stop] = planes
        out.flush()
    return run


def _stream_task(length: int, p: localsvd.Pass, field: localsvd.NoiseField):
    def run(item: tuple[localsvd.Tile, np.ndarray]) -> tuple[localsvd.Tile, np.ndarray]:
        tile, region = item
        return tile, localsvd.denoise_tile(region, tile, length, p.geometries, field)
    return run


def _run_pass(sc, volume: np.ndarray, volume_path: Path, output: atomic.NpyWriter, shared: bool,
              p: localsvd.Pass, model: noise.NoiseModel) -> None:
    length = volume.shape[p.axis]
    plan = localsvd.tiles(length, tile_count(length, sc.defaultParallelism), p.geometries)
    field = localsvd.noise_field(model, p, volume.shape)
    if shared:
        task = _shared_task(str(volume_path), str(output.temp_path), length, p, field)
        sc.parallelize(plan, len(plan)).map(task).collect()
        return
    view = localsvd.along(volume, p.axis)
    items = [(t, np.ascontiguousarray(view[t.first:t.stop])) for t in plan]
    for tile, planes in sc.parallelize(items, len(items)).map(_stream_task(length, p, field)).toLocalIterator(
            prefetchPartitions=True):
        localsvd.along(output.array, p.axis)[tile.own_first:tile.own_stop] = planes


def _wiener_shared_task(volume: str, pilot: str, output: str, length: int, nv: wiener.NoiseView,
                        strength: float):
    def run(tile: localsvd.Tile) -> None:
        window = slice(tile.first, tile.stop)
        planes = wiener.denoise_tile(np.load(volume, mmap_mode="r")[window], np.load(pilot, mmap_mode="r")[window],
                                     tile, length, nv, strength)
        out = np.load(output, mmap_mode="r+")
        out[tile.own_first:tile.own_stop] = planes
        out.flush()
    return run


def _wiener_stream_task(length: int, nv: wiener.NoiseView, strength: float):
    def run(item: tuple[localsvd.Tile, np.ndarray, np.ndarray]) -> tuple[localsvd.Tile, np.ndarray]:
        tile, region, pilot = item
        return tile, wiener.denoise_tile(region, pilot, tile, length, nv, strength)
    return run


def _run_wiener(sc, volume: np.ndarray, volume_path: Path, pilot: atomic.NpyWriter, output: atomic.NpyWriter,
                shared: bool, model: noise.NoiseModel, strength: float) -> int:
    length = volume.shape[0]
    plan = localsvd.tiles(length, tile_count(length, sc.defaultParallelism), (wiener.SETTINGS.geometry,))
    nv = wiener.noise_view(model, length)
    if shared:
        pilot.array.flush()
        task = _wiener_shared_task(str(volume_path), str(pilot.temp_path), str(output.temp_path), length, nv,
                                   strength)
        sc.parallelize(plan, len(plan)).map(task).collect()
        return len(plan)
    items = [(t, np.ascontiguousarray(volume[t.first:t.stop]), np.ascontiguousarray(pilot.array[t.first:t.stop]))
             for t in plan]
    for tile, planes in sc.parallelize(items, len(items)).map(_wiener_stream_task(length, nv, strength)).toLocalIterator(
            prefetchPartitions=True):
        output.array[tile.own_first:tile.own_stop] = planes
    return len(plan)


def denoise(sc, volume_path: Path, output: atomic.NpyWriter, shared: bool) -> tuple[dict, int]:
    """Denoise the volume at ``volume_path`` into ``output``; returns what ``local.json`` records of
    the noise and the choices made (:func:`ssvd_denoise.local.record`) and the tile count.

    The noise model and stage 2's strength are found on the driver (reading the volume once, slab
    by slab, and a few crops). The passes and the pilot are written beside ``output`` into
    temporary ``.npy`` files, removed once the second stage is done.
    """
    volume = np.load(volume_path, mmap_mode="r")
    if min(volume.shape[1:]) < local.MIN_IN_PLANE:
        output.array[:] = volume
        return local.too_small(volume.shape), 0
    model = noise.estimate(volume)
    strength, why = local.choose_strength(volume, model)
    scratch = lambda name: atomic.NpyWriter(output.dest.with_name(f"{output.dest.stem}-{name}.npy"), volume.shape)
    passes: list[atomic.NpyWriter] = []
    try:
        pilot = scratch("pilot")
        passes.append(pilot)
        passes += [scratch(f"pass{i}") for i in range(1, len(localsvd.ENSEMBLE))]
        tiles = 0
        for p, out in zip(localsvd.ENSEMBLE, passes):
            _run_pass(sc, volume, volume_path, out, shared, p, model)
            tiles += tile_count(volume.shape[p.axis], sc.defaultParallelism)
        arrays = [o.array for o in passes]
        for z in range(volume.shape[0]):   # slice by slice: the combination is elementwise, and in place
            pilot.array[z] = localsvd.combine([a[z] for a in arrays])
        tiles += _run_wiener(sc, volume, volume_path, pilot, output, shared, model, strength)
    finally:
        for extra in passes:
            extra.discard()
    return local.record(model, why), tiles
