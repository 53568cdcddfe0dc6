"""The local denoiser (:mod:`ssvd_denoise.local`) spread over a Spark cluster, slab by slab.

A task is one slab (:func:`ssvd_denoise.local.denoise_slab`): both stages on
a run of whole slices and the margin their patches read, giving that run's
final slices. The slabs are sized from the executors' memory and cores
(:func:`slab_thickness`), so a large series makes more slabs, not larger
ones.

* ``shared`` data access (the executors see the files): the tasks are slab
  descriptions; each reads its slices from the memory-mapped volume and
  writes its finished slices straight into the output ``.npy``.
* ``stream``: the driver sends each slab once, through the global path's own
  mechanism (:func:`ssvd_denoise.spark.blocks.stream_waves`): a wave of one slab
  per core is broadcast and kept on the executors' disks, the wave's tasks
  name those blocks and carry no data, their results are kept on the
  executors' disks too, and come back one slab at a time
  (``toLocalIterator``) to be written as they arrive. The driver holds one
  wave, whatever the series' length.

The series' noise model and stage 2's strength are measured once on the
driver (:func:`ssvd_denoise.local.measured`: one pass over the volume, slab
by slab, and a few crops) and broadcast with the parameters; nothing but the
denoised slices comes back.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from ctsvd_common import atomic
from ssvd_denoise import local
from ssvd_denoise.spark import blocks, session

# Peak memory of one slab's task, in bytes per voxel of its input (float64 copies, sums and weights of a
# pass); 32 measured on 512² slices, with headroom.
BYTES_PER_VOXEL = 40
# Slices a slab reads beyond the ones it owns (the patches across its edges), at most, for sizing.
MARGIN_SLICES = 32
# For balance, up to this many slabs per core, none thinner than MIN_SLAB_SLICES unless memory (or
# keeping every core busy, down to half that) says so: a thin slab recomputes its edges' patches in a
# larger share.
SLABS_PER_CORE = 2
MIN_SLAB_SLICES = 32
# A streamed slab passes whole through the driver's JVM (broadcast) and an executor's block manager.
STREAM_SLAB_BYTES = 128 << 20


@dataclass
class LocalRun:
    """What ``local.json`` records of one series' run."""

    slabs: int
    spark: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- sizing


def _machine_memory() -> int:
    """This machine's memory, or its container's limit (cgroup v2) when lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        return min(total, int(limit)) if limit.isdigit() else total
    except OSError:
        return total


def task_memory(sc, cores: int) -> tuple[int, str]:
    """Bytes one task may use on executors of ``cores`` cores, and where the figure comes from.

    On a cluster: the executor's Python memory (``spark.executor.pyspark.memory``)
    or else its memory (``spark.executor.memory``, default 1g), shared by its
    cores. In local mode the executor is this machine: half its memory over its cores.
    """
    conf = sc.getConf()
    if session.is_local(sc.master):
        memory = _machine_memory() // 2
        return memory // cores, f"half of this machine's {memory * 2 / 2**30:.1f} GiB over {cores} cores"
    key = "spark.executor.pyspark.memory" if conf.contains("spark.executor.pyspark.memory") else "spark.executor.memory"
    memory = int(sc._jvm.org.apache.spark.network.util.JavaUtils.byteStringAsMb(conf.get(key, "1g"))) << 20
    return memory // cores, f"{key}={conf.get(key, '1g')} over {cores} core(s) per executor"


def slab_thickness(shape: tuple[int, int, int], cores: int, task_bytes: int, cap_bytes: int | None = None) -> int:
    """Output slices per slab: as many slabs as ``SLABS_PER_CORE`` per core (a multiple of the cores),
    fewer for a short series, more when a slab's task would need more than ``task_bytes``."""
    slices, rows, cols = shape
    plane = rows * cols
    most = task_bytes // (BYTES_PER_VOXEL * plane) - MARGIN_SLICES
    if cap_bytes is not None:
        most = min(most, cap_bytes // (4 * plane) - MARGIN_SLICES)
    unit = local.PARAMS.wiener.slab_stride
    most = max(unit, most // unit * unit)
    count = min(SLABS_PER_CORE * cores, slices // MIN_SLAB_SLICES)
    if count > cores:
        count -= count % cores
    count = max(count, min(cores, slices // (MIN_SLAB_SLICES // 2)), 1)   # every core busy, if it can be
    needed = math.ceil(slices / most)
    if needed > count:
        count = math.ceil(needed / cores) * cores
    return max(1, min(most, math.ceil(math.ceil(slices / count) / unit) * unit))


# --------------------------------------------------------------------------- tasks


def _shared_task(volume: str, output: str, shape: tuple[int, int, int], params):
    def run(slab: local.Slab):
        region = np.load(volume, mmap_mode="r")[slab.first:slab.stop]
        planes, seconds = local.denoise_slab(region, slab, shape, params.value)
        out = np.load(output, mmap_mode="r+")
        out[slab.own_first:slab.own_stop] = planes
        out.flush()
        return seconds
    return run


def _stream_task(shape: tuple[int, int, int], params):
    def run(item: tuple[local.Slab, np.ndarray]):
        slab, region = item
        return (slab, *local.denoise_slab(region, slab, shape, params.value))
    return run


def _read_slab(path: str, offset: int, shape: tuple[int, int, int], slab: local.Slab):
    """A slab's input slices, read from the file (not mapped: the driver's memory stays one wave)."""
    plane = shape[1] * shape[2] * 4
    with open(path, "rb") as f:
        data = os.pread(f.fileno(), slab.slices * plane, offset + slab.first * plane)
    return slab, np.frombuffer(data, np.float32).reshape(slab.slices, *shape[1:])


def _write_at(fd: int, planes: np.ndarray, offset: int) -> None:
    """Write ``planes`` at ``offset`` of the file (not through a map: the driver's memory stays one slab)."""
    data = memoryview(np.ascontiguousarray(planes)).cast("B")
    while data:
        done = os.pwrite(fd, data, offset)
        data, offset = data[done:], offset + done


def _task_bytes(function, payload=None) -> int:
    """Bytes of a task's pickled function (and its own element): what Spark ships per task."""
    from pyspark.serializers import CloudPickleSerializer
    pickle = CloudPickleSerializer()
    return len(pickle.dumps(function)) + (len(pickle.dumps(payload)) if payload is not None else 0)


def _tasks_by_executor(sc, group: str, wait: float = 5.0) -> dict:
    """Tasks and task-seconds per executor over the jobs of ``group``, from Spark's status store.

    The store is fed by the listener bus, a little behind the jobs; it is
    read again until every task has ended (at most ``wait`` seconds).
    """
    store, tracker = sc._jsc.sc().statusStore(), sc.statusTracker()
    deadline = time.monotonic() + wait
    while True:
        shares, running = {}, 0
        for job in tracker.getJobIdsForGroup(group):
            info = tracker.getJobInfo(job)
            for stage in (info.stageIds if info else []):
                attempt = tracker.getStageInfo(stage)
                tasks = store.taskList(stage, attempt.currentAttemptId if attempt else 0, 1 << 20)
                for i in range(tasks.size()):
                    t = tasks.apply(i)
                    if t.status() != "SUCCESS":
                        running += t.status() == "RUNNING"
                        continue
                    share = shares.setdefault(t.executorId(), {"tasks": 0, "seconds": 0.0})
                    share["tasks"] += 1
                    share["seconds"] += t.duration().get() / 1000 if t.duration().isDefined() else 0.0
        if not running or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    total = sum(s["seconds"] for s in shares.values()) or 1.0
    return {e: {"tasks": s["tasks"], "seconds": round(s["seconds"], 2), "share": round(s["seconds"] / total, 3)}
            for e, s in sorted(shares.items())}


# --------------------------------------------------------------------------- the series


def denoise(sc, volume_path: Path, output: atomic.NpyWriter, shared: bool, params: local.Params,
            log=lambda msg: None) -> LocalRun:
    """Denoise the volume at ``volume_path`` into ``output`` (a writer of the volume's shape), with
    the series' measured noise and strength in ``params`` (:func:`ssvd_denoise.local.measured`)."""
    volume = np.load(volume_path, mmap_mode="r")
    shape, offset = tuple(volume.shape), volume.offset
    del volume
    cores = session.executor_cores(sc)
    budget, source = task_memory(sc, max(cores))
    thickness = slab_thickness(shape, sum(cores), budget, None if shared else STREAM_SLAB_BYTES)
    plan = local.slabs(shape, thickness, params)
    plane = shape[1] * shape[2] * 4
    log(f"{len(plan)} slabs of {thickness} slices (at most {max(s.slices for s in plan)} read, "
        f"{max(s.slices for s in plan) * plane / 2**20:.0f} MiB), sized for {budget / 2**20:.0f} MiB a task "
        f"({source})")
    group = f"local-{output.dest.parent.name}-{time.monotonic_ns()}"
    shipped = sc.broadcast(params)
    timings: dict[str, float] = {}
    seconds = dict.fromkeys(local.STAGES, 0.0)
    if shared:
        task = _shared_task(str(volume_path), str(output.temp_path), shape, shipped)
        payload = _task_bytes(task, plan[0])
        t0 = time.perf_counter()
        with _job_group(sc, group):
            results = sc.parallelize(plan, len(plan)).map(task).collect()
        for stage_seconds in results:
            for k, v in stage_seconds.items():
                seconds[k] += v
        timings["computing and writing"] = time.perf_counter() - t0
    else:
        task = _stream_task(shape, shipped)
        payload = _task_bytes(task)
        loaders = [partial(_read_slab, str(volume_path), offset, shape, slab) for slab in plan]
        written = reported = 0
        with open(output.temp_path, "r+b") as out:
            data_at = np.load(output.temp_path, mmap_mode="r").offset
            waves = blocks.stream_waves(sc, loaders, sum(cores))
            while True:
                t0 = time.perf_counter()
                wave = next(waves, None)
                _add(timings, "sending the slabs", t0)
                if wave is None:
                    break
                t0 = time.perf_counter()
                results = wave.map(task).persist(_disk_only())
                with _job_group(sc, group):
                    results.count()   # every slab of the wave at once, kept on the executors' disks
                _add(timings, "computing", t0)
                t0 = time.perf_counter()
                for slab, planes, stage_seconds in results.toLocalIterator():
                    _write_at(out.fileno(), planes, data_at + slab.own_first * plane)
                    written += slab.own_stop - slab.own_first
                    for k, v in stage_seconds.items():
                        seconds[k] += v
                results.unpersist()
                blocks.drop(wave)
                _add(timings, "fetching and writing", t0)
                if (tenths := 10 * written // shape[0]) > reported:   # progress, every tenth
                    reported = tenths
                    log(f"{written} of {shape[0]} slices denoised")
        if written != shape[0]:
            raise RuntimeError(f"{written} of {shape[0]} slices came back from the executors")
    by_executor = _tasks_by_executor(sc, group)
    shipped.destroy()   # not on failure: see _job_group
    return LocalRun(
        slabs=len(plan),
        spark={"slabs": {"count": len(plan), "slices": thickness, "max_read_slices": max(s.slices for s in plan),
                         "max_read_bytes": max(s.slices for s in plan) * plane,
                         "task_memory_bytes": budget, "sized_by": source},
               "tasks": {"count": len(plan), "payload_bytes": payload, "executor_cores": cores},
               "executor_shares": by_executor},
        timings={**{k: round(v, 3) for k, v in timings.items()},
                 "task_seconds": {k: round(v, 3) for k, v in seconds.items()}})


@contextlib.contextmanager
def _job_group(sc, group: str):
    """Jobs started within belong to ``group`` (the status store's tasks are read by it).

    Not reset when the block raises: after a signal has cut a call short, this
    thread's next call into Spark would wait for the cut call's job to end
    (see :func:`ssvd_denoise.spark.session.stop`).
    """
    sc.setJobGroup(group, "local SVD denoising")
    yield
    sc.setLocalProperty("spark.jobGroup.id", None)


def _add(timings: dict, label: str, t0: float) -> None:
    timings[label] = timings.get(label, 0.0) + time.perf_counter() - t0


def _disk_only():
    from pyspark import StorageLevel
    return StorageLevel.DISK_ONLY
