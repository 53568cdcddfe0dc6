"""Running a pipeline's nodes in their plugins' images, one container per node.

With docker or podman, a node runs as pfcon would run it: the plugin's image,
its parent's output mounted read-only on /incoming, its own folder on
/outgoing, ``selfexec [flags] /incoming /outgoing``, and no network (the
plugins only read and write files). The plugin's descriptor comes from
``chris_plugin_info`` inside the image, so the flags are the image's own.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path


class EngineError(Exception):
    """An image cannot serve a node; the message says which and why, in one line."""


@dataclass
class Engine:
    """A container engine (docker or podman) and the images' names, e.g. localhost/fnndsc/{name}:{version}."""
    program: str
    image_template: str = "localhost/fnndsc/{name}:{version}"

    def image(self, name: str, version: str) -> str:
        return self.image_template.format(name=name, version=version)

    def user(self) -> str:
        # Your own UID, so that the outputs are yours; as root, an arbitrary UID
        # in group 0, as OpenShift would give (the images are made for it).
        return f"{os.getuid()}:{os.getgid()}" if os.getuid() else "1000321:0"

    def argv(self, image: str, command: list[str], mounts: tuple[tuple[Path, str, str], ...] = ()) -> list[str]:
        """``program run`` of ``command`` in ``image``, with (source, target, mode) mounts."""
        volumes = [a for source, target, mode in mounts for a in ("-v", f"{source}:{target}:{mode}")]
        return [self.program, "run", "--rm", "--network", "none", "--user", self.user(), *volumes, image, *command]

    def descriptor(self, name: str, version: str) -> dict:
        """The ChRIS descriptor the image of ``name`` ``version`` makes of itself."""
        image = self.image(name, version)
        info = subprocess.run(self.argv(image, ["chris_plugin_info", "-d", image]), capture_output=True, text=True)
        if info.returncode != 0:
            last = (info.stderr.strip().splitlines() or ["no message"])[-1]
            raise EngineError(f"chris_plugin_info failed in {image}: {last}")
        descriptor = json.loads(info.stdout)
        if descriptor["version"] != version:
            raise EngineError(f"the pipeline asks for {name} v{version}, but {image} holds v{descriptor['version']}")
        return descriptor

    def node_command(self, image: str, plugin_argv: list[str], inputdir: Path, outputdir: Path) -> list[str]:
        """The command that runs one node; makes its output folder, writable by the container's user."""
        outputdir.mkdir(parents=True, exist_ok=True)
        if not os.getuid():
            outputdir.chmod(0o775)  # the container's user is in group 0
        return self.argv(image, [*plugin_argv, "/incoming", "/outgoing"],
                         ((inputdir, "/incoming", "ro"), (outputdir, "/outgoing", "rw")))
