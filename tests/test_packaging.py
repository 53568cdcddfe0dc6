"""What CUBE and an image will see of each plugin, checked without building one: its descriptor, the
requirements its image installs and that they provide every module it imports, the build context.
What the built images do is checked by tests/images (built and run with docker or podman)."""

import ast
import fnmatch
import importlib.util
import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ctsvd_pipeline.files import DEFAULT_PIPELINE

from plugin_commands import BIN, ENV, PLUGINS, ROOT


def _descriptor(dist: str) -> dict:
    version = tomllib.loads((ROOT / dist / "pyproject.toml").read_text())["project"]["version"]
    proc = subprocess.run([str(BIN / "chris_plugin_info"), "-d", f"docker.io/fnndsc/{dist}:{version}", dist],
                          capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


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


# Files of a plugin that run in another Python environment, with their own requirements.
RUN_ELSEWHERE = {
    # Run by path in the tag report's environment (tag-report-requirements.txt); pl-dcm-anon's
    # tests hold its imports to the standard library and pfdicom_tagExtract.
    "pl-dcm-anon": {"tag_extract_child.py"},
}


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports by absolute name, lazy imports included; ``from m import n``
    gives ``m`` and ``m.n`` (``n`` may be a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return found


def _module_file(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):   # an attribute of a module, not a module
        return None
    return Path(spec.origin) if spec and spec.origin and spec.origin.endswith(".py") else None


def _third_party_imports(dist: str) -> dict[str, str]:
    """The top-level third-party modules the plugin's code imports (its own package, and the
    modules of ctsvd_common it reaches), each with one file that imports it."""
    package = ROOT / dist / PLUGINS[dist]
    todo = [f for f in package.rglob("*.py") if f.name not in RUN_ELSEWHERE.get(dist, ())]
    seen, found = set(todo), {}
    while todo:
        path = todo.pop()
        for name in sorted(_imports(path)):
            top = name.partition(".")[0]
            if top == "ctsvd_common":
                module = _module_file(name)
                if module is not None and module not in seen:
                    seen.add(module)
                    todo.append(module)
            elif top not in sys.stdlib_module_names and top not in (package.name, "__future__"):
                found.setdefault(top, path.name)
    return found


def _installed_with(requirements: list[str]) -> set[str]:
    """The distributions pip installs for ``requirements``: them and their dependencies, extras
    followed, as this environment's metadata lists them."""
    todo, done = [Requirement(r) for r in requirements], set()
    while todo:
        req = todo.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in done:
            continue
        done.add(key)
        try:
            deps = [Requirement(d) for d in metadata.requires(req.name) or []]
        except metadata.PackageNotFoundError:
            continue   # not installed here: its modules are reported as not installed below
        todo += [d for d in deps
                 if d.marker is None or any(d.marker.evaluate({"extra": e}) for e in {"", *req.extras})]
    return {name for name, _ in done}


@pytest.mark.parametrize("dist", sorted(PLUGINS))
def test_every_module_a_plugin_imports_comes_with_its_image_requirements(dist):
    """What the image installs (scripts/image-requirements, then pip's dependencies) provides
    every third-party module the plugin's code imports: no ModuleNotFoundError in the image."""
    installed = _installed_with(_image_requirements(dist))
    providers = metadata.packages_distributions()
    imports = _third_party_imports(dist)
    assert "chris_plugin" in imports
    for module, where in imports.items():
        assert module in providers, f"{dist}: {where} imports {module}, which no installed distribution provides"
        assert {canonicalize_name(d) for d in providers[module]} & installed, (
            f"{dist}: {where} imports {module} (from {providers[module]}), which its requirements do not install")


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
