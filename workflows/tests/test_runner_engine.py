"""The local runner's --engine mode: how one node's container is launched.

The containers themselves run in tests/images (it needs docker or podman and the
built images); here, the command line each node gets.
"""

import os
from pathlib import Path

from ctsvd_local.pipeline import Node
from ctsvd_local.runner import Engine, Plugin


def test_a_node_runs_in_its_image_with_its_parents_output_on_incoming(tmp_path):
    engine = Engine("podman")
    plugin = Plugin("pl-svd-render", "0.1.0", Path("svd_render"),
                    {"use": {"flag": "--use", "action": "store"}}, engine.image("pl-svd-render", "0.1.0"))
    node = Node("render-local", "pl-svd-render", "0.1.0", "ssvd", {"use": "local"})
    argv = engine.argv(plugin.image, [*plugin.argv(node), "/incoming", "/outgoing"],
                       ((tmp_path / "ssvd", "/incoming", "ro"), (tmp_path / "render-local", "/outgoing", "rw")))
    user = "1000321:0" if os.getuid() == 0 else f"{os.getuid()}:{os.getgid()}"
    assert argv == ["podman", "run", "--rm", "--network", "none", "--user", user,
                    "-v", f"{tmp_path / 'ssvd'}:/incoming:ro", "-v", f"{tmp_path / 'render-local'}:/outgoing:rw",
                    "localhost/fnndsc/pl-svd-render:0.1.0", "svd_render", "--use", "local", "/incoming", "/outgoing"]


def test_the_image_names_follow_the_template():
    assert Engine("docker", "ghcr.io/me/{name}:{version}-rc").image("pl-dcm-anon", "0.1.0") \
        == "ghcr.io/me/pl-dcm-anon:0.1.0-rc"


def test_the_output_folder_is_made_writable_for_the_containers_user(tmp_path):
    out = tmp_path / "node"
    Engine("podman").prepare_output(out)
    assert out.is_dir()
    if os.getuid() == 0:  # the container runs as an arbitrary UID in group 0
        assert out.stat().st_mode & 0o070 == 0o070
