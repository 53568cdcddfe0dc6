"""A renderer of exactly the kustomize subset that openshift/ uses.

``kubectl kustomize`` is not installable from the registries the suite uses,
so the tests render the overlays with this, and check it against
``kubectl kustomize`` wherever that is on PATH. Supported, per kustomization:

* ``resources``: YAML files (one or more documents) and folders holding a
  kustomization, rendered recursively;
* ``patches``: strategic-merge patches, inline (``patch``) or from a file
  (``path``), applied to the resource they name or to every resource a
  ``target`` (kind, name, namespace) selects;
* ``namespace``: set on every namespaced object and, as kustomize 5 does, as
  the name of a Namespace object and on RoleBinding subjects named ``default``;
* ``labels`` with ``includeSelectors: false`` and no ``includeTemplates``:
  added to each object's own ``metadata.labels``;
* ``images``: ``newName``, ``newTag`` and ``digest`` for the containers and
  init containers of pods, pod templates and job templates.

Anything else raises :class:`Unsupported`, so a new feature in openshift/ makes
the tests fail until it is implemented here, rather than being skipped.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
KNOWN_FIELDS = {"apiVersion", "kind", "resources", "patches", "namespace", "labels", "images"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "PersistentVolume", "StorageClass", "PriorityClass", "SecurityContextConstraints"}

# Strategic merge: lists of these fields merge element by element on a key
# (the x-kubernetes-patch-merge-key of the Kubernetes API); other lists are replaced.
MERGE_KEYS = {"containers": "name", "initContainers": "name", "volumes": "name", "env": "name",
              "volumeMounts": "mountPath", "ports": "containerPort", "imagePullSecrets": "name"}

# Where kustomize's image transformer looks for pod specs.
POD_SPEC_PATHS = (("spec",), ("spec", "template", "spec"), ("spec", "jobTemplate", "spec", "template", "spec"))


class Unsupported(ValueError):
    """The kustomization uses a feature this renderer does not implement."""


def render(folder: Path) -> list[dict]:
    """The objects ``kubectl kustomize folder`` would print, in file order."""
    folder = Path(folder)
    kust = _load_kustomization(folder)
    objects: list[dict] = []
    for entry in kust.get("resources", []):
        path = folder / entry
        objects += render(path) if path.is_dir() else _load_documents(path)
    for patch in kust.get("patches", []):
        _apply_patch(objects, patch, folder)
    if "namespace" in kust:
        _set_namespace(objects, kust["namespace"])
    for label_set in kust.get("labels", []):
        _add_labels(objects, label_set)
    for image in kust.get("images", []):
        _set_image(objects, image)
    return objects


def _load_kustomization(folder: Path) -> dict:
    for name in KUSTOMIZATION_NAMES:
        if (folder / name).is_file():
            kust = yaml.safe_load((folder / name).read_text()) or {}
            unknown = set(kust) - KNOWN_FIELDS
            if unknown:
                raise Unsupported(f"{folder / name}: fields not supported here: {sorted(unknown)}")
            return kust
    raise FileNotFoundError(f"{folder}: no kustomization file")


def _load_documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _apply_patch(objects: list[dict], entry: dict, folder: Path) -> None:
    unknown = set(entry) - {"path", "patch", "target"}
    if unknown:
        raise Unsupported(f"patch options not supported here: {sorted(unknown)}")
    text = (folder / entry["path"]).read_text() if "path" in entry else entry["patch"]
    patch = yaml.safe_load(text)
    if not isinstance(patch, dict) or "kind" not in patch:
        raise Unsupported("only strategic-merge patches (a partial object with its kind) are supported")
    target = entry.get("target")
    if target is None:
        target = {"kind": patch["kind"], "name": patch["metadata"]["name"]}
    unknown = set(target) - {"kind", "name", "namespace"}
    if unknown:
        raise Unsupported(f"patch target selectors not supported here: {sorted(unknown)}")
    matched = [obj for obj in objects if _matches(obj, target)]
    if not matched:
        raise ValueError(f"patch target {target} matches no resource")
    body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind")}
    if "target" in entry:  # with an explicit target the patch's own name is ignored
        body.get("metadata", {}).pop("name", None)
    for obj in matched:
        merged = strategic_merge(obj, body)
        obj.clear()
        obj.update(merged)


def _matches(obj: dict, target: dict) -> bool:
    meta = obj.get("metadata", {})
    return all(
        (key == "kind" and obj.get("kind") == value)
        or (key in ("name", "namespace") and meta.get(key) == value)
        for key, value in target.items()
    )


def strategic_merge(original, patch, field: str | None = None):
    """``patch`` merged into a copy of ``original``: maps recursively, keyed lists by
    their merge key, other lists and scalars replaced, ``null`` deletes."""
    if isinstance(original, dict) and isinstance(patch, dict):
        result = copy.deepcopy(original)
        for key, value in patch.items():
            if value is None:
                result.pop(key, None)
            elif key in result:
                result[key] = strategic_merge(result[key], value, key)
            else:
                result[key] = copy.deepcopy(value)
        return result
    if isinstance(original, list) and isinstance(patch, list) and field in MERGE_KEYS:
        key = MERGE_KEYS[field]
        result = copy.deepcopy(original)
        for item in patch:
            if isinstance(item, dict) and "$patch" in item:
                raise Unsupported("$patch directives are not supported here")
            index = next((i for i, old in enumerate(result) if old.get(key) == item.get(key)), None)
            if index is None:
                result.append(copy.deepcopy(item))
            else:
                result[index] = strategic_merge(result[index], item)
        return result
    return copy.deepcopy(patch)


def _set_namespace(objects: list[dict], namespace: str) -> None:
    for obj in objects:
        if obj.get("kind") == "Namespace":
            obj.setdefault("metadata", {})["name"] = namespace
        elif obj.get("kind") not in CLUSTER_SCOPED:
            obj.setdefault("metadata", {})["namespace"] = namespace
        if obj.get("kind") in ("RoleBinding", "ClusterRoleBinding"):
            for subject in obj.get("subjects", []):
                if subject.get("name") == "default":
                    subject["namespace"] = namespace


def _add_labels(objects: list[dict], label_set: dict) -> None:
    if label_set.get("includeSelectors", False) or label_set.get("includeTemplates", False):
        raise Unsupported("labels with includeSelectors or includeTemplates are not supported here")
    for obj in objects:
        obj.setdefault("metadata", {}).setdefault("labels", {}).update(label_set["pairs"])


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """``registry:5000/a/b:tag@sha256:...`` → (name, tag, digest)."""
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1:], digest or None
    return name, None, digest or None


def _set_image(objects: list[dict], rule: dict) -> None:
    unknown = set(rule) - {"name", "newName", "newTag", "digest"}
    if unknown:
        raise Unsupported(f"image options not supported here: {sorted(unknown)}")
    for obj in objects:
        for path in POD_SPEC_PATHS:
            spec = obj
            for step in path:
                spec = spec.get(step) if isinstance(spec, dict) else None
            if not isinstance(spec, dict):
                continue
            for container in spec.get("containers", []) + spec.get("initContainers", []):
                name, tag, digest = split_image(container.get("image", ""))
                if name != rule["name"]:
                    continue
                name = rule.get("newName", name)
                if "digest" in rule:
                    container["image"] = f"{name}@{rule['digest']}"
                else:
                    tag = rule.get("newTag", tag)
                    container["image"] = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
