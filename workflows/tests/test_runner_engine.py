"""The local runner's --engine mode: how one node's container is launched.

The containers themselves run in tests/images (it needs docker or podman and the
built images); here, the command line each node gets.
"""

import os
from pathlib import Path

from ctsvd_pipeline.engine import Engine
from ctsvd_pipeline.pipeline import Node
from ctsvd_pipeline.runner import Plugin


def test_a_node_runs_in_its_image_with_its_parents_output_on_incoming(tmp_path):
    engine = Engine("podman")
    plugin = Plugin("pl-svd-render", "0.1.0", Path("svd_render"),
                    {"use": {"flag": "--use", "action": "store"}}, engine.image("pl-svd-render", "0.1.0"))
    node = Node("render-local", "pl-svd-render", "0.1.0", "ssvd", {"use": "local"})
    argv = engine.node_command(plugin.image, plugin.argv(node), tmp_path / "ssvd", tmp_path / "render-local")
    user = "1000321:0" if os.getuid() == 0 else f"{os.getuid()}:{os.getgid()}"
    assert argv == ["podman", "run", "--rm", "--network", "none", "--user", user,
                    "-v", f"{tmp_path / 'ssvd'}:/incoming:ro", "-v", f"{tmp_path / 'render-local'}:/outgoing:rw",
                    "localhost/fnndsc/pl-svd-render:0.1.0", "svd_render", "--use", "local", "/incoming", "/outgoing"]
    # The output folder exists before the engine mounts it, writable by the container's user.
    assert (tmp_path / "render-local").is_dir()
    if os.getuid() == 0:  # an arbitrary UID in group 0
        assert (tmp_path / "render-local").stat().st_mode & 0o070 == 0o070


def test_the_image_names_follow_the_template():
    assert Engine("docker", "ghcr.io/me/{name}:{version}-rc").image("pl-dcm-anon", "0.1.0") \
        == "ghcr.io/me/pl-dcm-anon:0.1.0-rc"
