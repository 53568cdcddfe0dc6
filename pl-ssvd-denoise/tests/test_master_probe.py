"""The reachability probe tells a Spark master from a port that merely accepts, in bounded time."""

import json
import socket
import threading
import time

import pytest

from ssvd_denoise.spark import masterprobe, session
from ssvd_denoise.options import Settings, parser
from ssvd_denoise.run import run


@pytest.fixture
def fake_port():
    """A TCP server that accepts connections and then does what ``behaviour`` says with each."""
    servers = []

    def start(behaviour):
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen()
        held = []

        def serve():
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                held.append(conn)
                behaviour(conn)

        threading.Thread(target=serve, daemon=True).start()
        servers.append((server, held))
        return server.getsockname()[1]

    yield start
    for server, held in servers:
        server.close()
        for conn in held:
            conn.close()


def silent(conn):
    pass  # accepts, keeps the connection open, says nothing


def http_server(conn):
    conn.recv(1024)
    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


def test_a_silent_port_is_no_master_and_the_run_says_so_in_bounded_time(fake_port, series_input, tmp_path, caplog):
    inputdir, _ = series_input
    master = f"spark://127.0.0.1:{fake_port(silent)}"
    t0 = time.monotonic()
    assert run(Settings.from_options(parser.parse_args(["--master", master])), inputdir, tmp_path / "out") == 1
    elapsed = time.monotonic() - t0
    assert elapsed < session.PROBE_SECONDS + 5
    report = json.loads((tmp_path / "out" / "ssvd_denoise.report.json").read_text())
    port = master.rsplit(":", 1)[1]
    assert report["errors"] == [{"file": "", "reason": f"no Spark master answered at {master} within 10 s "
                                                       f"(127.0.0.1:{port}: silent)"}]
    assert not any("starting Spark" in r.getMessage() for r in caplog.records)


def test_a_port_speaking_another_protocol_is_no_master(fake_port):
    port = fake_port(http_server)
    assert masterprobe.probe("127.0.0.1", port, 5) == "the answer is not Spark's RPC protocol"


def test_one_answering_address_of_several_is_enough(fake_port, monkeypatch):
    answering = fake_port(lambda conn: (conn.recv(65536), conn.sendall(
        masterprobe.struct.pack(">qBq", 21, masterprobe.RPC_FAILURE, masterprobe.REQUEST_ID) + b"\0\0\0\0")))
    quiet = fake_port(silent)
    assert session.unreachable_master(f"spark://127.0.0.1:{quiet},127.0.0.1:{answering}", timeout=1) is None
    assert session.unreachable_master(f"spark://127.0.0.1:{quiet},nohost", timeout=1) == (
        f"no Spark master answered at spark://127.0.0.1:{quiet},nohost within 1 s "
        f"(127.0.0.1:{quiet}: silent; nohost: not host:port)")
