"""``--spark-conf``: extra Spark settings, given once or several times.

Each value holds one or more settings ``spark.NAME=VALUE``. A comma starts a
new setting only where ``spark.NAME=`` follows it (spaces allowed); any
other comma belongs to the value. So values that are lists keep their commas
(``spark.jars=a.jar,b.jar``, ``spark.driver.extraJavaOptions=-Da=1,-Db=2``),
and the comma form of older pipelines, ``spark.a=1,spark.b=2``, still gives
two settings. The one value this cannot carry is one that itself holds
``,spark.NAME=``; no Spark setting needs such a value. Only ``spark.*`` names
are taken: Spark reads no others, so another name is a mistake to report.
A setting given twice keeps its last value.

Every value is checked as argparse reads it, and the values are kept as one
string, joined by commas: each starts with ``spark.NAME=``, so the join
reads back as the same settings, and ChRIS sees a plain ``str`` flag.
"""

from __future__ import annotations

import re
from argparse import ArgumentParser, Namespace, _StoreAction
from typing import Any

# A comma followed by the name of a Spark setting and "=": where one setting ends and the next begins.
_NEXT_SETTING = re.compile(r",[\s,]*(?=spark\.[^=,\s]+=)")
_SETTING = re.compile(r"spark\.[^=,\s]+=")
# Spaces and stray commas around a setting are not part of it, as in the comma form of old.
_ENDS = ", \t\r\n"


def parse_conf(text: str) -> dict[str, str]:
    """``"spark.a=1, spark.jars=x.jar,y.jar"`` → ``{"spark.a": "1", "spark.jars": "x.jar,y.jar"}``;
    ValueError when the text does not start with a setting."""
    text = text.strip(_ENDS)
    if text and not _SETTING.match(text):
        raise ValueError(f"expected spark.NAME=VALUE settings, got {text!r}")
    conf = {}
    for item in filter(None, _NEXT_SETTING.split(text)):
        key, _, value = item.partition("=")
        conf[key.strip()] = value.strip(_ENDS)
    return conf


class SparkConf(_StoreAction):
    """``--spark-conf``, repeatable: each value checked now, the values kept joined by commas."""

    def __call__(self, parser: ArgumentParser, namespace: Namespace, values: Any,
                 option_string: str | None = None) -> None:
        try:
            parse_conf(values)
        except ValueError as e:
            parser.error(f"argument {'/'.join(self.option_strings)}: {e}")
        setattr(namespace, self.dest, ",".join(filter(None, (getattr(namespace, self.dest), values))))
