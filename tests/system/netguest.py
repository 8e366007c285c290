"""What the networking tests share: an HTTP server on the host's 127.0.0.1 serving a random
payload (the guest reaches it as 10.0.2.2), udhcpc's script, and a free loopback port."""

from __future__ import annotations

import http.server
import os
import socket
import threading
from collections.abc import Iterator

import pytest

# udhcpc calls this with the lease in its environment; the line it prints is what tests check.
UDHCPC_SCRIPT = """#!/bin/busybox sh
case "$1" in bound|renew)
  ip addr add "$ip/$mask" dev "$interface"
  ip route add default via "$router"
  echo "lease: $ip router $router dns $dns"
esac
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Payload(http.server.BaseHTTPRequestHandler):
    data = b""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200 if self.path == "/payload" else 404)
        self.send_header("Content-Length", str(len(self.data)))
        self.end_headers()
        self.wfile.write(self.data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[tuple[int, bytes]]:
    """(port, payload): a 96 KiB random file at /payload."""
    payload = os.urandom(96 * 1024)
    handler = type("Handler", (Payload,), {"data": payload})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], payload
    server.shutdown()
    server.server_close()
