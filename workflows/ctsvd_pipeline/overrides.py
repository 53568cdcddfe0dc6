"""Per-node parameter overrides from the command line: ``--set TITLE.PARAM=VALUE``.

The value is read as the parameter's declared type (the descriptor's int,
float, bool or str), so ``--set render-auto.rank=10`` gives the string "10"
that the file would have to quote, and ``--set ssvd.k=thirty`` is refused.
"""

from __future__ import annotations

from typing import Any

from ctsvd_pipeline.pipeline import Pipeline

_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")


class OverrideError(ValueError):
    """An override names no node or parameter, or its value is not of the parameter's type."""


def parse(text: str) -> tuple[str, str, str]:
    """'TITLE.PARAM=VALUE' → (title, param, value); titles may hold dots, parameter names do not."""
    target, sep, value = text.partition("=")
    title, dot, param = target.rpartition(".")
    if not sep or not dot or not title or not param:
        raise OverrideError(f"--set {text}: expected TITLE.PARAM=VALUE, e.g. ssvd.k=30")
    return title, param, value


def typed(declared: str, value: str) -> Any:
    try:
        if declared == "int":
            return int(value)
        if declared == "float":
            return float(value)
    except ValueError:
        raise OverrideError(f"expected {'an integer' if declared == 'int' else 'a number'}, got {value!r}") from None
    if declared == "bool":
        if value.lower() not in _TRUE + _FALSE:
            raise OverrideError(f"expected true or false, got {value!r}")
        return value.lower() in _TRUE
    return value


def apply(pipeline: Pipeline, assignments: list[str], parameters: dict[str, dict[str, dict]]) -> dict[str, dict]:
    """Set each TITLE.PARAM=VALUE on its node; parameters maps a node title to its plugin's
    descriptor parameters by name. Returns what was set, by title, for the run's record."""
    nodes = {n.title: n for n in pipeline.nodes}
    done: dict[str, dict] = {}
    for text in assignments:
        title, param, value = parse(text)
        if title not in nodes:
            raise OverrideError(f"--set {text}: no node titled {title!r} (nodes: {', '.join(nodes)})")
        declared = parameters[title].get(param)
        if declared is None:
            raise OverrideError(f"--set {text}: {nodes[title].plugin_name} has no parameter {param!r} "
                                f"(it has: {', '.join(sorted(parameters[title]))})")
        try:
            nodes[title].defaults[param] = done.setdefault(title, {})[param] = typed(declared["type"], value)
        except OverrideError as e:
            raise OverrideError(f"--set {text}: {param} {e}") from None
    return done
