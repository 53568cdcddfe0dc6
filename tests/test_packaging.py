"""What CUBE and Docker will see of each plugin, checked statically (no engine runs here)."""

import json
import re
import subprocess
import tomllib

import pytest
import yaml

from conftest import BIN, ENV, PLUGINS, ROOT


@pytest.fixture(scope="module", params=sorted(PLUGINS))
def descriptor(request):
    dist = request.param
    version = tomllib.loads((ROOT / dist / "pyproject.toml").read_text())["project"]["version"]
    proc = subprocess.run([str(BIN / "chris_plugin_info"), "-d", f"docker.io/fnndsc/{dist}:{version}", dist],
                          capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr
    return dist, version, json.loads(proc.stdout)


def test_descriptor_names_the_command_and_is_ds(descriptor):
    dist, version, info = descriptor
    assert info["type"] == "ds"
    assert info["selfexec"] == PLUGINS[dist]
    assert info["name"] == dist and info["version"] == version
    assert info["dock_image"] == f"docker.io/fnndsc/{dist}:{version}"
    assert info["min_memory_limit"] and info["min_cpu_limit"]
    assert info["authors"] == "CT SVD-denoise team <dev@ctsvd.invalid>"
    assert info["documentation"].endswith(f"/{dist}#readme") and info["license"] == "MIT"
    for p in info["parameters"]:
        assert p["flag"].startswith("--") and p["help"], p
        assert p["type"] in ("str", "int", "float", "bool"), p
        assert p["default"] is not None, f"{p['name']} needs a default for CUBE"


@pytest.mark.parametrize("dist", sorted(PLUGINS))
def test_dockerfile_builds_this_plugin_from_the_repository_root(dist):
    text = (ROOT / dist / "Dockerfile").read_text()
    assert re.search(r"^FROM docker\.io/library/python:3\.11[\w.-]*-slim", text, re.M)
    copies = re.findall(r"^COPY (\S+) ", text, re.M)
    assert copies == ["ctsvd-common", dist]
    assert all((ROOT / c / "pyproject.toml").exists() for c in copies)
    assert re.search(rf'^CMD \["{PLUGINS[dist]}"\]$', text, re.M)
    scripts = tomllib.loads((ROOT / dist / "pyproject.toml").read_text())["project"]["scripts"]
    assert list(scripts) == [PLUGINS[dist]]
    if dist == "pl-ssvd-denoise":
        assert "openjdk-17-jre-headless" in text and "procps" in text


def test_dependencies_are_pinned_to_ranges():
    for folder in [*PLUGINS, "ctsvd-common", "workflows"]:
        project = tomllib.loads((ROOT / folder / "pyproject.toml").read_text())["project"]
        deps = project["dependencies"] + sum(project.get("optional-dependencies", {}).values(), [])
        for dep in deps:
            assert re.search(r"(==|<)", dep), f"{folder}: {dep} has no upper bound"


def test_pipeline_file_names_real_plugins_and_parameters():
    doc = yaml.safe_load((ROOT / "workflows" / "ct-denoise.yml").read_text())
    names = {}
    for dist in PLUGINS:
        version = tomllib.loads((ROOT / dist / "pyproject.toml").read_text())["project"]["version"]
        info = json.loads(subprocess.run([str(BIN / "chris_plugin_info"), "-d", f"docker.io/fnndsc/{dist}:{version}",
                                          dist], capture_output=True, text=True, env=ENV, check=True).stdout)
        names[f"{dist} v{version}"] = {p["name"] for p in info["parameters"]}
    titles = [n["title"] for n in doc["plugin_tree"]]
    assert len(titles) == len(set(titles))
    assert sum(n["previous"] is None for n in doc["plugin_tree"]) == 1
    for node in doc["plugin_tree"]:
        assert node["plugin"] in names, node["plugin"]
        assert node["previous"] is None or node["previous"] in titles
        assert set(node.get("plugin_parameter_defaults", {})) <= names[node["plugin"]], node["title"]
    # One SVD node feeds several renders: the comparison of ranks the original figure made.
    assert sum(n["previous"] == "ssvd" for n in doc["plugin_tree"]) >= 3
