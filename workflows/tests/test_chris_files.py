"""The files ChRIS reads: descriptors as the images make them, pipeline YAML and the JSON made from it,
and our validation of pipelines against the descriptors (which CUBE lacks for parameter names)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from ctsvd_pipeline import catalog, descriptors, files, validate
from ctsvd_pipeline import pipeline as pipelines

WORKFLOWS = Path(__file__).resolve().parents[1]
DEFAULT, PAPER, CROSSOVER, CROSSOVER_K8S = (files.PIPELINES / f"{n}.yml" for n in (
    "ct-denoise", "ct-denoise-paper", "ct-denoise-crossover", "ct-denoise-crossover-k8s"))


@pytest.fixture(scope="module")
def known():
    return descriptors.load_all()


# --- descriptors -------------------------------------------------------------------------------

@pytest.mark.parametrize("plugin", descriptors.PLUGINS)
def test_checked_in_descriptor_is_what_the_code_declares(plugin):
    assert descriptors.differences(descriptors.load(plugin), descriptors.make(plugin)) == []


@pytest.mark.parametrize("plugin", descriptors.PLUGINS)
def test_descriptor_names_image_paths_and_the_suite_repository(plugin):
    d = descriptors.load(plugin)
    assert (d["selfpath"], d["execshell"]) == ("/usr/local/bin", "/usr/local/bin/python3")
    assert d["public_repo"] == f"{descriptors.SUITE_REPOSITORY}/tree/main/{plugin}"
    assert d["documentation"] == f"{d['public_repo']}#readme"
    assert d["dock_image"] == f"localhost/fnndsc/{plugin}:{d['version']}"
    assert (WORKFLOWS.parent / plugin / "README.md").is_file()  # what the URLs point at


def test_chris_plugin_info_derives_the_paths_from_where_it_runs():
    """The premise of the normalization: unnormalized, the paths are this environment's."""
    raw = json.loads(descriptors.subprocess.run(
        [str(descriptors.BIN / "chris_plugin_info"), "-d", "x/pl-svd-render:0.1.0", "pl-svd-render"],
        capture_output=True, text=True, env=descriptors.ENV, check=True).stdout)
    assert Path(raw["selfpath"]) == descriptors.BIN
    assert Path(raw["execshell"]).parent == descriptors.BIN
    assert raw["public_repo"] == "https://github.com/x/pl-svd-render"  # why we pass --public-repo


def test_a_changed_parameter_or_field_is_reported():
    made = descriptors.load("pl-ssvd-denoise")
    stale = copy.deepcopy(made)
    stale["parameters"] = [p for p in stale["parameters"] if p["name"] != "seed"]
    next(p for p in stale["parameters"] if p["name"] == "k")["default"] = 40
    stale["public_repo"] = "https://github.com/fnndsc/pl-ssvd-denoise"
    diff = descriptors.differences(stale, made)
    assert "parameter seed: missing" in diff
    assert "parameter k: differs" in diff
    assert any(line.startswith("public_repo:") for line in diff)
    assert len(diff) == 3


def test_a_descriptor_made_elsewhere_is_refused():
    with pytest.raises(descriptors.DescriptorError, match="made outside"):
        descriptors.in_image({"name": "pl-x"}, Path("/opt/other/bin"), Path("/opt/other/bin/python3"))


# --- pipeline files and their JSON -------------------------------------------------------------

def test_every_pipeline_file_is_sound(known):
    assert {p.name for p in catalog.yaml_files()} >= {DEFAULT.name, PAPER.name, CROSSOVER.name}
    for source in catalog.yaml_files():
        assert validate.problems(source, known) == [], source


@pytest.mark.parametrize("source", catalog.yaml_files(), ids=lambda p: p.name)
def test_json_is_made_from_the_yaml(source):
    doc = yaml.safe_load(source.read_text())
    body = json.loads(catalog.json_path(source).read_text())
    assert catalog.json_path(source).read_text() == catalog.json_text(source), "run ctsvd-pipeline pipelines"
    assert {k: body[k] for k in ("name", "authors", "category", "description", "locked")} == \
           {k: doc[k] for k in ("name", "authors", "category", "description", "locked")}
    tree = json.loads(body["plugin_tree"])  # CUBE takes plugin_tree as a JSON string
    assert [n["title"] for n in tree] == [n["title"] for n in doc["plugin_tree"]]
    for node, raw in zip(tree, doc["plugin_tree"]):
        name, version = raw["plugin"].split(" v")
        assert (node["plugin_name"], node["plugin_version"], node["previous"]) == (name, version, raw["previous"])
        assert {d["name"]: d["default"] for d in node["plugin_parameter_defaults"]} == \
               (raw.get("plugin_parameter_defaults") or {})
        assert (node["cpu_limit"], node["memory_limit"]) == (raw["cpu_limit"], raw["memory_limit"])
        assert "compute_resource_name" not in node  # CUBE's pipelines cannot carry it


def test_every_node_says_its_resources_and_compute():
    for source in (DEFAULT, PAPER, CROSSOVER):
        for node in pipelines.load(source).nodes:
            assert {"cpu_limit", "memory_limit"} <= node.resources.keys(), (source.name, node.title)
            assert node.compute, (source.name, node.title)


def test_the_three_trees():
    default = pipelines.load(DEFAULT)
    assert [n.title for n in default.nodes[:3]] == ["anonymize", "volume", "ssvd"]
    assert default.nodes[2].defaults["mode"] == "both"
    assert {c.defaults["use"] for c in default.nodes[2].children} == {"local", "global"}

    paper = pipelines.load(PAPER)
    svd = [n for n in paper.nodes if n.plugin_name == "pl-ssvd-denoise"]
    assert len(svd) == 1 and svd[0].defaults["mode"] == "both"
    renders = svd[0].children
    ranks = {r.defaults.get("rank") for r in renders if r.defaults["use"] == "global"}
    assert {"auto"} < ranks and len(ranks - {"auto"}) >= 3
    assert any(r.defaults["use"] == "local" for r in renders)

    crossover = pipelines.load(CROSSOVER)
    svd = next(n for n in crossover.nodes if n.plugin_name == "pl-ssvd-denoise")
    assert svd.compute == "moc"
    assert {n.compute for n in crossover.nodes if n is not svd} == {"host"}
    assert svd.defaults["master"] == "local[*]" and "spark_conf" not in svd.defaults

    k8s = pipelines.load(CROSSOVER_K8S)
    svd = next(n for n in k8s.nodes if n.plugin_name == "pl-ssvd-denoise")
    assert svd.compute == "moc"
    assert {n.compute for n in k8s.nodes if n is not svd} == {"host"}
    assert svd.defaults["master"].startswith("k8s://https://")
    settings = dict(kv.split("=", 1) for kv in svd.defaults["spark_conf"].split(","))
    assert settings and all(k.startswith(("spark.kubernetes.", "spark.executor.")) for k in settings)
    assert "spark.kubernetes.container.image" in settings


def test_the_readmes_say_what_the_crossover_files_hold():
    """workflows/README.md's table of the crossovers, and the image the root README names, against the files."""
    rows = re.findall(r"^\| `(ct-denoise-crossover[\w-]*\.yml)` \| `(\w+)` \| `([^`]+)` \| `(\w+)` \|",
                      (WORKFLOWS / "README.md").read_text(), re.M)
    assert sorted(r[0] for r in rows) == sorted(p.name for p in (CROSSOVER, CROSSOVER_K8S))
    for name, compute, master, data_access in rows:
        svd = next(n for n in pipelines.load(files.PIPELINES / name).nodes if n.plugin_name == "pl-ssvd-denoise")
        assert (svd.compute, svd.defaults["master"], svd.defaults["data_access"]) == (compute, master, data_access), name
    svd = next(n for n in pipelines.load(CROSSOVER_K8S).nodes if n.plugin_name == "pl-ssvd-denoise")
    image = dict(kv.split("=", 1) for kv in svd.defaults["spark_conf"].split(","))["spark.kubernetes.container.image"]
    readme = (WORKFLOWS.parent / "README.md").read_text()
    named = re.search(r"the checked-in value names\s+`([^`]+)`", readme)
    assert named and named.group(1) == image
    assert image == descriptors.dock_image("pl-ssvd-denoise", svd.plugin_version, "docker.io/fnndsc")
    # The images the descriptors name are the ones tests/images builds, as the README says.
    for plugin in descriptors.PLUGINS:
        d = descriptors.load(plugin)
        assert d["dock_image"] == f"localhost/fnndsc/{plugin}:{d['version']}"
    assert "`localhost/fnndsc/<plugin>:<version>`" in (WORKFLOWS / "README.md").read_text()


# --- validation: what CUBE would have let through ------------------------------------------------

def _variant(tmp_path: Path, change) -> Path:
    doc = yaml.safe_load(DEFAULT.read_text())
    change(doc["plugin_tree"], {n["title"]: n for n in doc["plugin_tree"]})
    path = tmp_path / "variant.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _set(title, key, value):
    def change(tree, by_title):
        by_title[title].setdefault("plugin_parameter_defaults", {})[key] = value
    return change


NEGATIVE = {
    "bogus_param": (_set("ssvd", "bogus_param", "x"), "node 'ssvd': pl-ssvd-denoise has no parameter 'bogus_param'"),
    "typo": (_set("ssvd", "power_iter", 5), "node 'ssvd': pl-ssvd-denoise has no parameter 'power_iter'"),
    "wrong_type": (_set("ssvd", "k", "fifty"), "node 'ssvd': k takes an integer, got 'fifty'"),
    "float_for_int": (_set("ssvd", "k", 50.5), "node 'ssvd': k takes an integer, got 50.5"),
    "bool_for_str": (_set("render-auto", "rank", True), "node 'render-auto': rank takes a string, got True"),
    "unknown_version": (lambda tree, t: t["volume"].update(plugin="pl-dicom2matrix v9.9.9"),
                        "node 'volume': no plugin pl-dicom2matrix v9.9.9 (known: v0.1.0)"),
    "unknown_plugin": (lambda tree, t: t["volume"].update(plugin="pl-nope v0.1.0"), "node 'volume': no plugin pl-nope v0.1.0"),
    "duplicate_title": (lambda tree, t: t["render-auto"].update(title="render-local"),
                        "node 'render-local': the title is used twice"),
    "forward_reference": (lambda tree, t: tree.insert(1, tree.pop(2)),
                          "node 'ssvd': previous 'volume' comes later in the file"),
    "dangling_previous": (lambda tree, t: t["ssvd"].update(previous="volumes"), "node 'ssvd': previous 'volumes' is not a title here"),
    "two_roots": (lambda tree, t: t["volume"].update(previous=None), "expected exactly one root node"),
    "memory_below_minimum": (lambda tree, t: t["ssvd"].update(memory_limit="1Gi"),
                             "node 'ssvd': memory_limit 1Gi is outside the plugin's range [2Gi, -]"),
    "cpu_format": (lambda tree, t: t["ssvd"].update(cpu_limit="4 cores"), "node 'ssvd': cpu_limit '4 cores' is not like 2000m"),
    "workers": (lambda tree, t: t["ssvd"].update(number_of_workers=3), "number_of_workers 3 is outside the plugin's range [1, 1]"),
    "node_key_typo": (lambda tree, t: t["ssvd"].update(plugin_parameters_defaults={"k": 5}),
                      "node 'ssvd': unknown key 'plugin_parameters_defaults' (CUBE would drop it)"),
    "empty_compute": (lambda tree, t: t["ssvd"].update(compute_resource_name=""), "compute_resource_name must name a compute resource"),
}


@pytest.mark.parametrize("case", NEGATIVE)
def test_validation_catches(tmp_path, known, case):
    change, expected = NEGATIVE[case]
    found = validate.problems(_variant(tmp_path, change), known)
    assert len(found) == 1, found
    assert expected in found[0] and found[0].startswith(str(tmp_path / "variant.yml"))


def test_validation_reports_every_problem_at_once(tmp_path, known):
    def change(tree, t):
        _set("ssvd", "power_iter", 5)(tree, t)
        _set("render-local", "bogus_param", "x")(tree, t)
        t["volume"]["plugin"] = "pl-dicom2matrix v0.2.0"
    assert len(validate.problems(_variant(tmp_path, change), known)) == 3


def test_check_command_exit_codes(tmp_path, capsys):
    from ctsvd_pipeline.__main__ import main
    assert main(["check", str(DEFAULT), str(PAPER), str(CROSSOVER)]) == 0
    bad = _variant(tmp_path, _set("ssvd", "power_iter", 5))
    assert main(["check", str(bad)]) == 1
    assert "no parameter 'power_iter'" in capsys.readouterr().out
