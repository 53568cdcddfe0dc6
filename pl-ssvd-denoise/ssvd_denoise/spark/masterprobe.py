"""Does a Spark standalone master answer at ``spark://host:port``? Asked in Spark's own RPC protocol.

A TCP connection alone proves little: any program can accept one, and Spark
then retries for a minute and more before failing with a message that names
neither the master nor the cause. So the probe sends one RPC request, as a
Spark driver would, to an endpoint name no server registers. A Spark RPC
server answers it at once with an ``RpcFailure`` ("Could not find …") and
logs nothing; anything else, or silence, is not a Spark master.

The frame (Spark's ``network-common`` ``MessageEncoder``): frame length
(int64, counting itself), message type (1 byte; RpcRequest = 3, RpcResponse
= 4, RpcFailure = 5), request id (int64), body length (int32), body. The
body is NettyRpcEnv's ``RequestMessage``: sender address (absent), receiver
address and endpoint name (Java ``DataOutput``), then the Java-serialised
content, here a string.
"""

from __future__ import annotations

import socket
import struct
import time

RPC_REQUEST, RPC_RESPONSE, RPC_FAILURE = 3, 4, 5
PROBE_ENDPOINT = "ctsvd-reachability-probe"
REQUEST_ID = 0x0C75_0D00


def _utf(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack(">H", len(data)) + data


def request_frame(host: str, port: int) -> bytes:
    content = b"\xac\xed\x00\x05" + b"\x74" + _utf("ping")  # java.io serialisation of the String "ping"
    body = b"\x00" + b"\x01" + _utf(host) + struct.pack(">i", port) + _utf(PROBE_ENDPOINT) + content
    header = struct.pack(">qBqi", 8 + 1 + 8 + 4 + len(body), RPC_REQUEST, REQUEST_ID, len(body))
    return header + body


def _read_exactly(sock: socket.socket, size: int, deadline: float) -> bytes:
    data = b""
    while len(data) < size:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the connection was closed without an answer")
        data += chunk
    return data


def probe(host: str, port: int, timeout: float) -> str | None:
    """None when a Spark RPC server answers at ``host:port`` within ``timeout`` seconds, else why not."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(request_frame(host, port))
            length, kind, request_id = struct.unpack(">qBq", _read_exactly(sock, 17, deadline))
    except socket.timeout:
        return "silent"
    except OSError as e:  # refused, unreachable, reset, closed
        return e.strerror or str(e)
    if kind in (RPC_RESPONSE, RPC_FAILURE) and request_id == REQUEST_ID and length >= 17:
        return None
    return "the answer is not Spark's RPC protocol"
