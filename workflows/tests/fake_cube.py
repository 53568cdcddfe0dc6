"""A small CUBE over real HTTP, for testing ctsvd-chris offline.

It answers the part of CUBE's collection+json API that the script uses, the way
CUBE 6+ does (same paths, link relations, field names and checks: registered
compute resources, upload paths under home/<user>/, one nodes_info entry per
piping, token authentication, a plugin instance's outputs reached through its
output_folder in the filebrowser, compute resources replaced on an admin PUT
and dock_image read-only there), records every request with its
authentication, form fields and uploaded bytes and every item it served (by
the CUBE serializer that renders that kind of item, in ``SERIALIZERS``; a test
holds them to CUBE's source), and plays each workflow forward one status per
poll: created → started → finishedSuccessfully (or finishedWithError for the
node it is told to fail, whose descendants are then cancelled).
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

API = "/api/v1/"
ROOT_LINKS = ("public_feeds", "chrisinstance", "compute_resources", "plugin_metas", "plugins",
              "plugin_instances", "pipelines", "workflows", "tags", "pipelinesourcefiles", "userfiles",
              "pacsfiles", "pacs", "pacsqueries", "pacsseries", "filebrowser", "user")
# What each plugin's node leaves in its output folder here (pl-svd-render's default set, and what
# it writes only with --pngs, which run-chris must leave behind).
OUTPUTS = {
    "pl-svd-render": ("index.html", "svd_render.report.json", "series-001/index.html", "series-001/render.json",
                      "series-001/montage-lung.png", "series-001/viewer-lung.jpg", "series-001/scree.svg",
                      "series-001/dicom/0000.dcm", "series-001/dicom/0001.dcm",
                      "series-001/png/lung/original-0000.png", "series-001/denoised.npy"),
    "pl-ssvd-denoise": ("ssvd_denoise.report.json", "series-001/svd.json", "series-001/local.json"),
}
PATHS = {"plugin_instances": "plugins/instances/", "pipelinesourcefiles": "pipelines/sourcefiles/"}
PAGE_OF_FILES = 2  # small, so that the client must follow "next"
TOKEN = "fake-token-0123456789"
# The serializer in CUBE's source that renders each kind of item this fake serves.
SERIALIZERS = {"plugin": "PluginSerializer", "compute_resource": "ComputeResourceSerializer",
               "plugin_instance": "PluginInstanceSerializer", "pipeline": "PipelineSerializer",
               "source_file": "PipelineSourceFileSerializer", "default_parameter": "GenericDefaultPipingParameterSerializer",
               "workflow": "WorkflowSerializer", "user_file": "UserFileSerializer",
               "folder": "FileBrowserFolderSerializer", "file": "FileBrowserFileSerializer"}


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    authorized: bool
    by_token: bool = False
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    template: dict[str, Any] = field(default_factory=dict)


class HTTPError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class FakeCube:
    def __init__(self, user: str = "chris", password: str = "chris1234", computes=("host", "moc"),
                 fail_node: str | None = None, admin: bool = True):
        self.user, self.password, self.computes = user, password, set(computes)
        self.fail_node, self.admin = fail_node, admin
        self.seen: list[Seen] = []
        self.ids = itertools.count(1)
        self.plugins: dict[int, dict] = {}
        self.pipelines: dict[int, dict] = {}
        self.instances: dict[int, dict] = {}
        self.workflows: dict[int, list[int]] = {}
        self.files: dict[str, bytes] = {}  # storage path → bytes
        self.path_ids: dict[str, dict[str, int]] = {}
        self.served: list[tuple[str, frozenset[str], frozenset[str]]] = []  # (kind, data names, link relations)
        self.lock = threading.Lock()
        dircopy = {"name": "pl-dircopy", "version": "2.1.2", "type": "fs", "dock_image": "fnndsc/pl-dircopy:2.1.2",
                   "parameters": [{"name": "dir", "type": "str", "default": None}]}
        self._add_plugin(dircopy, {"host"})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_port}{API}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def requests_to(self, method: str, path: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method and s.path == path]

    # --- collection+json ---------------------------------------------------------------------
    def _href(self, path: str) -> str:
        return self.url + path

    def _item(self, kind: str, path: str, data: dict, links: dict[str, str] = {}) -> dict:
        self.served.append((kind, frozenset(data), frozenset(links)))
        return {"href": self._href(path), "data": [{"name": k, "value": v} for k, v in data.items()],
                "links": [{"rel": r, "href": h if h.startswith("http") else self._href(h)} for r, h in links.items()]}

    def _collection(self, path: str, items: list[dict], links: dict[str, str] = {}, total: int | None = None) -> dict:
        return {"collection": {"version": "1.0", "href": self._href(path), "items": items, "total": total or len(items),
                               "links": [{"rel": r, "href": h} for r, h in links.items()]}}

    # --- state -------------------------------------------------------------------------------
    def _add_plugin(self, descriptor: dict, computes: set[str]) -> dict:
        pid = next(self.ids)
        self.plugins[pid] = {"id": pid, "descriptor": descriptor, "computes": set(computes)}
        return self.plugins[pid]

    def _plugin_item(self, p: dict) -> dict:
        d = p["descriptor"]
        return self._item("plugin", f"plugins/{p['id']}/",
                          {"id": p["id"], "name": d["name"], "version": d["version"], "dock_image": d["dock_image"],
                           "type": d.get("type", "ds")},
                          {"instances": f"plugins/{p['id']}/instances/", "parameters": f"plugins/{p['id']}/parameters/",
                           "compute_resources": f"plugins/{p['id']}/computeresources/"})

    def _find_plugin(self, name: str, version: str | None = None) -> dict | None:
        return next((p for p in self.plugins.values() if p["descriptor"]["name"] == name
                     and (version is None or p["descriptor"]["version"] == version)), None)

    def _new_instance(self, plugin: dict, title: str, previous: int | None, compute: str, workflow: int | None,
                      status: str) -> dict:
        iid = next(self.ids)
        feed = self.instances[previous]["feed_id"] if previous else next(self.ids)
        inst = {"id": iid, "title": title, "previous_id": previous, "plugin_id": plugin["id"],
                "plugin_name": plugin["descriptor"]["name"], "plugin_version": plugin["descriptor"]["version"],
                "compute_resource_name": compute, "status": status, "feed_id": feed, "workflow_id": workflow,
                "output_path": f"home/{self.user}/feeds/feed_{feed}/{plugin['descriptor']['name']}_{iid}/data"}
        self.instances[iid] = inst
        return inst

    def _finish(self, inst: dict, ok: bool) -> None:
        inst["status"] = "finishedSuccessfully" if ok else "finishedWithError"
        if ok:  # outputs laid out as the node's plugin lays them out, bytes that name the node and the file
            for rel in OUTPUTS.get(inst["plugin_name"], ("output.txt",)):
                self.files[f"{inst['output_path']}/{rel}"] = f"{inst['title']}:{rel}".encode()
            return
        todo = [i for i in self.instances.values() if i["previous_id"] == inst["id"]]
        while todo:
            child = todo.pop()
            child["status"] = "cancelled"
            todo += [i for i in self.instances.values() if i["previous_id"] == child["id"]]

    def _advance(self, workflow: int) -> None:
        """One step of every node that can move: created → started → finished."""
        for iid in self.workflows[workflow]:
            inst = self.instances[iid]
            parent = self.instances[inst["previous_id"]]
            if inst["status"] == "created" and parent["status"] == "finishedSuccessfully":
                inst["status"] = "started"
            elif inst["status"] == "started":
                self._finish(inst, ok=inst["title"] != self.fail_node)

    # --- routes ------------------------------------------------------------------------------
    def handle(self, seen: Seen) -> tuple[int, dict | bytes]:
        path, q = seen.path, seen.query
        if seen.method == "POST" and path == "auth-token/":
            body = seen.template
            if (body.get("username"), body.get("password")) != (self.user, self.password):
                return 400, {"non_field_errors": ["Unable to log in with provided credentials."]}
            seen.authorized = True  # by the credentials in its body
            return 200, {"token": TOKEN}
        if not seen.authorized:
            raise HTTPError(401, "Authentication credentials were not provided.")
        if seen.method == "GET" and path == "":
            links = {rel: self._href(PATHS.get(rel, f"{rel}/")) for rel in ROOT_LINKS}
            if self.admin:
                links["admin"] = self._href("admin/")
            return 200, self._collection("", [], links)
        parts = path.strip("/").split("/")
        if seen.method == "GET" and path == "plugins/search/":
            found = [p for p in self.plugins.values()
                     if ("name_exact" not in q or p["descriptor"]["name"] == q["name_exact"])
                     and ("id" not in q or p["id"] == int(q["id"]))
                     and ("version" not in q or p["descriptor"]["version"] == q["version"])]
            return 200, self._collection(path, [self._plugin_item(p) for p in found])
        if seen.method == "POST" and path == "admin/":
            if not self.admin:
                raise HTTPError(403, "You do not have permission to perform this action.")
            descriptor = json.loads(seen.files["fname"])
            computes = set(seen.fields["compute_names"].split(","))
            if computes - self.computes:
                raise HTTPError(400, f"Compute resource(s) {computes - self.computes} not found")
            if self._find_plugin(descriptor["name"], descriptor["version"]):
                raise HTTPError(400, "Plugin with this name and version already exists.")
            return 201, self._collection(path, [self._plugin_item(self._add_plugin(descriptor, computes))])
        if seen.method == "PUT" and parts[0] == "admin" and len(parts) == 2:
            # As PluginAdminSerializer.update: the compute resources become those named; dock_image is read-only.
            plugin = self.plugins[int(parts[1])]
            computes = set(seen.template["compute_names"].split(","))
            if computes - self.computes:
                raise HTTPError(400, f"Compute resource(s) {computes - self.computes} not found")
            plugin["computes"] = computes
            return 200, self._collection(path, [self._plugin_item(plugin)])
        if seen.method == "GET" and parts[0] == "plugins" and parts[2:] == ["computeresources"]:
            names = sorted(self.plugins[int(parts[1])]["computes"])
            return 200, self._collection(path, [self._item("compute_resource", f"computeresources/{i}/",
                                                           {"id": i, "name": n}) for i, n in enumerate(names, 1)])

        if seen.method == "GET" and path == "pipelines/search/":
            found = [p for p in self.pipelines.values()
                     if ("name" not in q or q["name"].lower() in p["name"].lower())
                     and ("id" not in q or p["id"] == int(q["id"]))]
            return 200, self._collection(path, [self._item("pipeline", f"pipelines/{p['id']}/",
                                                           {"id": p["id"], "name": p["name"]},
                                                           {"default_parameters": f"pipelines/{p['id']}/parameters/",
                                                            "workflows": f"pipelines/{p['id']}/workflows/"})
                                                for p in found])
        if seen.method == "POST" and path == "pipelines/sourcefiles/":
            return 201, self._create_pipeline(seen)
        if seen.method == "GET" and parts[0] == "pipelines" and parts[2:] == ["parameters"]:
            return 200, self._default_parameters(int(parts[1]))
        if seen.method == "POST" and path == "userfiles/":
            upload_path = seen.fields["upload_path"].strip("/")
            if not upload_path.startswith(f"home/{self.user}/") or upload_path.startswith(f"home/{self.user}/feeds/"):
                raise HTTPError(400, f"Invalid file path. Path must start with 'home/{self.user}/'.")
            self.files[upload_path] = seen.files["fname"]
            return 201, self._collection(path, [self._item("user_file", f"userfiles/{len(self.files)}/",
                                                           {"fname": upload_path})])
        if seen.method == "POST" and parts[0] == "plugins" and parts[2:] == ["instances"]:
            plugin = self.plugins[int(parts[1])]
            if plugin["descriptor"]["name"] != "pl-dircopy":
                raise HTTPError(400, "this fake CUBE runs only pl-dircopy and pipelines")
            folder = seen.template["dir"].strip("/")
            if not any(f.startswith(folder + "/") for f in self.files):
                raise HTTPError(400, f"no files under {folder}")
            inst = self._new_instance(plugin, seen.template.get("title", ""), None, "host", None, "scheduled")
            return 201, self._collection(path, [self._instance_item(inst)])
        if seen.method == "GET" and path == "plugins/instances/search/":
            inst = self.instances[int(q["id"])]
            if inst["plugin_name"] == "pl-dircopy" and inst["status"] == "scheduled":
                inst["status"] = "started"  # seen once while running, finished on the next look
            elif inst["plugin_name"] == "pl-dircopy" and inst["status"] == "started":
                inst["status"] = "finishedSuccessfully"
            return 200, self._collection(path, [self._instance_item(inst)])
        if seen.method == "GET" and parts[0] == "filebrowser" and parts[1] == "files":
            return 200, self.files[self._path("file", int(parts[2]))]
        if seen.method == "GET" and parts[0] == "filebrowser" and len(parts) == 2:
            return 200, self._collection(path, [self._folder_item(self._path("folder", int(parts[1])))])
        if seen.method == "GET" and parts[0] == "filebrowser" and parts[2:] == ["children"]:
            folder = self._path("folder", int(parts[1]))
            return 200, self._collection(path, [self._folder_item(f) for f in self.folder_paths
                                                if f.rsplit("/", 1)[0] == folder and f != folder])
        if seen.method == "GET" and parts[0] == "filebrowser" and parts[2:] == ["files"]:
            return 200, self._folder_files(self._path("folder", int(parts[1])), path, int(q.get("offset", 0)))
        if seen.method == "POST" and parts[0] == "pipelines" and parts[2:] == ["workflows"]:
            return 201, self._create_workflow(int(parts[1]), seen.template)
        if seen.method == "GET" and path == "workflows/search/":
            wid = int(q["id"])
            return 200, self._collection(path, [self._item("workflow", f"workflows/{wid}/", {"id": wid},
                                                           {"plugin_instances": f"workflows/{wid}/plugininstances/"})])
        if seen.method == "GET" and parts[0] == "workflows" and parts[2:] == ["plugininstances"]:
            wid = int(parts[1])
            self._advance(wid)
            return 200, self._collection(path, [self._instance_item(self.instances[i]) for i in self.workflows[wid]])
        raise HTTPError(404, f"no route for {seen.method} {path}")

    def _id(self, kind: str, path: str) -> int:
        """A stable id per file or folder path, as CUBE's database gives."""
        ids = self.path_ids.setdefault(kind, {})
        return ids.setdefault(path, len(ids) + 1)

    def _path(self, kind: str, pid: int) -> str:
        return next(p for p, i in self.path_ids[kind].items() if i == pid)

    @property
    def folder_paths(self) -> list[str]:
        """Every folder that holds a file, and their ancestors, as the filebrowser has them."""
        folders = set()
        for f in self.files:
            parts = f.split("/")[:-1]
            folders.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
        return sorted(folders)

    def _instance_item(self, inst: dict) -> dict:
        folder = self._id("folder", inst["output_path"]) if inst["output_path"] in self.folder_paths else None
        links = {"plugin": f"plugins/{inst['plugin_id']}/", "descendants": f"plugins/instances/{inst['id']}/descendants/"}
        if folder is not None:  # CUBE makes the folder when the job starts writing; ours once outputs exist
            links["output_folder"] = f"filebrowser/{folder}/"
        return self._item("plugin_instance", f"plugins/instances/{inst['id']}/", inst, links)

    def _folder_item(self, folder: str) -> dict:
        fid = self._id("folder", folder)
        return self._item("folder", f"filebrowser/{fid}/", {"id": fid, "path": folder},
                          {"children": f"filebrowser/{fid}/children/", "files": f"filebrowser/{fid}/files/"})

    def _folder_files(self, folder: str, path: str, offset: int) -> dict:
        mine = sorted(f for f in self.files if f.rsplit("/", 1)[0] == folder)
        page = mine[offset:offset + PAGE_OF_FILES]
        links = {"next": self._href(f"{path}?limit={PAGE_OF_FILES}&offset={offset + PAGE_OF_FILES}")} \
            if offset + PAGE_OF_FILES < len(mine) else {}
        items = [self._item("file", f"filebrowser/files/{self._id('file', f)}/",
                            {"id": self._id("file", f), "fname": f, "fsize": len(self.files[f])},
                            {"file_resource": f"filebrowser/files/{self._id('file', f)}/{f.rsplit('/', 1)[-1]}"})
                 for f in page]
        return self._collection(path, items, links, total=len(mine))

    def _create_pipeline(self, seen: Seen) -> dict:
        """As CUBE's PipelineSourceFileSerializer: unknown plugin versions and bad types are refused,
        unknown parameter names are dropped without a word."""
        doc = yaml.safe_load(seen.files["fname"])
        if any(p["name"] == doc["name"] for p in self.pipelines.values()):
            raise HTTPError(400, f"Pipeline with name {doc['name']} already exists.")
        pid, pipings = next(self.ids), []
        for node in doc["plugin_tree"]:
            name, version = node["plugin"].split(" v")
            plugin = self._find_plugin(name, version)
            if plugin is None:
                raise HTTPError(400, f"Couldn't find any plugin with name {name} and version {version}.")
            declared = {p["name"]: p for p in plugin["descriptor"]["parameters"]}
            given = node.get("plugin_parameter_defaults") or {}
            defaults = {n: given.get(n, p["default"]) for n, p in declared.items()}
            pipings.append({"id": next(self.ids), "title": node["title"], "plugin": plugin,
                            "previous": node["previous"], "defaults": defaults})
        self.pipelines[pid] = {"id": pid, "name": doc["name"], "pipings": pipings, "source": seen.files["fname"]}
        return self._collection("pipelines/sourcefiles/", [self._item("source_file", f"pipelines/sourcefiles/{pid}/",
                                                                       {"id": pid, "pipeline_id": pid, "fname": "x.yml"})])

    def _default_parameters(self, pid: int) -> dict:
        pipings = self.pipelines[pid]["pipings"]
        by_title = {p["title"]: p["id"] for p in pipings}
        items = [self._item("default_parameter", f"pipelines/{pid}/parameters/{p['id']}/{n}/",
                            {"plugin_piping_id": p["id"], "plugin_piping_title": p["title"],
                             "previous_plugin_piping_id": by_title.get(p["previous"]), "param_name": n, "value": v})
                 for p in pipings for n, v in p["defaults"].items()]
        return self._collection(f"pipelines/{pid}/parameters/", items)

    def _create_workflow(self, pid: int, template: dict) -> dict:
        """As CUBE's WorkflowSerializer.validate_nodes_info, then one instance per piping."""
        pipings = self.pipelines[pid]["pipings"]
        nodes = json.loads(template["nodes_info"])
        if len(nodes) != len(pipings):
            raise HTTPError(400, f"Invalid length for list in {template['nodes_info']}")
        by_piping = {n.get("piping_id"): n for n in nodes}
        for p in pipings:
            node = by_piping.get(p["id"])
            if node is None:
                raise HTTPError(400, f"Missing data for plugin pipping with id {p['id']}")
            if node.get("compute_resource_name") not in p["plugin"]["computes"]:
                raise HTTPError(400, f"Plugin for pipping with id {p['id']} has not been registered with a "
                                     f"compute resource named {node.get('compute_resource_name')}")
        wid, made = next(self.ids), {}
        root = int(template["previous_plugin_inst_id"])
        for p in pipings:  # parents come first in our files
            previous = root if p["previous"] is None else made[p["previous"]]
            made[p["title"]] = self._new_instance(p["plugin"], by_piping[p["id"]].get("title", p["title"]), previous,
                                                  by_piping[p["id"]]["compute_resource_name"], wid, "created")["id"]
        self.workflows[wid] = list(made.values())
        return self._collection(f"pipelines/{pid}/workflows/", [self._item("workflow", f"workflows/{wid}/", {"id": wid})])

    # --- HTTP --------------------------------------------------------------------------------
    def _handler(self):
        cube = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _serve(self, method: str) -> None:
                url = urlsplit(self.path)
                basic = "Basic " + base64.b64encode(f"{cube.user}:{cube.password}".encode()).decode()
                seen = Seen(method, url.path[len(API):] if url.path.startswith(API) else url.path,
                            {k: v[-1] for k, v in parse_qs(url.query).items()},
                            self.headers.get("Authorization") in (basic, f"Token {TOKEN}"),
                            self.headers.get("Authorization") == f"Token {TOKEN}")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                ctype = self.headers.get("Content-Type", "")
                if ctype.startswith("multipart/form-data"):
                    message = BytesParser(policy=HTTP).parsebytes(
                        f"Content-Type: {ctype}\r\n\r\n".encode() + body)
                    for part in message.iter_parts():
                        name = part.get_param("name", header="content-disposition")
                        payload = part.get_payload(decode=True)
                        if part.get_filename() is not None:
                            seen.files[name] = payload
                        else:
                            seen.fields[name] = payload.decode()
                elif body:
                    doc = json.loads(body)
                    seen.template = {d["name"]: d["value"] for d in doc["template"]["data"]} if "template" in doc else doc
                with cube.lock:
                    cube.seen.append(seen)
                    try:
                        code, reply = cube.handle(seen)
                    except HTTPError as e:
                        code, reply = e.code, {"collection": {"version": "1.0", "href": self.path,
                                                              "error": {"title": str(e.code), "message": str(e)}}}
                data = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/octet-stream" if isinstance(reply, bytes)
                                 else "application/vnd.collection+json" if "collection" in reply
                                 else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

            def do_PUT(self):
                self._serve("PUT")

        return Handler
