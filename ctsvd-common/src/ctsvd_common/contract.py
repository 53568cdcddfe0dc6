"""The data contract between the stages of the suite, and its one owner.

A ChRIS plugin sees only its parent's output folder, so each stage hands the
next one folder per series that holds everything later stages need::

    <series>/volume.npy      float32 (slices, rows, cols), Hounsfield units,
                             slices sorted along the slice normal
    <series>/manifest.json   identity, geometry, window presets, per-slice
                             sources, and every input skipped or failed, and why
    <series>/headers/        one pixel-less DICOM header per slice, in volume
                             order, for writing a derived series later

pl-ssvd-denoise adds the factorisation A ≈ U·diag(s)·Vt of the matrix A
(slices × pixels) and passes the three items above forward unchanged::

    <series>/U.npy  (slices, k)   <series>/s.npy  (k,)   <series>/Vt.npy  (k, pixels)
    <series>/svd.json             parameters, Spark set-up, timings, error

and, with its local mode, a volume denoised by SVDs of small patches across
neighbouring slices::

    <series>/local.npy            float32 (slices, rows, cols), HU, like volume.npy
    <series>/local.json           method, parameters, noise estimate, Spark set-up, timings

pl-svd-render writes ``render.json`` beside its denoised volume.

The three JSON documents are written and read only through the typed records
below (:class:`Manifest`, :class:`SvdRecord`, :class:`RenderRecord`): each
carries a ``format`` name and a ``version``, and a reader refuses a format
or version it does not know, with a one-line reason. Series folders may sit
at any depth; a stage keeps its parent's relative layout.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from ctsvd_common import atomic

VOLUME = "volume.npy"
MANIFEST = "manifest.json"
HEADERS = "headers"

SVD_U = "U.npy"
SVD_S = "s.npy"
SVD_VT = "Vt.npy"
SVD_JSON = "svd.json"
LOCAL = "local.npy"
LOCAL_JSON = "local.json"
RENDER_JSON = "render.json"

PASSED_FORWARD = (VOLUME, MANIFEST, HEADERS)

# What stages write beside their data: run reports (see ``stage``) and
# pl-dcm-anon's tag report. Later stages pass over them without a word.
REPORT_SUFFIX = ".report.json"
TAG_REPORT = "tag-report"


def is_stage_artifact(relative: Path) -> bool:
    """A run report, or a page of pl-dcm-anon's tag report: what an earlier stage wrote beside its data.
    Anything else, even in a folder named tag-report/, is input like any other."""
    if len(relative.parts) == 1:
        return relative.name.endswith(REPORT_SUFFIX)
    return relative.parts[0] == TAG_REPORT and relative.suffix in (".json", ".html")


class ContractError(Exception):
    """A series folder does not hold what the contract promises."""


def relative_reason(e: Exception, series_dir: Path) -> str:
    """A contract error's message with paths relative to the series folder, which the log line already
    names (and whose full path may carry identity)."""
    return str(e).replace(f"{series_dir}{os.sep}", "")


# --------------------------------------------------------------------------- records

R = TypeVar("R", bound="_Record")


def _plain(value: Any) -> Any:
    """``value`` as JSON-ready data. Unlike ``dataclasses.asdict`` it copies nothing it need not:
    a manifest lists every slice, and asdict's deep copies cost more than the JSON itself."""
    if isinstance(value, _Record):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass
class _Record:
    """A versioned JSON document: ``to_json`` and ``from_json`` with checks."""

    FORMAT: ClassVar[str] = ""
    VERSION: ClassVar[int] = 0
    # Fields holding nested records, by name.
    NESTED: ClassVar[dict[str, type]] = {}

    def to_dict(self) -> dict[str, Any]:
        body = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return {"format": self.FORMAT, "version": self.VERSION, **body} if self.FORMAT else body

    @classmethod
    def from_dict(cls: type[R], data: Any, where: str) -> R:
        if not isinstance(data, dict):
            raise ContractError(f"{where}: expected a JSON object")
        if cls.FORMAT:
            if data.get("format") != cls.FORMAT:
                raise ContractError(f"{where}: not a {cls.FORMAT} document (format is {data.get('format')!r})")
            if data.get("version") != cls.VERSION:
                raise ContractError(f"{where}: {cls.FORMAT} version {data.get('version')} is not supported "
                                    f"(this stage reads version {cls.VERSION}); re-run the stage that wrote it")
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        for name, nested in cls.NESTED.items():
            if name in values:
                values[name] = nested.from_dict(values[name], f"{where}: {name}")
        try:
            return cls(**values)
        except TypeError:
            missing = sorted(f.name for f in dataclasses.fields(cls)
                             if f.name not in values and f.default is dataclasses.MISSING
                             and f.default_factory is dataclasses.MISSING)
            raise ContractError(f"{where}: missing {', '.join(missing) or 'fields'}") from None

    def write(self, path: Path) -> None:
        atomic.write_json(path, self.to_dict())

    @classmethod
    def read(cls: type[R], path: Path) -> R:
        try:
            data = json.loads(Path(path).read_text(), parse_constant=_no_constant)
        except _NotJson:
            raise ContractError(f"{path}: {Path(path).name} holds NaN or Infinity, which are no numbers "
                                f"a stage writes; re-run the stage that wrote it") from None
        except (OSError, ValueError) as e:
            raise ContractError(f"{path}: cannot read {Path(path).name} ({type(e).__name__})") from None
        return cls.from_dict(data, str(path))


class _NotJson(Exception):
    pass


def _no_constant(name: str):
    """Python's json reads NaN, Infinity and -Infinity, which JSON does not have: refuse them."""
    raise _NotJson(name)


@dataclass
class SeriesIdentity(_Record):
    """Who the series is, de-identified: UIDs and descriptions as the headers give them."""

    study_instance_uid: str = ""
    series_instance_uid: str = ""
    frame_of_reference_uid: str = ""
    modality: str = ""
    series_number: str = ""
    description: str = ""
    sop_class_uid: str = ""
    image_type: list[str] = field(default_factory=list)
    patient_identity_removed: bool = False
    # "single-frame" files, or "multi-frame" (Enhanced or legacy-converted) frames
    source: str = "single-frame"
    # What told this stack apart from others of the same series, if anything.
    split_by: list[str] = field(default_factory=list)


@dataclass
class VolumeInfo(_Record):
    shape: list[int]
    units: str                       # "HU", or what the rescale says for other modalities
    min: float
    max: float
    file: str = VOLUME
    dtype: str = "float32"
    axes: list[str] = field(default_factory=lambda: ["slice", "row", "column"])
    padding: dict | None = None      # {"pixels": n, "set_to": hu}
    rescale_varies: bool = False     # slices carried different RescaleSlope/Intercept
    photometric: str = "MONOCHROME2"
    inverted: bool = False           # MONOCHROME1 turned so that higher is brighter


@dataclass
class Geometry(_Record):
    sorted_by: str
    slice_positions_mm: list[float]
    pixel_spacing_mm: list[float] | None = None
    orientation: list[float] | None = None
    normal: list[float] | None = None
    slice_spacing_mm: float | None = None          # the median step along the normal
    spacing_mm: dict | None = None                 # {"min", "median", "max"} of the steps
    uniform_spacing: bool = True
    gaps: list[dict] = field(default_factory=list)             # steps that depart from the median
    missing_slices: int = 0                                    # slices the gaps leave out, estimated
    duplicate_positions: list[dict] = field(default_factory=list)
    slice_thickness_mm: float | None = None        # the median; per slice in Manifest.slices
    slice_thickness_varies: bool = False
    tilt_deg: float | None = None                  # slice vector against the normal
    gantry_detector_tilt_deg: float | None = None  # as the header says
    warnings: list[str] = field(default_factory=list)


@dataclass
class SliceEntry(_Record):
    index: int
    source: str                      # file, relative to the converter's input
    header: str                      # pixel-less header, relative to the series folder
    sop_instance_uid: str = ""
    frame: int | None = None         # frame number (1-based) inside a multi-frame file
    instance_number: int | None = None
    image_position: list[float] | None = None
    thickness_mm: float | None = None
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0


@dataclass
class Manifest(_Record):
    """``manifest.json``: everything later stages need to know about one volume."""

    FORMAT: ClassVar[str] = "ctsvd-series-manifest"
    VERSION: ClassVar[int] = 2
    NESTED: ClassVar[dict[str, type]] = {"series": SeriesIdentity, "volume": VolumeInfo, "geometry": Geometry}

    created_by: str
    created: str
    series: SeriesIdentity
    volume: VolumeInfo
    geometry: Geometry
    window_presets: dict[str, dict[str, float]]
    slices: list[SliceEntry]
    # Inputs of this series left out: {"file", "reason"}; failed ones left a gap.
    skipped: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    # Inputs of the run that no series owns (not DICOM, unreadable): the
    # converter's report stays behind, the manifest travels down the pipeline.
    skipped_elsewhere: list[dict] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "Manifest":
        manifest = super().from_dict(data, where)
        manifest.slices = [SliceEntry.from_dict(s, f"{where}: slices[{i}]") for i, s in enumerate(manifest.slices)]
        return manifest

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.volume.shape)  # type: ignore[return-value]


@dataclass
class SvdRecord(_Record):
    """``svd.json``: how a series was factored, and how well."""

    FORMAT: ClassVar[str] = "ctsvd-svd"
    VERSION: ClassVar[int] = 1

    plugin: str
    algorithm: str
    matrix: dict
    k: int
    requested_k: int
    oversample: int
    power_iters: int
    seed: int
    sample_rank: int
    singular_values: list[float]
    energy_fraction: list[float]
    frobenius_norm: float
    residual_norm: float
    relative_error: float
    spark: dict
    timings: dict
    warnings: list[str] = field(default_factory=list)   # e.g. k clipped to the slice count
    # Added within version 1 (readers of older files get the defaults, which are what those files did):
    # "gram" (exact, from A·Aᵀ) or "randomized" (Halko, with oversample, power_iters and seed), and why.
    method: str = "randomized"
    method_reason: str = ""
    # Every singular value where the method has them (the exact Gram route), for rank rules that
    # need the whole spectrum; and the series' measured noise model (ctsvd_common.noise), which
    # sets the automatic rank.
    spectrum: list[float] | None = None
    noise: dict | None = None


@dataclass
class LocalRecord(_Record):
    """``local.json``: how ``local.npy`` was denoised, patch by patch."""

    FORMAT: ClassVar[str] = "ctsvd-local"
    VERSION: ClassVar[int] = 2

    plugin: str
    method: str                      # e.g. "local SVD, patches × neighbouring slices, two passes"
    parameters: dict                 # patch, slab, stride, thresholds...: everything that shaped the result
    automatic: bool                  # True when no strength was given by the user
    noise_hu: dict                   # the measured noise σ: {"uniform" (uniform regions), and the object's
                                     # cells' "median", "p10", "p90"} in HU
    noise: dict                      # the whole noise model (ctsvd_common.noise.NoiseModel.summary())
    choices: dict                    # each knob chosen from the data, its value and why
    tiles: int
    spark: dict
    timings: dict
    warnings: list[str] = field(default_factory=list)


@dataclass
class RenderRecord(_Record):
    """``render.json``: which denoised volume a render node published, and how it was made."""

    FORMAT: ClassVar[str] = "ctsvd-render"
    VERSION: ClassVar[int] = 2

    plugin: str
    denoiser: str                    # "global" (truncated SVD of the series) or "local" (local.npy)
    automatic: bool                  # no rank or strength given: --rank auto, or local.json's "automatic"
    method: str
    # global: k, oversample, power_iters, seed, rank_rule, noise_hu, noise_estimable;
    # local: local.json's parameters and its noise_hu
    parameters: dict
    relative_change: float
    removed_std_hu: float
    windows: list[str]
    denoised: str | None             # denoised.npy, written only with --npy
    dicom: str | None
    rank: int | None = None          # global only, as are k and threshold
    k: int | None = None
    threshold: float | None = None
    noise_hu_estimate: float | None = None   # from the SVD spectrum; None when it cannot tell
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- series folders


def find_series(inputdir: Path) -> list[Path]:
    """Every series folder below ``inputdir`` (those holding a manifest), sorted."""
    return sorted(p.parent for p in Path(inputdir).rglob(MANIFEST)
                  if not any(part.startswith(".") for part in p.relative_to(inputdir).parts))


def read_manifest(series_dir: Path) -> Manifest:
    return Manifest.read(Path(series_dir) / MANIFEST)


def write_manifest(series_dir: Path, manifest: Manifest) -> None:
    manifest.write(Path(series_dir) / MANIFEST)


def read_svd(series_dir: Path) -> SvdRecord:
    return SvdRecord.read(Path(series_dir) / SVD_JSON)


def write_svd(series_dir: Path, record: SvdRecord) -> None:
    record.write(Path(series_dir) / SVD_JSON)


def read_render(series_dir: Path) -> RenderRecord:
    return RenderRecord.read(Path(series_dir) / RENDER_JSON)


def write_render(series_dir: Path, record: RenderRecord) -> None:
    record.write(Path(series_dir) / RENDER_JSON)


def read_local(series_dir: Path) -> LocalRecord:
    return LocalRecord.read(Path(series_dir) / LOCAL_JSON)


def write_local(series_dir: Path, record: LocalRecord) -> None:
    record.write(Path(series_dir) / LOCAL_JSON)


def open_volume(series_dir: Path, manifest: Manifest | None = None, name: str = VOLUME) -> np.ndarray:
    """Memory-map the series volume (or another of its float32 volumes, such as ``local.npy``)
    and check it against its manifest."""
    path = Path(series_dir) / name
    try:
        volume = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ContractError(f"{path}: cannot read the volume ({type(e).__name__}: truncated or not a .npy file)") from None
    if volume.dtype != np.float32 or volume.ndim != 3:
        raise ContractError(f"{path}: expected a float32 (slices, rows, cols) volume, found {volume.dtype} {volume.shape}")
    if manifest is not None and list(volume.shape) != list(manifest.volume.shape):
        raise ContractError(f"{path}: shape {volume.shape} differs from the manifest's {manifest.volume.shape}")
    return volume


def header_files(series_dir: Path, manifest: Manifest) -> list[Path]:
    """The per-slice header files, in volume order."""
    return [Path(series_dir) / s.header for s in manifest.slices]


def pass_forward(src: Path, dest: Path) -> str:
    """Hand what later stages need from one series folder to another, without copying where possible.

    Returns how: ``"reflink"`` (a copy-on-write clone: btrfs, XFS), ``"hard link"``
    (same file system) or ``"copy"``. Links are safe because the suite never
    changes a file in place: every output is written under a temporary name and
    renamed (see ``atomic``), which gives it a new inode. When ChRIS moves
    outputs to another compute resource it copies them, so a link becomes a
    copy there. A 12 GB volume costs a minute to copy and nothing to link.
    """
    dest.mkdir(parents=True, exist_ok=True)
    how: set[str] = set()
    for name in PASSED_FORWARD:
        item = src / name
        if item.is_dir():
            target = dest / name
            target.mkdir(exist_ok=True)
            for f in sorted(item.iterdir()):
                how.add(_share_file(f, target / f.name))
        elif item.exists():
            how.add(_share_file(item, dest / name))
        else:
            raise ContractError(f"{item}: missing from the series folder")
    return " and ".join(sorted(how))


FICLONE = 0x40049409  # Linux ioctl: make the destination a copy-on-write clone of the source


def _share_file(src: Path, dest: Path) -> str:
    """``dest`` as a reflink, hard link or copy of ``src`` (tried in that order), published atomically."""
    with atomic.atomic_path(dest) as tmp:
        try:
            with open(src, "rb") as fin, open(tmp, "wb") as fout:
                fcntl.ioctl(fout.fileno(), FICLONE, fin.fileno())
            return "reflink"
        except OSError:  # not supported by this file system, or across file systems
            pass
        try:
            tmp.unlink()
            os.link(src, tmp)
            return "hard link"
        except OSError:  # another file system, or links not allowed
            shutil.copyfile(src, tmp)
            return "copy"
