"""One run of a plugin: the input policy, progress logging, the run report and a truthful exit code.

Every plugin body receives a :class:`Stage`, and every input it meets ends
as exactly one of three things:

* **processed**: it contributed to an output (:meth:`Stage.output`);
* **skipped**: passed over on purpose, with a reason (:meth:`Stage.skip`):
  a README among the DICOM files, a localizer, a screenshot, a DICOMDIR, a
  file withheld for burned-in annotation, a stack too short to be a volume.
  Skipping is not a failure;
* **failed**: it should have been processed but could not be
  (:meth:`Stage.fail`): truncated, corrupt, undecodable, nonsense values.

Each skip and failure gets one log line naming the file and the reason, and
the run goes on with the rest. An unexpected exception inside one input is
caught at that input's boundary by :meth:`Stage.guard`: the log gets one line
with the exception's type, never its message (messages may quote header
values, and so PHI); the report gets the stack frames, which name only code.

At the end the stage writes ``<name>.report.json`` and returns

* ``0`` when it produced its outputs (what it skipped or failed on is in the
  report and the log),
* ``1`` when nothing usable came out, when a fatal :class:`StageError` ended
  the run, or, with ``--strict``, when anything failed,
* ``2`` for a usage error: argparse's own, every flag value the body
  rejects with :class:`UsageError`, and an output folder the run may not
  take (not empty, without ``--overwrite``; see :mod:`ctsvd_common.outputs`),
* ``128 + N`` when signal N stopped it: ``143`` for SIGTERM, ``130`` for SIGINT.

The body writes into a staging folder (``stage.outputdir`` while it runs);
the outputs are published once the run has ended, and only when it was not
interrupted and no fatal error ended it. A full disk, a read-only or an
unwritable output folder end the run with one line naming the fault.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import functools
import io
import logging
import os
import sys
import time
import traceback
from argparse import ArgumentParser, Namespace
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from ctsvd_common import atomic, interrupts, walk
from ctsvd_common.contract import REPORT_SUFFIX
from ctsvd_common.inputnames import InputNames, check_map_path
from ctsvd_common.outputs import OutputFolder, OutputInUse

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

REPORT_FORMAT = "ctsvd-stage-report"
REPORT_VERSION = 3

_LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"


class StageError(Exception):
    """A problem that ends the run. Its message is shown as one line, without a traceback."""


class UsageError(StageError):
    """A flag value the plugin cannot work with; the run ends with exit code 2."""


class InputFailed(Exception):
    """Raised inside :meth:`Stage.guard` to fail the guarded input with this one-line reason."""


class InputSkipped(Exception):
    """Raised inside :meth:`Stage.guard` to skip the guarded input with this one-line reason."""


# Faults of the output's file system: they end the run, since every later output would meet them too.
_DEVICE_FAULTS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is exhausted",
                  errno.EROFS: "the file system is read-only"}
_ACCESS_FAULTS = {errno.EACCES: "permission denied", errno.EPERM: "operation not permitted"}


def output_fault(exc: BaseException, outputdir: Path) -> str | None:
    """A one-line reason when ``exc`` is a fault of writing the outputs (disk full, read-only, no
    permission in ``outputdir``), else None; an input that cannot be read is the input's failure."""
    if not isinstance(exc, OSError) or exc.errno is None:
        return None
    name = errno.errorcode.get(exc.errno, str(exc.errno))
    if exc.errno in _DEVICE_FAULTS:
        return f"cannot write the outputs: {_DEVICE_FAULTS[exc.errno]} ({name})"
    if exc.errno in _ACCESS_FAULTS and any(_within(f, outputdir) for f in (exc.filename, exc.filename2) if f):
        return f"cannot write into the output folder: {_ACCESS_FAULTS[exc.errno]} ({name})"
    return None


def _within(path: str | os.PathLike, folder: Path) -> bool:
    try:
        Path(os.path.abspath(path)).relative_to(os.path.abspath(folder))
        return True
    except ValueError:
        return False


def add_policy_flags(parser: ArgumentParser) -> None:
    """The flags every plugin of the suite shares."""
    parser.add_argument("--strict", dest="strict", action="store_true", default=False,
                        help="exit 1 when any input failed, even if outputs were made "
                             "(by default a run that made its outputs exits 0 and reports the failures)")
    parser.add_argument("--input-map", dest="input_map", type=str, default="",
                        help="write the list of input paths and the labels logs and reports name them by "
                             "to this file, outside the output folder. It holds the original paths, "
                             "which may identify the patient")
    parser.add_argument("--overwrite", dest="overwrite", action="store_true", default=False,
                        help="when the output folder holds an earlier run of this plugin, remove what that "
                             "run wrote (its report lists it) and run again; without it a non-empty output "
                             "folder is refused (exit 2). Nothing else in the folder is ever removed")


@dataclass(frozen=True)
class Policy:
    """The input policy every plugin's settings carry (the flags of :func:`add_policy_flags`)."""

    strict: bool = False
    input_map: str = ""
    overwrite: bool = False

    @classmethod
    def from_options(cls, options: Namespace) -> "Policy":
        return cls(strict=options.strict, input_map=options.input_map, overwrite=options.overwrite)


def parameters_of(settings: Any) -> dict[str, Any]:
    """A run's settings as the report lists them: flag names to values, the policy's last.

    ``settings`` is a plugin's frozen settings dataclass (its ``policy`` field
    a :class:`Policy`) or an argparse namespace.
    """
    if not is_dataclass(settings):
        return {k: v for k, v in vars(settings).items()
                if k not in ("inputdir", "outputdir", "saveinputmeta", "saveoutputmeta")}
    out: dict[str, Any] = {}
    for f in fields(settings):
        value = getattr(settings, f.name)
        out.update(parameters_of(value) if is_dataclass(value) else {f.name: value})
    return out


def configure_logging(level: int = logging.INFO) -> None:
    """Log to stderr, one line per event; ChRIS collects it as the plugin's log."""
    root = logging.getLogger()
    if not any(getattr(h, "_ctsvd", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_LOG_FORMAT, datefmt="%H:%M:%S"))
        handler._ctsvd = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    # py4j narrates every gateway call at INFO.
    logging.getLogger("py4j").setLevel(logging.WARNING)


def code_frames(exc: BaseException) -> list[str]:
    """Where ``exc`` was raised, as ``file:line in function`` lines: code only, no values."""
    frames = traceback.extract_tb(exc.__traceback__)
    return [f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in frames]


@dataclass
class Stage:
    """The state and report of one run of one plugin."""

    name: str
    version: str
    inputdir: Path
    outputdir: Path
    parameters: dict[str, Any]
    strict: bool = False
    log: logging.Logger = field(init=False)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    usage_error: bool = False
    fatal: bool = False
    # How logs and the report name an input: by position and keyed hash, never by its
    # path, which may carry identity (see ctsvd_common.inputnames).
    names: InputNames = field(default_factory=InputNames)
    interrupted: interrupts.Interrupted | None = None
    # Where the outputs end up; ``outputdir`` is the staging folder inside it while the body runs.
    final_dir: Path | None = None
    _started: float = field(default_factory=time.perf_counter)
    _started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        self.log = logging.getLogger(self.name)

    def rel(self, path: str | os.PathLike) -> str:
        """How messages and reports name ``path``: an input by its label (never its path), an output
        relative to the output folder, a name the code gave ("tag-report") as it is."""
        p = Path(path)
        try:
            return self.names(p.relative_to(self.inputdir))
        except ValueError:
            pass
        for folder in (self.outputdir, self.final):   # the staging folder, or where its entries end up
            try:
                return str(p.relative_to(folder))
            except ValueError:
                pass
        # Elsewhere on disk (where a link points, say): labelled like an input, never shown.
        return self.names(p) if p.is_absolute() else str(p)

    def skip(self, path: str | os.PathLike, reason: str, **facts: Any) -> None:
        """Note an input passed over on purpose; not an error."""
        self.skipped.append({"file": self.rel(path), "reason": reason, **facts})
        self.log.warning("skipped %s: %s", self.rel(path), reason)

    def fail(self, path: str | os.PathLike, reason: str, exc: BaseException | None = None, **facts: Any) -> None:
        """Note an input that should have been processed but could not be.

        With ``exc``, the report keeps where in the code it was raised.
        """
        entry: dict[str, Any] = {"file": self.rel(path), "reason": reason, **facts}
        if exc is not None:
            entry["exception"] = type(exc).__name__
            entry["traceback"] = code_frames(exc)
        self.errors.append(entry)
        self.log.error("%s: %s", self.rel(path), reason)

    @contextlib.contextmanager
    def guard(self, path: str | os.PathLike, what: str = "input", **facts: Any) -> Iterator[None]:
        """Contain whatever goes wrong with one input (a file, a series) to that input.

        :class:`InputSkipped` and :class:`InputFailed` carry our own reasons;
        any other exception is a failure named by its type only.
        :class:`StageError` and interrupts pass through.
        """
        try:
            yield
        except InputSkipped as e:
            self.skip(path, str(e), **facts)
        except InputFailed as e:
            self.fail(path, str(e), **facts)
        except (StageError, KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:
            if (stop := interrupts.received()) is not None:
                raise stop from None   # an error raised while the interrupt unwound: the interrupt it is
            fault = output_fault(e, self.final)
            if fault is not None:
                raise StageError(fault) from None
            self.fail(path, f"unexpected error while processing this {what} ({type(e).__name__}); "
                            f"the report has where it happened", exc=e, **facts)

    def input_files(self) -> list[Path]:
        """The regular files of the input folder (see :mod:`ctsvd_common.walk`); every entry left out is
        skipped here, with its reason."""
        tree = walk.input_tree(self.inputdir)
        for path, reason in tree.left_out:
            self.skip(path, reason)
        return tree.files

    def output(self, path: str | os.PathLike, **facts: Any) -> None:
        self.outputs.append({"path": self.rel(path), **facts})

    @contextlib.contextmanager
    def timed(self, label: str) -> Iterator[None]:
        """Log the start and the duration of one step; keep the duration for the report."""
        self.log.info("%s ...", label)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            dt = time.perf_counter() - t0
            self.timings[label] = round(self.timings.get(label, 0.0) + dt, 3)
            self.log.info("%s done in %.2f s", label, dt)

    @property
    def final(self) -> Path:
        return self.final_dir if self.final_dir is not None else self.outputdir

    @property
    def report_path(self) -> Path:
        return self.final / f"{self.name}{REPORT_SUFFIX}"

    def exit_code(self) -> int:
        if self.interrupted is not None:
            return 128 + self.interrupted.signum
        if self.usage_error:
            return EXIT_USAGE
        if self.fatal or not self.outputs or (self.strict and self.errors):
            return EXIT_FAILED
        return EXIT_OK

    def status(self) -> str:
        code = self.exit_code()
        if self.interrupted is not None:
            return "interrupted"
        if code == EXIT_USAGE:
            return "usage-error"
        if code == EXIT_FAILED:
            return "failed"
        return "ok" if not self.errors else "ok-with-failures"

    def finish(self, folder: OutputFolder | None = None) -> int:
        """Write the report, then publish the staged outputs (unless the run was interrupted or a
        fatal error ended it: then nothing is published); return the exit code."""
        code = self.exit_code()
        elapsed = time.perf_counter() - self._started
        publish = folder is not None and self.interrupted is None and not self.fatal
        published = folder.staged() if publish else []
        if folder is not None and not publish:
            folder.discard()   # first: on a full disk, its space is what the report needs
        discarded = [] if publish or folder is None else self.outputs
        outputs = self.outputs if not discarded else []
        report = {
            "format": REPORT_FORMAT,
            "report_version": REPORT_VERSION,
            "stage": self.name,
            "version": self.version,
            "started": self._started_at,
            "seconds": round(elapsed, 3),
            "status": self.status(),
            "exit_code": code,
            "strict": self.strict,
            "parameters": self.parameters,
            # Inputs only: a run-ending error (file "") is in "errors" but is no input.
            "counts": {"outputs": len(outputs), "skipped": len(self.skipped),
                       "failed": sum(1 for e in self.errors if e["file"])},
            "summary": self.summary,
            "outputs": outputs,
            "skipped": self.skipped,
            "errors": self.errors,
            "timings": self.timings,
            # Every entry of the output folder this run made (besides this report): what --overwrite removes.
            "published": published,
        }
        if self.interrupted is not None:
            report["interrupted"] = self.interrupted.signal_name
        if discarded:
            report["discarded_outputs"] = len(discarded)
        try:
            atomic.write_json(self.report_path, report)
            if publish:
                folder.publish()
        except OSError as e:
            self.log.error("the report cannot be written: %s", output_fault(e, self.final) or type(e).__name__)
            return code if code != EXIT_OK else EXIT_FAILED
        parts = [f"{len(outputs)} output(s)", f"{len(self.skipped)} skipped", f"{report['counts']['failed']} failed"]
        if discarded:
            parts.append(f"{len(discarded)} finished output(s) discarded")
        verdict = ({EXIT_OK: "finished", EXIT_FAILED: "FAILED", EXIT_USAGE: "usage error"}.get(code)
                   or f"INTERRUPTED by {self.interrupted.signal_name}")
        self.log.info("%s in %.1f s: %s; report: %s", verdict, elapsed, ", ".join(parts), self.report_path.name)
        return code


def run_stage(name: str, version: str, settings: Any, inputdir: Path, outputdir: Path,
              body: Callable[[Stage], None]) -> int:
    """Run ``body`` as one stage and return the exit code the command should end with.

    ``settings`` are the run's parameters (see :func:`parameters_of`); the
    report lists them, and their :class:`Policy` decides strictness, the
    input map and whether an earlier run's outputs may be replaced.
    """
    configure_logging()
    parameters = parameters_of(settings)
    policy = getattr(settings, "policy", None) or Policy(
        **{f.name: parameters[f.name] for f in fields(Policy) if f.name in parameters})
    if parameters.get("input_map"):
        parameters["input_map"] = "(given, not shown)"   # the user's own path; not for the report
    stage = Stage(name, version, Path(inputdir), Path(outputdir), parameters, strict=policy.strict)
    # The input folder is not named: exports are often named after the patient.
    stage.log.info("%s %s: input folder -> %s", name, version, outputdir)
    folder = OutputFolder(Path(outputdir), name, stage.report_path.name)
    input_map = None
    with interrupts.signals_raise():
        try:
            try:
                if policy.input_map:
                    try:
                        input_map = check_map_path(policy.input_map, Path(outputdir))
                    except ValueError as e:
                        raise UsageError(str(e)) from None
                for note in folder.claim(policy.overwrite):
                    stage.log.info("%s", note)
                stage.final_dir, stage.outputdir = folder.final, folder.staging
                if not Path(inputdir).is_dir():
                    raise StageError("the input folder does not exist")
                body(stage)
                if (stop := interrupts.received()) is not None:
                    # The signal's exception was raised where Python drops it (a finalizer, such as
                    # py4j's, running when the signal came): the run was still told to stop.
                    raise stop
            except OutputInUse as e:
                # No report: the one in the folder belongs to the earlier run and says what it wrote.
                stage.log.error("%s", e)
                return EXIT_USAGE
            except (interrupts.Interrupted, KeyboardInterrupt) as e:
                _stopped(stage, e if isinstance(e, interrupts.Interrupted) else interrupts.Interrupted(2))
            except Exception as e:
                stop = interrupts.received()
                if stop is None:
                    _end(stage, e)
                else:   # e was raised while the interrupt unwound
                    _stopped(stage, stop)
            if input_map is not None:
                try:
                    stage.names.write_map(input_map)
                except OSError as e:
                    stage.fatal = True
                    stage.errors.append({"file": "", "reason": f"cannot write --input-map ({type(e).__name__})"})
                    stage.log.error("cannot write --input-map (%s)", type(e).__name__)
            with interrupts.deferred():
                return stage.finish(folder)
        finally:
            folder.discard()
            folder.release()


def _stopped(stage: Stage, stop: interrupts.Interrupted) -> None:
    stage.interrupted = stop
    stage.log.error("interrupted by %s: nothing is published, the staging folder is removed", stop.signal_name)


def _end(stage: Stage, e: Exception) -> None:
    """Record the exception that ended the body."""
    if isinstance(e, UsageError):
        stage.usage_error = True
        stage.errors.append({"file": "", "reason": str(e)})
        stage.log.error("%s", e)
        return
    stage.fatal = True
    reason = str(e) if isinstance(e, StageError) else output_fault(e, stage.final)
    if reason is not None:
        stage.errors.append({"file": "", "reason": reason})
        stage.log.error("%s", reason)
        return
    # A bug: one line in the log, the frames in the report.
    stage.errors.append({"file": "", "reason": f"unexpected error ({type(e).__name__})",
                         "exception": type(e).__name__, "traceback": code_frames(e)})
    stage.log.error("unexpected error (%s); the report has where it happened", type(e).__name__)


def reports_missing_input(parser: ArgumentParser) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Decorate a ``@chris_plugin`` main so that a missing input folder is reported, not just refused.

    chris_plugin checks the input folder itself and exits with "Not a
    directory" before any plugin code runs, so such a run leaves no report
    and a pipeline sees only the exit code. Placed above ``@chris_plugin``
    with the plugin's own parser, this reads the two folders from the command
    line first and, when the input folder is missing, calls the plugin's
    function directly: its :func:`run_stage` logs one line, writes the
    report and returns 1. Anything else (a valid input folder, a command
    line argparse would refuse) goes to chris_plugin as before.
    """
    probe = copy.deepcopy(parser)
    probe.add_argument("inputdir")
    probe.add_argument("outputdir")

    def decorate(command: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(command)
        def run(*args) -> int:
            if not args:   # the console command, not a call from Python
                try:   # silent: help, version and usage errors are chris_plugin's parse's to print
                    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                        options, rest = probe.parse_known_args()
                except SystemExit:
                    rest = ["(not a run)"]
                if rest in ([], ["--saveinputmeta"], ["--saveoutputmeta"],
                            ["--saveinputmeta", "--saveoutputmeta"]):
                    inputdir, outputdir = Path(options.inputdir), Path(options.outputdir)
                    try:   # chris_plugin would make it too, with a traceback when it cannot
                        outputdir.mkdir(parents=True, exist_ok=True)
                    except OSError as e:
                        name = errno.errorcode.get(e.errno or 0, type(e).__name__)
                        print(f"{outputdir}: cannot make the output folder ({name})", file=sys.stderr)
                        return EXIT_FAILED
                    if not inputdir.is_dir():
                        return command.__wrapped__(options, inputdir, outputdir)
            return command(*args)
        return run
    return decorate
