"""The plugins' ChRIS descriptors, as the images make them.

CUBE registers a plugin from the JSON that ``chris_plugin_info`` prints, and
builds every job's command from three of its fields: ``execshell``,
``selfpath`` and ``selfexec``. chris_plugin derives the first two from where it
runs (``sys.executable`` and the folder ``shutil.which`` finds the console
command in), so a descriptor made in ``.venv`` names ``.venv`` paths that do not
exist in the images. In the images everything is installed under /usr/local,
where the same code gives /usr/local/bin and /usr/local/bin/python3: those are
what the checked-in descriptors say.

``public_repo`` is not read from package metadata by chris_plugin 0.4.0 (it
defaults to ``https://github.com/<image repo>``); we pass it the plugin's
``Project-URL: Source`` (set in its setup.py), which must lie under
SUITE_REPOSITORY.

    ctsvd-pipeline descriptors            rewrite descriptors/*.json (package data)
    ctsvd-pipeline descriptors --check    exit 1, naming the fields, if they differ
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from ctsvd_common import atomic
from ctsvd_pipeline import files

# The suite's source repository: the one place that names it. Each plugin's
# setup.py says SUITE_REPOSITORY/tree/main/<plugin>; tests hold them to it.
SUITE_REPOSITORY = "https://github.com/FNNDSC/ct-svd-denoise"
PLUGINS = ("pl-dcm-anon", "pl-dicom2matrix", "pl-ssvd-denoise", "pl-svd-render")
# The name the images are built under (see each Dockerfile); registration can
# point dock_image at another registry (ctsvd-chris register --image-prefix).
IMAGE_PREFIX = "localhost/fnndsc"
IMAGE_BIN = "/usr/local/bin"
IMAGE_PYTHON = f"{IMAGE_BIN}/python3"

BIN = Path(sys.executable).parent
# chris_plugin_info looks the console command up on PATH.
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


class DescriptorError(Exception):
    """A descriptor cannot be made or read; the message says which and why."""


def source_url(plugin: str) -> str:
    urls = dict(u.split(", ", 1) for u in metadata.metadata(plugin).get_all("Project-URL") or [])
    if "Source" not in urls:
        raise DescriptorError(f"{plugin}: no 'Source' Project-URL in its metadata (see its setup.py)")
    return urls["Source"]


def dock_image(plugin: str, version: str, prefix: str = IMAGE_PREFIX) -> str:
    return f"{prefix.rstrip('/')}/{plugin}:{version}"


def make(plugin: str) -> dict[str, Any]:
    """The descriptor of the installed ``plugin``, with the paths it has in its image."""
    version = metadata.version(plugin)
    info = subprocess.run([str(BIN / "chris_plugin_info"), "--public-repo", source_url(plugin),
                           "-d", dock_image(plugin, version), plugin],
                          capture_output=True, text=True, env=ENV)
    if info.returncode != 0:
        last = (info.stderr.strip().splitlines() or ["no message"])[-1]
        raise DescriptorError(f"chris_plugin_info failed for {plugin}: {last}")
    descriptor = json.loads(info.stdout)
    return in_image(descriptor, Path(descriptor["selfpath"]), Path(descriptor["execshell"]))


def in_image(descriptor: dict[str, Any], selfpath: Path, execshell: Path) -> dict[str, Any]:
    """Swap the paths of the environment the descriptor was made in for the image's.

    Only the expected paths are swapped: a descriptor made elsewhere is refused
    rather than silently rewritten.
    """
    if selfpath != BIN or execshell.parent != BIN:
        raise DescriptorError(f"{descriptor['name']}: made outside {BIN} "
                              f"(selfpath {selfpath}, execshell {execshell})")
    return {**descriptor, "selfpath": IMAGE_BIN, "execshell": IMAGE_PYTHON}


def path_of(plugin: str) -> Path:
    return files.DESCRIPTORS / f"{plugin}.json"


def load(plugin: str) -> dict[str, Any]:
    try:
        return json.loads(path_of(plugin).read_text())
    except (OSError, ValueError) as e:
        raise DescriptorError(f"{path_of(plugin)}: cannot read the descriptor ({type(e).__name__})") from None


def load_all() -> dict[tuple[str, str], dict[str, Any]]:
    """The checked-in descriptors, by (name, version)."""
    out = {}
    for plugin in PLUGINS:
        d = load(plugin)
        out[(d["name"], d["version"])] = d
    return out


def differences(checked_in: dict[str, Any], made: dict[str, Any]) -> list[str]:
    """Field by field (parameters by name), what the checked-in descriptor gets wrong."""
    out = []
    for key in sorted(set(checked_in) | set(made)):
        if key == "parameters":
            old = {p["name"]: p for p in checked_in.get(key, [])}
            new = {p["name"]: p for p in made.get(key, [])}
            out += [f"parameter {n}: {'missing' if n not in old else 'not declared' if n not in new else 'differs'}"
                    for n in sorted(set(old) | set(new)) if old.get(n) != new.get(n)]
        elif checked_in.get(key) != made.get(key):
            out.append(f"{key}: {checked_in.get(key)!r} here, {made.get(key)!r} in the code")
    return out


def write_all(check: bool = False, say=print) -> int:
    """Make every descriptor; write it (or, with check, compare it). Exit status."""
    status = 0
    for plugin in PLUGINS:
        made = make(plugin)
        if check:
            try:
                diff = differences(load(plugin), made)
            except DescriptorError as e:
                diff = [str(e)]
            for line in diff:
                say(f"{path_of(plugin)}: {line}")
            status |= bool(diff)
        else:
            atomic.write_text(path_of(plugin), json.dumps(made, indent=2) + "\n")
            say(f"wrote {path_of(plugin)}")
    if check and status:
        say("descriptors are stale: run scripts/make-descriptors")
    return status
