"""Command-line flags the suite's plugins share: validated numbers, choices and ``--version``.

A flag's value is checked where argparse parses it, so every plugin refuses
a bad value the same way: one line, ``argument --k: expected a whole number
of 1 or more, got '0'``, after the usage line, with exit code 2, before any
plugin code runs. The checks are argparse actions that store like the
built-in ``store`` action, so chris_plugin still serialises them into the
plugin's descriptor with their plain ``int``/``float``/``str`` type::

    parser.add_argument("--k", type=int, default=50, action=Whole, minimum=1)
    parser.add_argument("--padding-hu", type=float, default=-1024.0, action=Finite)
    add_version(parser, "pl-dicom2matrix")

Choices use argparse's own ``choices=``: chris_plugin lists them in the
flag's help that the ChRIS UI shows.
"""

from __future__ import annotations

import math
from argparse import Action, ArgumentParser, Namespace, _StoreAction
from importlib import metadata
from typing import Any

__all__ = ["Finite", "Whole", "add_version", "distribution_version"]


class _Checked(_StoreAction):
    """A ``store`` action whose value must pass :meth:`problem`."""

    def __call__(self, parser: ArgumentParser, namespace: Namespace, values: Any,
                 option_string: str | None = None) -> None:
        what = self.problem(values)
        if what is not None:
            parser.error(f"argument {'/'.join(self.option_strings)}: expected {what}, got {str(values)!r}")
        setattr(namespace, self.dest, values)

    def problem(self, value: Any) -> str | None:
        raise NotImplementedError


class Whole(_Checked):
    """A whole number from ``minimum`` (default 0) to ``maximum`` (default none)."""

    def __init__(self, *args: Any, minimum: int = 0, maximum: int | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("type", int)
        super().__init__(*args, **kwargs)
        self.minimum, self.maximum = minimum, maximum

    def problem(self, value: int) -> str | None:
        if value < self.minimum or (self.maximum is not None and value > self.maximum):
            return _range("a whole number", self.minimum, self.maximum)
        return None


class Finite(_Checked):
    """A finite number (not NaN or infinity), within the bounds when they are given.

    ``below`` is an upper bound the value may not reach (``--percent-removed``:
    removing 100 % would leave nothing).
    """

    def __init__(self, *args: Any, minimum: float | None = None, maximum: float | None = None,
                 below: float | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("type", float)
        super().__init__(*args, **kwargs)
        self.minimum, self.maximum, self.below = minimum, maximum, below

    def problem(self, value: float) -> str | None:
        if (not math.isfinite(value) or (self.minimum is not None and value < self.minimum)
                or (self.maximum is not None and value > self.maximum)
                or (self.below is not None and value >= self.below)):
            if self.below is not None:
                low = "" if self.minimum is None else f" from {self.minimum:g}"
                return f"a finite number{low} below {self.below:g}"
            return _range("a finite number", self.minimum, self.maximum)
        return None


def _range(kind: str, minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f"{kind} from {minimum:g} to {maximum:g}"
    if minimum is not None:
        return f"{kind} of {minimum:g} or more"
    if maximum is not None:
        return f"{kind} of {maximum:g} or less"
    return kind


def distribution_version(distribution: str) -> str:
    """The installed version of ``distribution``: the one place a plugin's version is written is its
    pyproject.toml."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:   # imported from a source tree that was never installed
        return "0+unknown"


def add_version(parser: ArgumentParser, distribution: str) -> Action:
    """``-V``/``--version``: print the plugin's name and version and exit 0 (not a ChRIS parameter)."""
    return parser.add_argument("-V", "--version", action="version",
                               version=f"{distribution} {distribution_version(distribution)}")
