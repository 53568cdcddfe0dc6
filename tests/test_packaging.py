"""What CUBE and Docker will see of each plugin, checked statically (no engine runs here)."""

import fnmatch
import json
import re
import subprocess
import sys
import tomllib

import pytest
import yaml

from ctsvd_pipeline.files import DEFAULT_PIPELINE

from conftest import BIN, ENV, PLUGINS, ROOT


def _descriptor(dist: str) -> dict:
    version = tomllib.loads((ROOT / dist / "pyproject.toml").read_text())["project"]["version"]
    proc = subprocess.run([str(BIN / "chris_plugin_info"), "-d", f"docker.io/fnndsc/{dist}:{version}", dist],
                          capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def descriptor_of():
    return _descriptor


@pytest.fixture(scope="module", params=sorted(PLUGINS))
def descriptor(request):
    info = _descriptor(request.param)
    return request.param, info["version"], info


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


def _dockerfile(dist: str) -> tuple[str, str, str]:
    """The Dockerfile's text, its build stage and its final stage."""
    text = (ROOT / dist / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)
    assert len(stages) == 3, f"{dist}: expected a wheel-building stage and the image's stage"
    return text, stages[1], stages[2]


def _instructions(stage: str) -> list[str]:
    """The stage's instructions, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", "\n".join(l for l in stage.splitlines() if not l.lstrip().startswith("#")))
    return [l.strip() for l in joined.splitlines() if l.strip()]


@pytest.mark.parametrize("dist", sorted(PLUGINS))
def test_dockerfile_has_the_templates_shape(dist, descriptor_of):
    text, build, final = _dockerfile(dist)
    # The base is an argument, a current slim Debian Python by default (the tested 3.11 or newer).
    base = re.search(r"^ARG BASE=docker\.io/library/python:3\.(\d+)-slim-bookworm$", text, re.M)
    assert base and int(base[1]) >= 11
    assert build.startswith("${BASE} AS wheels\n") and final.startswith("${BASE}\n")
    # The source is copied into the build stage only, from the repository root (the context):
    # the shared library beside the plugin; only wheels and the requirement list leave it.
    assert re.findall(r"^COPY (\S+) ", build, re.M) == ["scripts/image-requirements", "ctsvd-common", dist]
    steps = _instructions(final)
    copies = [s for s in steps if s.startswith("COPY ")]
    assert all(c.startswith("COPY --from=wheels ") or c.startswith(f"COPY {dist}/tag-report-requirements.txt ")
               for c in copies), copies
    # Dependencies first, in a layer of their own, then the wheels; each copied file is removed
    # in the same step that uses it.
    deps = steps.index("COPY --from=wheels /requirements.txt /tmp/requirements.txt")
    wheels = steps.index("COPY --from=wheels /wheels /tmp/wheels")
    assert deps < wheels
    assert steps[deps + 1].startswith("RUN pip install") and "-r /tmp/requirements.txt" in steps[deps + 1]
    assert "&& rm /tmp/requirements.txt" in steps[deps + 1]
    assert f"--no-index --find-links /tmp/wheels {dist}" in steps[wheels + 1]
    assert steps[wheels + 1].endswith("&& rm -rf /tmp/wheels")
    # Not root, and fit for OpenShift's arbitrary UID: group 0 owns HOME with the owner's rights.
    user = [s for s in steps if s.startswith("USER ")]
    assert user == ["USER 1001"] and steps.index(user[0]) > max(i for i, s in enumerate(steps) if s.startswith("RUN "))
    assert any("useradd --uid 1001 --gid 0" in s and "chmod g=u /home/chris" in s for s in steps)
    assert "ENV HOME=/home/chris" in steps
    # Labels agree with the package and the ChRIS descriptor.
    labels = dict(re.findall(r'org\.opencontainers\.image\.(\w+)="([^"]*)"', text))
    info = descriptor_of(dist)
    assert labels["version"] == info["version"] and labels["licenses"] == info["license"]
    assert labels["title"] == dist and labels["authors"] == info["authors"]
    assert labels["url"] == info["documentation"] and labels["source"] == info["documentation"].removesuffix("#readme")
    assert steps[-1] == f'CMD ["{PLUGINS[dist]}", "--help"]'
    scripts = tomllib.loads((ROOT / dist / "pyproject.toml").read_text())["project"]["scripts"]
    assert list(scripts) == [PLUGINS[dist]]
    if dist == "pl-ssvd-denoise":
        assert "openjdk-17-jre-headless" in text and "procps" in text
    if dist == "pl-dcm-anon":
        assert "ENV DCM_ANON_TAG_REPORT_PYTHON=/opt/tag-report/bin/python" in steps
        assert any(s.startswith("RUN python -m venv /opt/tag-report") for s in steps)


def _image_requirements(dist: str) -> list[str]:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "image-requirements"), str(ROOT / dist),
                           str(ROOT / "ctsvd-common")], capture_output=True, text=True, check=True)
    return proc.stdout.split()


@pytest.mark.parametrize("dist", sorted(PLUGINS))
def test_image_requirements_are_the_plugins_and_the_shared_librarys(dist):
    common = tomllib.loads((ROOT / "ctsvd-common" / "pyproject.toml").read_text())["project"]
    own = tomllib.loads((ROOT / dist / "pyproject.toml").read_text())["project"]["dependencies"]
    (shared,) = [d for d in own if d.startswith("ctsvd-common")]
    extras = re.search(r"\[(.*)\]", shared)
    expected = [d for d in own if d != shared] + common["dependencies"]
    expected += sum((common["optional-dependencies"][e] for e in (extras[1].split(",") if extras else [])), [])
    assert sorted(_image_requirements(dist)) == sorted(expected)
    if dist == "pl-dicom2matrix":  # its image decodes compressed pixel data
        assert {"pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "pyjpegls"} <= {re.split(r"[<>=]", r)[0]
                                                                       for r in _image_requirements(dist)}


def test_image_requirements_refuse_an_unknown_extra(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\ndependencies = ["ctsvd-common[nope]==0.1.0"]\n')
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "image-requirements"), str(tmp_path),
                           str(ROOT / "ctsvd-common")], capture_output=True, text=True)
    assert proc.returncode != 0 and "no extra 'nope'" in proc.stderr


def test_dockerignore_covers_the_build_artefacts():
    """The context is the repository root: its .dockerignore keeps out all that .gitignore lists,
    at any depth unless .gitignore anchors it (a plugin's egg-info, a nested .venv)."""
    lines = lambda f: [l.strip() for l in (ROOT / f).read_text().splitlines() if l.strip() and not l.startswith("#")]
    docker = lines(".dockerignore")
    for entry in lines(".gitignore"):
        name = entry.strip("/")
        wanted = name if entry.startswith("/") else f"**/{name}"
        assert any(fnmatch.fnmatchcase(wanted, d) for d in docker), f".dockerignore misses {entry}"


def test_dependencies_are_pinned_to_ranges():
    for folder in [*PLUGINS, "ctsvd-common", "workflows", "testdata"]:
        project = tomllib.loads((ROOT / folder / "pyproject.toml").read_text())["project"]
        deps = project["dependencies"] + sum(project.get("optional-dependencies", {}).values(), [])
        for dep in deps:
            assert re.search(r"(==|<)", dep), f"{folder}: {dep} has no upper bound"


def test_pipeline_file_names_real_plugins_and_parameters():
    doc = yaml.safe_load(DEFAULT_PIPELINE.read_text())
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
