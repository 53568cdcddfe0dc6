"""What CUBE's API serves for each kind of item, read from CUBE's own serializers in ../shared/chris.

CUBE renders every item as collection+json: the fields of its serializer's
``Meta.fields``, the hyperlinked ones (``HyperlinkedRelatedField``,
``HyperlinkedIdentityField``, CUBE's ``ItemLinkField``) as links named after
the field, ``url`` as the item's href, the rest as data. This module reads the
serializers' source with ``ast`` (nothing of CUBE is imported or run), so that
tests can hold the fake CUBE to the real one.
"""

from __future__ import annotations

import ast
import tarfile
from dataclasses import dataclass
from pathlib import Path

from ctsvd_testdata.shared import SHARED

LINK_FIELDS = {"HyperlinkedRelatedField", "HyperlinkedIdentityField", "ItemLinkField"}


@dataclass(frozen=True)
class Shape:
    data: frozenset[str]    # the item's data names
    links: frozenset[str]   # the item's link relations


def cube_archive(shared: Path = SHARED / "chris") -> Path | None:
    found = sorted(shared.glob("ChRIS_ultron_backEnd-*.tar.gz")) if shared.is_dir() else []
    return found[-1] if found else None


def _call_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        f = node.func
        return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
    return None


class _Classes:
    def __init__(self, sources: dict[str, str]):
        self.classes: dict[str, ast.ClassDef] = {}
        for path, text in sources.items():
            for node in ast.parse(text, path).body:
                if isinstance(node, ast.ClassDef):
                    self.classes.setdefault(node.name, node)

    def declared(self, name: str) -> dict[str, str]:
        """field → the class it is made of, from the class and its bases (bases first)."""
        cls = self.classes.get(name)
        if cls is None:
            return {}
        fields: dict[str, str] = {}
        for base in cls.bases:
            if isinstance(base, ast.Name):
                fields.update(self.declared(base.id))
        for stmt in cls.body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                kind = _call_name(stmt.value)
                if kind:
                    fields[stmt.targets[0].id] = kind
        return fields

    def meta_fields(self, name: str) -> tuple[str, ...]:
        cls = self.classes[name]
        for stmt in cls.body:
            if isinstance(stmt, ast.ClassDef) and stmt.name == "Meta":
                for s in stmt.body:
                    if isinstance(s, ast.Assign) and getattr(s.targets[0], "id", None) == "fields":
                        return self._tuple(s.value)
        for base in cls.bases:  # Meta inherited whole
            if isinstance(base, ast.Name) and base.id in self.classes:
                return self.meta_fields(base.id)
        raise KeyError(f"{name} has no Meta.fields")

    def _tuple(self, node: ast.AST) -> tuple[str, ...]:
        if isinstance(node, (ast.Tuple, ast.List)):
            return tuple(e.value for e in node.elts if isinstance(e, ast.Constant))
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self._tuple(node.left) + self._tuple(node.right)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):  # Base.Meta.fields
            return self.meta_fields(node.value.value.id)
        raise ValueError(f"Meta.fields not understood: {ast.dump(node)}")


def shapes(archive: Path, names: set[str]) -> dict[str, Shape]:
    """The shape of the items each named serializer renders."""
    sources = {}
    with tarfile.open(archive) as t:
        for m in t.getmembers():
            if m.isfile() and m.name.endswith(("serializers.py", "fields.py")) and "/tests/" not in m.name:
                sources[m.name] = t.extractfile(m).read().decode()
    classes = _Classes(sources)
    out = {}
    for name in names:
        declared, fields = classes.declared(name), classes.meta_fields(name)
        links = {f for f in fields if f != "url" and declared.get(f) in LINK_FIELDS}
        out[name] = Shape(frozenset(set(fields) - links - {"url"}), frozenset(links))
    return out
