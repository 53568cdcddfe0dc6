"""A real ChRIS on 127.0.0.1, for the end-to-end test: CUBE, two pfcons and podman's Docker API.

Everything comes from the upstream sources in ../shared/chris/ (git archives
of CUBE, pfcon and pl-dircopy), unpacked into a scratch folder; nothing of
them is copied into this repository. The pieces, as CUBE's own compose file
runs them, but as plain processes:

* PostgreSQL (initdb, then ``postgres`` in the foreground, as the ``postgres``
  user when we are root) and Redis, on free ports of 127.0.0.1;
* CUBE from its source in a venv of its own (``requirements/base.txt``, with
  drf-spectacular from PyPI instead of its git line, and python-ldap):
  ``manage.py migrate``, uvicorn on ``config.asgi:application``, Celery
  workers for the queues ``main1,main2`` and ``periodic``, and Celery beat;
* two pfcons (gunicorn on ``pfcon.wsgi``) registered in CUBE as the compute
  resources ``host`` and ``moc``, both running jobs through
  ``podman system service``'s Docker API on a socket of its own;
* pl-dircopy, built on the base the suite's images were built on, and
  registered on both compute resources (every feed starts with it).

Each process starts in a session of its own; :meth:`Stack.stop` ends each by
its PID (its process group), last started first, and waits for it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

CUBE, PFCON, DIRCOPY = "ChRIS_ultron_backEnd", "pfcon", "pl-dircopy"
ADMIN, ADMIN_PASSWORD = "chris", "chris1234"
PFCON_USER, PFCON_PASSWORD = "pfcon", "pfcon1234"
COMPUTES = ("host", "moc")
DIRCOPY_IMAGE = "localhost/fnndsc/pl-dircopy:2.1.3"
# pfcon's own dependencies (its pyproject lists them for pixi only), at the versions it pins there.
PFCON_REQUIREMENTS = ["flask==3.1.*", "flask-restful==0.3.10", "requests==2.32.*", "python-swiftclient==4.9.*",
                      "boto3>=1.35,<2", "pyjwt==2.11.*", "environs==14.6.*", "jinja2==3.1.*", "docker>=7.1,<8",
                      "kubernetes>=35,<36", "gunicorn==23.0.*"]


class StackError(Exception):
    """A piece of the stack could not be installed or started; the message says which, and where its log is."""


def say(text: str) -> None:
    print(f"[chris-e2e] {text}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def archive(shared: Path, project: str) -> Path:
    found = sorted(shared.glob(f"{project}-*.tar.gz"))
    if not found:
        raise StackError(f"{shared}: no {project}-*.tar.gz")
    return found[-1]


def unpack(tarball: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball) as t:
        t.extractall(dest, filter="data")
    return dest


def run(cmd: list[str], log: Path, what: str, **kw) -> None:
    with open(log, "ab") as out:
        if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, **kw).returncode != 0:
            raise StackError(f"{what} failed (log: {log})")


def venv(path: Path, key: str, install: list[list[str]], log: Path) -> Path:
    """A venv at path with what ``install`` (pip argument lists) puts in it; kept while key is unchanged."""
    marker = path / ".installed"
    if marker.is_file() and marker.read_text() == key:
        return path / "bin"
    shutil.rmtree(path, ignore_errors=True)
    run([sys.executable, "-m", "venv", str(path)], log, f"creating {path}")
    for args in install:
        run([str(path / "bin" / "pip"), "install", "--disable-pip-version-check", "-q", *args], log,
            f"pip install {' '.join(args)} into {path}")
    marker.write_text(key)
    return path / "bin"


def install(shared: Path, cache: Path, scratch: Path) -> dict[str, Path]:
    """Unpack the sources into scratch; CUBE's and pfcon's venvs in cache (reused while their sources are the same)."""
    cache = cache.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    src = {p: unpack(archive(shared, p), scratch / "src" / p) for p in (CUBE, PFCON, DIRCOPY)}
    log = cache / "install.log"
    cube_reqs = [line for line in (src[CUBE] / "requirements" / "base.txt").read_text().splitlines()
                 if line.strip() and not line.startswith(("git+", "#"))]
    # drf-spectacular's git line is a pull request of it; the release on PyPI serves CUBE's schema too.
    cube_reqs += ["drf-spectacular>=0.28,<1", "python-ldap>=3.4,<4"]
    req_file = scratch / "cube-requirements.txt"
    req_file.write_text("\n".join(cube_reqs) + "\n")
    key = lambda *parts: hashlib.sha256("\n".join(map(str, parts)).encode()).hexdigest()
    t0 = time.monotonic()
    say("CUBE's and pfcon's venvs (a few minutes when they are not yet in the cache)")
    cube_bin = venv(cache / "cube-venv", key(sys.version, *cube_reqs), [["-r", str(req_file)]], log)
    pfcon_tar = archive(shared, PFCON)
    pfcon_bin = venv(cache / "pfcon-venv", key(sys.version, pfcon_tar.name, *PFCON_REQUIREMENTS),
                     [PFCON_REQUIREMENTS], log)
    # pfcon itself from this run's unpacked source; its metadata gives it its version.
    run([str(pfcon_bin / "pip"), "install", "--disable-pip-version-check", "-q", "--no-deps", str(src[PFCON])],
        log, "pip install pfcon")
    say(f"venvs ready in {time.monotonic() - t0:.0f} s")
    return {"cube_src": src[CUBE] / "chris_backend", "dircopy_src": src[DIRCOPY],
            "cube_bin": cube_bin, "pfcon_bin": pfcon_bin}


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path


@dataclass
class Stack:
    scratch: Path
    engine_conf: Path | None = None         # the containers.conf tests/images wrote
    procs: list[Proc] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        (self.scratch / "logs").mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['cube']}/api/v1/"

    @property
    def storebase(self) -> Path:
        return self.scratch / "storebase"

    # --- processes ------------------------------------------------------------------------------
    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
              user: str | None = None) -> Proc:
        log = self.scratch / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        if user:
            cmd = ["runuser", "-u", user, "--", *cmd]
        popen = subprocess.Popen(cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
                                 preexec_fn=(lambda: os.umask(0)) if name.startswith(("cube", "celery")) else None)
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def wait_for(self, proc: Proc, ready, what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise StackError(f"{proc.name} exited with {proc.popen.returncode} before {what} "
                                 f"(log: {proc.log}): {tail(proc.log)}")
            try:
                if ready():
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise StackError(f"{proc.name}: no {what} after {timeout:.0f} s (log: {proc.log}): {tail(proc.log)}")

    def stop(self) -> None:
        """Every process this stack started, by PID, last first: SIGTERM to its group, SIGKILL after 20 s."""
        for proc in reversed(self.procs):
            if proc.popen.poll() is None:
                try:
                    os.killpg(proc.popen.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    proc.popen.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                    proc.popen.wait(10)
        self.procs.clear()

    def podman_stopped_races(self) -> int:
        """How often a pfcon saw a job in podman's transient state "stopped" (exited, not yet cleaned up).

        Docker has no such state; pfcon maps it to "undefined" and CUBE then cancels the job (CODE10)
        although it succeeded. Podman 4.3's Docker API shows it for a second or two after a container
        ends, longer on a loaded machine.
        """
        return sum(p.log.read_text(errors="replace").count("message='stopped', status=<JobStatus.undefined")
                   for p in self.procs if p.name.startswith("pfcon-"))

    def running(self) -> list[str]:
        return [f"{p.name} (pid {p.popen.pid})" for p in self.procs if p.popen.poll() is None]

    # --- the services ------------------------------------------------------------------------------
    def start_postgres(self) -> None:
        # Debian keeps initdb and postgres out of PATH, in the folder of their major version.
        found = [Path(p).resolve().parent for p in (shutil.which("initdb"),) if p]
        found += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
        bindir = next((d for d in found if (d / "initdb").exists() and (d / "postgres").exists()), None)
        if bindir is None:
            raise StackError("PostgreSQL's initdb and postgres are not installed (Debian: postgresql)")
        data, sockets = self.scratch / "pgdata", self.scratch / "pgsock"
        user = "postgres" if os.geteuid() == 0 else None  # PostgreSQL refuses to run as root
        self.scratch.chmod(0o755)  # the postgres user and the containers' users pass through it
        for d in (data, sockets):
            d.mkdir(mode=0o700)
            if user:
                shutil.chown(d, user)
        self.ports["postgres"] = port = free_port()
        run([*(["runuser", "-u", user, "--"] if user else []), str(bindir / "initdb"), "-D", str(data), "-U", "chris",
             "--auth=trust", "-E", "UTF8"], self.scratch / "logs" / "initdb.log", "initdb")
        pg = self.start("postgres", [str(bindir / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port),
                                     "-k", str(sockets)], user=user)
        self.wait_for(pg, lambda: port_open(port), "PostgreSQL on its port")
        run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "chris", "chris_e2e"],
            self.scratch / "logs" / "createdb.log", "createdb", env={**os.environ})

    def start_redis(self) -> None:
        self.ports["redis"] = port = free_port()
        redis = self.start("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                     "--appendonly", "no", "--daemonize", "no"])
        self.wait_for(redis, lambda: port_open(port), "Redis on its port")

    def start_podman(self) -> Path:
        sock = self.scratch / "podman.sock"
        env = {"CONTAINERS_CONF": str(self.engine_conf)} if self.engine_conf else {}
        podman = self.start("podman", ["podman", "system", "service", "--time=0", f"unix://{sock}"], env=env)
        self.wait_for(podman, lambda: docker_ping(sock), "Docker API on its socket")
        return sock

    def start_pfcon(self, name: str, bin_: Path, sock: Path) -> None:
        self.ports[f"pfcon-{name}"] = port = free_port()
        env = {"APPLICATION_MODE": "production", "SECRET_KEY": f"e2e-{name}", "PFCON_USER": PFCON_USER,
               "PFCON_PASSWORD": PFCON_PASSWORD, "PFCON_INNETWORK": "true", "STORAGE_ENV": "filesystem",
               "COMPUTE_VOLUME_TYPE": "host", "STOREBASE": str(self.storebase),
               "STOREBASE_MOUNT": str(self.storebase), "CONTAINER_ENV": "docker", "DOCKER_HOST": f"unix://{sock}",
               "ENABLE_HOME_WORKAROUND": "yes", "REMOVE_JOBS": "yes",
               "JOB_LABELS": f"org.ctsvd.e2e=pfcon-{name}"}
        pfcon = self.start(f"pfcon-{name}", [str(bin_ / "gunicorn"), "-b", f"127.0.0.1:{port}", "-w", "3", "-t", "300",
                                             "pfcon.wsgi:application"], env=env)
        self.wait_for(pfcon, lambda: http_ok(f"http://127.0.0.1:{port}/api/v1/health/"), "pfcon health")

    def cube_env(self) -> dict[str, str]:
        return {"DJANGO_SETTINGS_MODULE": "config.settings.production", "DJANGO_SECRET_KEY": "e2e-not-secret",
                "CHRIS_SUPERUSER_PASSWORD": ADMIN_PASSWORD, "DJANGO_ALLOWED_HOSTS": "*",
                "POSTGRES_DB": "chris_e2e", "POSTGRES_USER": "chris", "POSTGRES_PASSWORD": "unused-trust-auth",
                "DATABASE_HOST": "127.0.0.1", "DATABASE_PORT": str(self.ports["postgres"]),
                "DATABASE_CONN_POOL": "false", "STORAGE_ENV": "filesystem", "MEDIA_ROOT": str(self.storebase),
                "CHRIS_STORE_URL": "http://127.0.0.1:9/api/v1/", "NATS_ADDRESS": "nats://127.0.0.1:9",
                "PFDCM_ADDRESS": "http://127.0.0.1:9", "AUTH_LDAP": "false", "DISABLE_USER_ACCOUNT_CREATION": "false",
                "CELERY_BROKER_URL": f"redis://127.0.0.1:{self.ports['redis']}/0", "DJANGO_SECURE_PROXY_SSL_HEADER": "",
                "DJANGO_USE_X_FORWARDED_HOST": "false", "DJANGO_CORS_ALLOW_ALL_ORIGINS": "true"}

    def manage(self, bin_: Path, src: Path, *args: str, stdin: str | None = None) -> str:
        log = self.scratch / "logs" / "manage.log"
        r = subprocess.run([str(bin_ / "python"), "manage.py", *args], cwd=src, input=stdin, text=True,
                           capture_output=True, env={**os.environ, **self.env})
        with open(log, "a") as f:
            f.write(f"$ manage.py {' '.join(args)}\n{r.stdout}{r.stderr}\n")
        if r.returncode != 0:
            raise StackError(f"manage.py {' '.join(args)} failed (log: {log}): {r.stderr.strip().splitlines()[-1:]}")
        return r.stdout

    def start_cube(self, bin_: Path, src: Path) -> None:
        self.storebase.mkdir(mode=0o777, exist_ok=True)
        self.storebase.chmod(0o777)
        self.env = self.cube_env()
        t0 = time.monotonic()
        self.manage(bin_, src, "migrate", "--noinput")
        say(f"CUBE's database migrated in {time.monotonic() - t0:.0f} s")
        self.ports["cube"] = port = free_port()
        cube = self.start("cube", [str(bin_ / "uvicorn"), "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
                                   "config.asgi:application"], env=self.env, cwd=src)
        celery = [str(bin_ / "celery"), "-A", "core"]
        self.start("celery-main", [*celery, "worker", "-c", "2", "-l", "info", "-Q", "main1,main2", "-n", "main@%h"],
                   env=self.env, cwd=src)
        self.start("celery-periodic", [*celery, "worker", "-c", "1", "-l", "info", "-Q", "periodic",
                                       "-n", "periodic@%h"], env=self.env, cwd=src)
        self.start("celery-beat", [*celery, "beat", "-l", "info", "--scheduler",
                                   "django_celery_beat.schedulers:DatabaseScheduler",
                                   "-s", str(self.scratch / "celerybeat-schedule")], env=self.env, cwd=src)
        self.wait_for(cube, lambda: http_ok(self.url, auth=(ADMIN, ADMIN_PASSWORD)), "API answer", timeout=180)

    def add_compute_resources(self, bin_: Path, src: Path) -> None:
        """``host`` and ``moc``, one pfcon each, in-network and without copy or upload jobs (they share the storage)."""
        specs = [{"name": n, "url": f"http://127.0.0.1:{self.ports[f'pfcon-{n}']}/api/v1/"} for n in COMPUTES]
        code = f"""
from plugins.models import ComputeResource
for s in {specs!r}:
    ComputeResource.objects.update_or_create(name=s["name"], defaults=dict(
        compute_url=s["url"], compute_auth_url=s["url"] + "auth-token/", compute_innetwork=True,
        compute_requires_copy_job=False, compute_requires_upload_job=False,
        compute_user={PFCON_USER!r}, compute_password={PFCON_PASSWORD!r}, description="chris-e2e"))
print(sorted(c.name for c in ComputeResource.objects.all()))
"""
        say(f"compute resources: {self.manage(bin_, src, 'shell', stdin=code).strip()}")


def build_dircopy(engine: str, base: str, src: Path, log: Path, build_opts: list[str]) -> str:
    """pl-dircopy's image on the suite's base: its package and chrisapp, its command as CMD."""
    containerfile = src / "Containerfile.e2e"
    containerfile.write_text(f"FROM {base}\nCOPY . /usr/local/src/dircopy\n"
                             "RUN pip install --no-cache-dir --disable-pip-version-check /usr/local/src/dircopy "
                             "&& rm -rf /usr/local/src/dircopy\nCMD [\"dircopy\"]\n")
    run([engine, "build", *build_opts, "-f", str(containerfile), "-t", DIRCOPY_IMAGE, str(src)], log,
        "building pl-dircopy")
    return DIRCOPY_IMAGE


def dircopy_descriptor(engine: str, image: str) -> dict:
    """What ``dircopy --json`` prints in its image, with the image's name (chrisapp's way to a descriptor)."""
    out = subprocess.run([engine, "run", "--rm", "--network", "none", image, "dircopy", "--json"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise StackError(f"dircopy --json in {image} failed: {out.stderr.strip()[-300:]}")
    return {**json.loads(out.stdout), "name": "pl-dircopy", "dock_image": image,
            "public_repo": "https://github.com/FNNDSC/pl-dircopy"}


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def http_ok(url: str, auth: tuple[str, str] | None = None) -> bool:
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def docker_ping(sock: Path) -> bool:
    if not sock.exists():
        return False
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(3)
        s.connect(str(sock))
        s.sendall(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n")
        return b" 200 " in s.recv(200)


def tail(log: Path, lines: int = 3) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""
