#!/usr/bin/env python3
"""Register the pfcon of openshift/ as a compute resource in CUBE, and plugins with it.

    # is pfcon up, and configured as CUBE needs? (prints its configuration)
    register.py check --pfcon https://pfcon-chris-compute.apps.example.org/api/v1/

    # add the compute resource (CUBE refuses it unless pfcon answers)
    register.py compute --cube https://cube.example.org/api/v1/ --name moc \\
        --pfcon https://pfcon-chris-compute.apps.example.org/api/v1/ --description "SVD on OpenShift"

    # register plugins with it, from descriptors made inside each image:
    #   podman run --rm IMAGE chris_plugin_info -d IMAGE > pl-ssvd-denoise.json
    # (a plugin CUBE already has gets exactly these compute resources instead)
    register.py plugins --cube https://cube.example.org/api/v1/ --compute host,moc pl-*.json

Credentials come from the environment, never the command line:
PFCON_USER / PFCON_PASSWORD (the Secret pfcon-credentials) and CUBE_USER /
CUBE_PASSWORD (a CUBE administrator). Standard library only, so it runs
anywhere Python 3.9+ does. Exit codes: 0 done, 1 a server refused or failed,
2 bad usage or missing credentials.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

TIMEOUT = 30


class Failed(Exception):
    """A server could not be reached or refused the request (one line)."""


def _request(method: str, url: str, *, headers: dict | None = None, body: bytes | None = None) -> dict:
    request = urllib.request.Request(url, data=body, method=method,
                                     headers={"Accept": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace").strip().replace("\n", " ")[:300]
        raise Failed(f"{method} {url}: HTTP {e.code} {detail}") from None
    except (urllib.error.URLError, OSError) as e:
        raise Failed(f"{method} {url}: {getattr(e, 'reason', e)}") from None


def _json(data: dict) -> tuple[dict, bytes]:
    return {"Content-Type": "application/json"}, json.dumps(data).encode()


def _basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def multipart(fields: dict[str, str], files: dict[str, Path]) -> tuple[dict, bytes]:
    """A multipart/form-data body (CUBE takes plugin descriptors as a file upload)."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, path in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{path.name}"\r\n'
                     f"Content-Type: application/json\r\n\r\n".encode() + path.read_bytes() + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return {"Content-Type": f"multipart/form-data; boundary={boundary}"}, b"".join(parts)


def api_url(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def pfcon_info(pfcon: str, user: str, password: str) -> dict:
    """What pfcon reports at /api/v1/ once logged in: the same calls CUBE makes."""
    pfcon = api_url(pfcon)
    headers, body = _json({"pfcon_user": user, "pfcon_password": password})
    token = _request("POST", pfcon + "auth-token/", headers=headers, body=body)["token"]
    return _request("GET", pfcon, headers={"Authorization": f"Bearer {token}"})


def add_compute_resource(cube: str, admin: tuple[str, str], name: str, pfcon: str,
                         pfcon_login: tuple[str, str], description: str) -> dict:
    info = pfcon_info(pfcon, *pfcon_login)  # CUBE checks this too; fail here with a clearer message
    headers, body = _json({
        "name": name, "compute_url": api_url(pfcon), "compute_auth_url": api_url(pfcon) + "auth-token/",
        "compute_user": pfcon_login[0], "compute_password": pfcon_login[1],
        "compute_innetwork": bool(info.get("pfcon_innetwork")), "description": description,
    })
    return _request("POST", _admin(cube) + "computeresources/", headers={**_basic(*admin), **headers}, body=body)


def register_plugin(cube: str, admin: tuple[str, str], descriptor: Path, compute_names: str) -> dict:
    """Register the plugin on ``compute_names``; if CUBE already has that name and
    version, set its compute resources to ``compute_names`` instead (CUBE's
    update replaces the list, so name every resource it should keep)."""
    headers, body = multipart({"compute_names": compute_names}, {"fname": descriptor})
    try:
        return _request("POST", _admin(cube), headers={**_basic(*admin), **headers}, body=body)
    except Failed as e:
        if "already exists" not in str(e):
            raise
    plugin = json.loads(descriptor.read_text())
    query = urllib.parse.urlencode({"name_exact": plugin["name"], "version": plugin["version"]})
    found = _request("GET", f"{api_url(cube)}plugins/search/?{query}", headers=_basic(*admin))
    (match,) = [p for p in found.get("results", []) if p.get("version") == plugin["version"]] or [None]
    if match is None:
        raise Failed(f"{plugin['name']} {plugin['version']}: CUBE says it exists but does not list it")
    headers, body = _json({"compute_names": compute_names})
    return _request("PUT", f"{_admin(cube)}{match['id']}/", headers={**_basic(*admin), **headers}, body=body)


def _admin(cube: str) -> str:
    """…/api/v1/ → …/chris-admin/api/v1/"""
    root = api_url(cube)
    if root.endswith("/api/v1/"):
        root = root[: -len("api/v1/")]
    return root + "chris-admin/api/v1/"


def _credentials(*names: str) -> tuple[str, ...]:
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        raise SystemExit(_usage_error(f"set {', '.join(missing)} in the environment"))
    return tuple(os.environ[n] for n in names)


def _usage_error(message: str) -> int:
    print(f"register.py: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="log in to pfcon and print its configuration")
    check.add_argument("--pfcon", required=True, help="pfcon's API URL, ending in /api/v1/")
    compute = sub.add_parser("compute", help="add pfcon to CUBE as a compute resource")
    compute.add_argument("--cube", required=True, help="CUBE's API URL, ending in /api/v1/")
    compute.add_argument("--name", required=True, help="compute resource name, e.g. moc")
    compute.add_argument("--pfcon", required=True, help="pfcon's API URL as CUBE will reach it")
    compute.add_argument("--description", default="", help="shown in CUBE")
    plugins = sub.add_parser("plugins", help="register plugin descriptors with compute resources")
    plugins.add_argument("--cube", required=True, help="CUBE's API URL, ending in /api/v1/")
    plugins.add_argument("--compute", required=True, help="comma-separated compute resource names")
    plugins.add_argument("descriptors", nargs="+", type=Path, help="JSON from chris_plugin_info -d IMAGE")
    options = parser.parse_args(argv)

    try:
        if options.command == "check":
            info = pfcon_info(options.pfcon, *_credentials("PFCON_USER", "PFCON_PASSWORD"))
            print(json.dumps(info, indent=2))
        elif options.command == "compute":
            admin = _credentials("CUBE_USER", "CUBE_PASSWORD")
            login = _credentials("PFCON_USER", "PFCON_PASSWORD")
            made = add_compute_resource(options.cube, admin, options.name, options.pfcon, login,
                                        options.description)
            print(f"compute resource {made.get('name', options.name)} added: {made.get('url', '')}")
        else:
            return _register_all(options)
    except Failed as e:
        print(f"register.py: {e}", file=sys.stderr)
        return 1
    return 0


def _register_all(options) -> int:
    """Each descriptor on its own: one refused plugin does not stop the others."""
    admin = _credentials("CUBE_USER", "CUBE_PASSWORD")
    missing = [str(d) for d in options.descriptors if not d.is_file()]
    if missing:
        return _usage_error(f"no such file: {', '.join(missing)}")
    status = 0
    for descriptor in options.descriptors:
        try:
            made = register_plugin(options.cube, admin, descriptor, options.compute)
            print(f"{descriptor}: {made.get('name')} {made.get('version')} on {options.compute}")
        except Failed as e:
            print(f"register.py: {descriptor}: {e}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
