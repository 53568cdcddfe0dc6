"""One run of a plugin: progress logging, the run report and a truthful exit code.

Every plugin body receives a :class:`Stage`. Inputs that are passed over on
purpose (a README among the DICOM files) are *skipped*; inputs that should
have been processed but could not be (a truncated file) are *errors*. Each
gets one log line naming the file and the reason. The run goes on with the
rest, and at the end the stage writes ``<name>.report.json`` and returns

* ``0`` when every input was processed,
* ``1`` when any input failed or nothing usable was found (the report and
  the log say which and why; every output that was written is complete),
* ``2`` for a command-line usage error (argparse's own convention).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from ctsvd_common import atomic
from ctsvd_common.contract import REPORT_SUFFIX

EXIT_OK = 0
EXIT_FAILED = 1

_LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"


class StageError(Exception):
    """A problem that ends the run. Its message is shown as one line, without a traceback."""


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


@dataclass
class Stage:
    """The state and report of one run of one plugin."""

    name: str
    version: str
    inputdir: Path
    outputdir: Path
    parameters: dict[str, Any]
    log: logging.Logger = field(init=False)
    skipped: list[dict[str, str]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    _started: float = field(default_factory=time.perf_counter)
    _started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        self.log = logging.getLogger(self.name)

    def rel(self, path: str | os.PathLike) -> str:
        """``path`` relative to the input folder, as messages and reports name it."""
        p = Path(path)
        for base in (self.inputdir, self.outputdir):
            try:
                return str(p.relative_to(base))
            except ValueError:
                pass
        return str(p)

    def skip(self, path: str | os.PathLike, reason: str) -> None:
        """Note an input passed over on purpose; not an error."""
        self.skipped.append({"file": self.rel(path), "reason": reason})
        self.log.warning("skipped %s: %s", self.rel(path), reason)

    def fail(self, path: str | os.PathLike, reason: str) -> None:
        """Note an input that should have been processed but could not be."""
        self.errors.append({"file": self.rel(path), "reason": reason})
        self.log.error("%s: %s", self.rel(path), reason)

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
    def report_path(self) -> Path:
        return self.outputdir / f"{self.name}{REPORT_SUFFIX}"

    def finish(self) -> int:
        code = EXIT_FAILED if self.errors else EXIT_OK
        elapsed = time.perf_counter() - self._started
        report = {
            "stage": self.name,
            "version": self.version,
            "started": self._started_at,
            "seconds": round(elapsed, 3),
            "status": "ok" if code == EXIT_OK else "failed",
            "exit_code": code,
            "parameters": self.parameters,
            "summary": self.summary,
            "outputs": self.outputs,
            "skipped": self.skipped,
            "errors": self.errors,
            "timings": self.timings,
        }
        atomic.write_json(self.report_path, report)
        parts = [f"{len(self.outputs)} output(s)"]
        if self.skipped:
            parts.append(f"{len(self.skipped)} skipped")
        if self.errors:
            parts.append(f"{len(self.errors)} error(s)")
        self.log.info("%s in %.1f s: %s; report: %s", "finished" if code == EXIT_OK else "FAILED",
                      elapsed, ", ".join(parts), self.report_path.name)
        return code


def run_stage(name: str, version: str, options: Any, inputdir: Path, outputdir: Path,
              body: Callable[[Stage], None]) -> int:
    """Run ``body`` as one stage and return the exit code the command should end with."""
    configure_logging()
    parameters = {k: v for k, v in vars(options).items()
                  if k not in ("inputdir", "outputdir", "saveinputmeta", "saveoutputmeta")}
    stage = Stage(name, version, Path(inputdir), Path(outputdir), parameters)
    stage.log.info("%s %s: %s -> %s", name, version, inputdir, outputdir)
    try:
        body(stage)
    except StageError as e:
        stage.errors.append({"file": "", "reason": str(e)})
        stage.log.error("%s", e)
    return stage.finish()
