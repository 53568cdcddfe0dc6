"""ctsvd-chris against a CUBE: offline always (a fake CUBE over real HTTP that checks and records every
request), and against a live CUBE when CHRIS_URL is set."""

from __future__ import annotations

import json
import os
import re

import pytest
import yaml

import cube_api
from fake_cube import OUTPUTS, SERIALIZERS, FakeCube

from ctsvd_pipeline import chris, descriptors, files

CROSSOVER = files.PIPELINES / "ct-denoise-crossover.yml"
DEFAULT = files.DEFAULT_PIPELINE


@pytest.fixture
def cube():
    fake = FakeCube()
    yield fake
    fake.close()


def ctsvd_chris(cube: FakeCube, *args: str) -> int:
    return chris.main(["--url", cube.url, "--user", cube.user, "--password", cube.password, *args])


@pytest.fixture
def dicomdir(tmp_path):
    """A small folder of files with nested paths, as an exam export has."""
    folder = tmp_path / "exam"
    for i, rel in enumerate(["series-1/IM0001.dcm", "series-1/IM0002.dcm", "series-2/IM0001.dcm", "DICOMDIR"]):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(b"\0" * 128 + b"DICM" + bytes([i]) * (100 + i))
    return folder


def test_register_uploads_the_checked_in_descriptors_with_computes(cube):
    assert ctsvd_chris(cube, "register", "--compute", "host,moc", "--image-prefix", "registry.example.org/ctsvd") == 0
    posts = cube.requests_to("POST", "admin/")
    assert len(posts) == 4 and all(s.authorized for s in cube.seen)
    for post in posts:
        sent = json.loads(post.files["fname"])
        expected = descriptors.load(sent["name"])
        assert sent == {**expected, "dock_image": f"registry.example.org/ctsvd/{sent['name']}:{sent['version']}"}
        assert post.fields["compute_names"] == "host,moc"
    assert {p["descriptor"]["name"] for p in cube.plugins.values()} >= set(descriptors.PLUGINS)

    # Registering again on a resource the plugins have changes nothing; creates none.
    assert ctsvd_chris(cube, "register", "--compute", "host") == 0
    assert len(cube.requests_to("POST", "admin/")) == 4
    assert not [s for s in cube.seen if s.method == "PUT"]


def test_register_adds_compute_resources_and_replaces_only_when_asked(cube, capsys):
    assert ctsvd_chris(cube, "register", "--compute", "host") == 0
    assert ctsvd_chris(cube, "register", "--compute", "moc") == 0
    ours = [p for p in cube.plugins.values() if p["descriptor"]["name"] in descriptors.PLUGINS]
    assert len(ours) == 4 and all(p["computes"] == {"host", "moc"} for p in ours)
    puts = [s for s in cube.seen if s.method == "PUT"]
    assert len(puts) == 4 and all(s.template == {"compute_names": "host,moc"} for s in puts)
    assert "was on host; now on host, moc" in capsys.readouterr().out
    assert ctsvd_chris(cube, "register", "--compute", "moc", "--replace-compute") == 0
    assert all(p["computes"] == {"moc"} for p in ours)


def test_register_says_cube_keeps_a_registered_image(cube, capsys):
    assert ctsvd_chris(cube, "register", "--compute", "host") == 0
    assert ctsvd_chris(cube, "register", "--compute", "host,moc", "--image-prefix", "registry.example.org/ctsvd") == 1
    err = capsys.readouterr().err
    assert err.count("CUBE cannot change a registered plugin's image") == 4
    assert "pl-ssvd-denoise v0.1.0 is registered with image localhost/fnndsc/pl-ssvd-denoise:0.1.0" in err
    # The compute resources were still added, and the images are as they were.
    ours = [p for p in cube.plugins.values() if p["descriptor"]["name"] in descriptors.PLUGINS]
    assert all(p["computes"] == {"host", "moc"} and p["descriptor"]["dock_image"].startswith("localhost/")
               for p in ours)


def test_register_needs_an_admin(cube, capsys):
    cube.admin = False
    assert ctsvd_chris(cube, "register") == 1
    assert "not a ChRIS admin" in capsys.readouterr().err


def test_crossover_run(cube, dicomdir, tmp_path, capsys):
    assert ctsvd_chris(cube, "register", "--compute", "host,moc") == 0
    out = tmp_path / "out"
    assert ctsvd_chris(cube, "run", "--pipeline", str(CROSSOVER), "--poll", "0",
                       "--upload-dir", "home/chris/uploads/exam-1", str(dicomdir), str(out)) == 0
    printed = capsys.readouterr().out

    # The pipeline went up as the YAML file itself, once.
    (upload,) = cube.requests_to("POST", "pipelines/sourcefiles/")
    assert upload.files["fname"] == CROSSOVER.read_bytes() and upload.fields["type"] == "yaml"
    # Every file of the exam, byte for byte, under the upload folder, paths kept.
    for f in (p for p in dicomdir.rglob("*") if p.is_file()):
        assert cube.files[f"home/chris/uploads/exam-1/{f.relative_to(dicomdir).as_posix()}"] == f.read_bytes()
    # A feed from pl-dircopy on that folder.
    (dircopy,) = [s for s in cube.seen if s.method == "POST" and s.path.endswith("/instances/")]
    assert dircopy.template["dir"] == "home/chris/uploads/exam-1"
    # The workflow: every node, the SVD node on the remote compute resource.
    (wf,) = [s for s in cube.seen if s.method == "POST" and s.path.endswith("/workflows/")]
    nodes = {n["title"]: n for n in json.loads(wf.template["nodes_info"])}
    titles = [n["title"] for n in yaml.safe_load(CROSSOVER.read_text())["plugin_tree"]]
    assert sorted(nodes) == sorted(titles)
    assert {t: n["compute_resource_name"] for t, n in nodes.items()} == \
           {t: "moc" if t == "ssvd" else "host" for t in titles}
    assert int(dircopy_id := wf.template["previous_plugin_inst_id"]) in cube.instances and dircopy_id
    # Progress of every node, and the run's verdict.
    assert "ssvd (pl-ssvd-denoise on moc): started" in printed
    assert "ssvd (pl-ssvd-denoise on moc): finishedSuccessfully" in printed
    assert f"run finished: {len(titles)} of {len(titles)} nodes ok" in printed
    # What a person reads of the renders, all pages of each folder, nested paths kept: reports, montages,
    # viewer strips; the DICOM series of the recommended node only; no per-slice PNGs or arrays; nothing
    # of the other nodes.
    renders = [t for t in titles if t.startswith("render-")]
    assert sorted(p.name for p in out.iterdir()) == sorted(renders)
    for t in renders:
        got = sorted(p.relative_to(out / t).as_posix() for p in (out / t).rglob("*") if p.is_file())
        expected = [f for f in OUTPUTS["pl-svd-render"] if "/png/" not in f and not f.endswith(".npy")
                    and (t == "render-local" or "/dicom/" not in f)]
        assert got == sorted(expected), t
        assert all((out / t / f).read_bytes() == f"{t}:{f}".encode() for f in got)
    assert re.search(r"download: render-local: 9/9 files, 0.0/0.0 MB, \d+\.\d s", printed)
    # Every request after the first carries a token, not the password.
    assert all(s.authorized for s in cube.seen)
    logins = [i for i, s in enumerate(cube.seen) if s.path == "auth-token/"]
    assert len(logins) == 2 and logins[0] == 0  # one per command: register, run
    assert all(s.by_token for i, s in enumerate(cube.seen) if i not in logins)


def test_all_downloads_every_file_of_every_node(cube, dicomdir, tmp_path):
    assert ctsvd_chris(cube, "register", "--compute", "host,moc") == 0
    out = tmp_path / "out"
    assert ctsvd_chris(cube, "run", "--pipeline", str(DEFAULT), "--poll", "0", "--all", str(dicomdir), str(out)) == 0
    titles = [n["title"] for n in yaml.safe_load(DEFAULT.read_text())["plugin_tree"]]
    assert sorted(p.name for p in out.iterdir()) == sorted(titles)
    assert (out / "ssvd" / "series-001" / "svd.json").read_bytes() == b"ssvd:series-001/svd.json"
    assert (out / "render-auto" / "series-001" / "png" / "lung" / "original-0000.png").is_file()


@pytest.mark.skipif(cube_api.cube_archive() is None,
                    reason="../shared/chris is absent: the fake CUBE is not compared with CUBE's source")
def test_the_fake_serves_only_what_cube_serves(cube, dicomdir, tmp_path):
    """Every item the fake served, in a whole run, has only data names and link relations that CUBE's
    serializer for that kind of item renders (read from CUBE's source in ../shared/chris)."""
    assert ctsvd_chris(cube, "register", "--compute", "host") == 0
    assert ctsvd_chris(cube, "register", "--compute", "moc") == 0
    assert ctsvd_chris(cube, "run", "--pipeline", str(CROSSOVER), "--poll", "0", "--all",
                       str(dicomdir), str(tmp_path / "out")) == 0
    real = cube_api.shapes(cube_api.cube_archive(), set(SERIALIZERS.values()))
    assert {kind for kind, _, _ in cube.served} == set(SERIALIZERS)
    for kind, data, links in set(cube.served):
        shape = real[SERIALIZERS[kind]]
        assert data <= shape.data, f"{kind}: CUBE's {SERIALIZERS[kind]} has no {sorted(data - shape.data)}"
        assert links <= shape.links, f"{kind}: CUBE's {SERIALIZERS[kind]} has no link {sorted(links - shape.links)}"
    # The link CUBE 6 removed is not served, and is what the check would catch.
    assert "files" not in real["PluginInstanceSerializer"].links


def test_a_failed_node_is_named_and_its_descendants_are_not_downloaded(tmp_path, dicomdir, capsys):
    cube = FakeCube(fail_node="ssvd")
    try:
        assert ctsvd_chris(cube, "register", "--compute", "host,moc") == 0
        code = ctsvd_chris(cube, "run", "--pipeline", str(DEFAULT), "--poll", "0", str(dicomdir), str(tmp_path / "out"))
    finally:
        cube.close()
    captured = capsys.readouterr()
    assert code == 1
    assert "error: node 'ssvd' (pl-ssvd-denoise, instance" in captured.err and "finishedWithError" in captured.err
    assert "error: node 'render-local' (pl-svd-render, instance" in captured.err and "cancelled" in captured.err
    assert "run FAILED: 2 of 7 nodes ok" in captured.out
    assert not (tmp_path / "out").exists()


def test_a_node_on_an_unregistered_compute_resource_is_refused_by_cube(cube, dicomdir, tmp_path, capsys):
    assert ctsvd_chris(cube, "register", "--compute", "host") == 0
    assert ctsvd_chris(cube, "run", "--pipeline", str(CROSSOVER), "--poll", "0", str(dicomdir), str(tmp_path)) == 1
    assert "has not been registered with a compute resource named moc" in capsys.readouterr().err


def test_compute_override_per_node(cube, dicomdir, tmp_path):
    assert ctsvd_chris(cube, "register", "--compute", "host,moc") == 0
    assert ctsvd_chris(cube, "run", "--pipeline", str(DEFAULT), "--compute", "ssvd=moc", "--compute", "volume=moc",
                       "--poll", "0", str(dicomdir), str(tmp_path / "out")) == 0
    (wf,) = [s for s in cube.seen if s.method == "POST" and s.path.endswith("/workflows/")]
    on_moc = {n["title"] for n in json.loads(wf.template["nodes_info"]) if n["compute_resource_name"] == "moc"}
    assert on_moc == {"ssvd", "volume"}
    assert ctsvd_chris(cube, "run", "--compute", "svd=moc", str(dicomdir), str(tmp_path / "o2")) == 1


def test_an_invalid_pipeline_is_refused_before_anything_is_uploaded(cube, dicomdir, tmp_path, capsys):
    doc = yaml.safe_load(DEFAULT.read_text())
    doc["plugin_tree"][2]["plugin_parameter_defaults"]["power_iter"] = 5
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert ctsvd_chris(cube, "register") == 0
    assert ctsvd_chris(cube, "run", "--pipeline", str(bad), str(dicomdir), str(tmp_path / "out")) == 1
    assert "no parameter 'power_iter'" in capsys.readouterr().err
    assert not cube.requests_to("POST", "pipelines/sourcefiles/") and not cube.requests_to("POST", "userfiles/")


def test_upload_pipeline_once(cube):
    assert ctsvd_chris(cube, "register") == 0
    assert ctsvd_chris(cube, "upload-pipeline", str(DEFAULT), str(files.PIPELINES / "ct-denoise-paper.yml")) == 0
    assert ctsvd_chris(cube, "upload-pipeline", str(DEFAULT)) == 0  # found by name, not uploaded twice
    assert len(cube.requests_to("POST", "pipelines/sourcefiles/")) == 2


def test_wrong_password_and_missing_settings(cube, tmp_path, capsys, monkeypatch):
    assert chris.main(["--url", cube.url, "--user", cube.user, "--password", "wrong", "upload-pipeline"]) == 1
    assert capsys.readouterr().err == f"error: CUBE at {cube.url} refused the login of {cube.user}: " \
                                      "Unable to log in with provided credentials.\n"
    for var in ("CHRIS_URL", "CHRIS_USER", "CHRIS_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(SystemExit) as e:
        chris.main(["upload-pipeline"])
    assert e.value.code == 2 and "--url/CHRIS_URL" in capsys.readouterr().err


# --- live CUBE: opt-in ----------------------------------------------------------------------------

@pytest.mark.skipif(not os.environ.get("CHRIS_URL"),
                    reason="CHRIS_URL not set: the live CUBE test is skipped (set CHRIS_URL, CHRIS_USER, CHRIS_PASSWORD)")
def test_live_cube(tmp_path):
    """Register (when the account is an admin), upload the pipelines, run the default one on a small demo series."""
    from ctsvd_testdata.phantom import write_demo_series

    if os.environ.get("CHRIS_ADMIN"):
        assert chris.main(["register", "--compute", os.environ.get("CHRIS_COMPUTE", "host")]) == 0
    assert chris.main(["upload-pipeline", *map(str, sorted(files.PIPELINES.glob("*.yml")))]) == 0
    write_demo_series(tmp_path / "demo", slices=8, size=64, seed=0)
    assert chris.main(["run", "--poll", "5", "--timeout", "1800", str(tmp_path / "demo"), str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "render-local" / "index.html").is_file()
