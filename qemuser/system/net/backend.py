"""Network backends (`-netdev`): where a NIC's frames go and come from.

Every backend takes frames from the guest with `send` (on the machine's thread) and hands frames
for the guest to the `receive` callback given to `start` (from a host thread of its own; the NIC
posts them to the machine's thread, never touching guest memory from there).
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

from qemuser.system.net.slirp import NetdevError, UserNetConfig, UserNetwork

Receive = Callable[[bytes], None]


class NetBackend:
    """A backend that drops what it is sent and never receives (`-netdev` hubport-less none)."""

    kind = "none"

    def __init__(self, netdev_id: str) -> None:
        self.id = netdev_id
        self.receive: Receive = lambda frame: None

    def start(self, receive: Receive) -> None:
        self.receive = receive

    def send(self, frame: bytes) -> None:
        pass

    def close(self) -> None:
        pass

    def info(self) -> str:
        """The line `info network` shows for this backend (QEMU's print_net_client:
        name, queue index, type, then the backend's own info string)."""
        return f"{self.id}: index=0,type={self.kind},"


class UserBackend(NetBackend):
    """`-netdev user`: libslirp."""

    kind = "user"

    def __init__(self, netdev_id: str, config: UserNetConfig) -> None:
        super().__init__(netdev_id)
        self.config = config
        self.network = UserNetwork(config, self._deliver)

    def _deliver(self, frame: bytes) -> None:
        self.receive(frame)

    def start(self, receive: Receive) -> None:
        super().start(receive)
        self.network.start()

    def send(self, frame: bytes) -> None:
        self.network.send_to_network(frame)

    def close(self) -> None:
        self.network.close()

    def info(self) -> str:
        return f"{self.id}: index=0,type=user,net={self.config.net.network_address},restrict=" + (
            "on" if self.config.restrict else "off"
        )


@dataclass(frozen=True)
class SocketSpec:
    """-netdev socket: listen=[host]:port, connect=host:port, or udp=host:port[,localaddr=]."""

    mode: str  # "listen", "connect", "udp"
    host: str
    port: int
    local_host: str = ""
    local_port: int = 0


def parse_host_port(value: str, option: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise NetdevError(f"{option}: invalid host:port '{value}'")
    return host, int(port)


class SocketBackend(NetBackend):
    """`-netdev socket`: frames over TCP (each prefixed by its 4-byte big-endian length, as
    QEMU's stream mode sends them, so a qemuser guest and a QEMU guest can talk) or UDP (one
    frame a datagram)."""

    kind = "socket"

    def __init__(self, netdev_id: str, spec: SocketSpec) -> None:
        super().__init__(netdev_id)
        self.spec = spec
        self._conn: socket.socket | None = None
        self._listener: socket.socket | None = None
        self._udp: socket.socket | None = None
        self._closed = False
        self._peer = ""  # a listener's client, once it came (info network shows it)
        try:
            if spec.mode == "listen":
                self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                self._listener.bind((spec.host or "0.0.0.0", spec.port))
                self._listener.listen(1)
            elif spec.mode == "connect":
                self._conn = socket.create_connection((spec.host or "127.0.0.1", spec.port))
            else:
                self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self._udp.bind((spec.local_host or "0.0.0.0", spec.local_port))
                self._udp.connect((spec.host or "127.0.0.1", spec.port))
        except OSError as exc:
            self.close()
            raise NetdevError(
                f"-netdev socket: {spec.mode} {spec.host}:{spec.port}: {exc.strerror}"
            ) from None

    def start(self, receive: Receive) -> None:
        super().start(receive)
        threading.Thread(target=self._reader, daemon=True, name=f"netdev-{self.id}").start()

    def _reader(self) -> None:
        if self._udp is not None:
            while not self._closed:
                try:
                    frame = self._udp.recv(65536)
                except OSError:
                    return
                self.receive(frame)
            return
        if self._listener is not None:
            try:
                self._conn, (host, port) = self._listener.accept()
            except OSError:
                return
            self._peer = f"{host}:{port}"
        conn = self._conn
        if conn is None:
            return
        stream = conn.makefile("rb")
        while not self._closed:
            header = stream.read(4)
            if len(header) < 4:
                return
            (length,) = struct.unpack(">I", header)
            frame = stream.read(length)
            if len(frame) < length:
                return
            self.receive(frame)

    def send(self, frame: bytes) -> None:
        try:
            if self._udp is not None:
                self._udp.send(frame)
            elif self._conn is not None:
                self._conn.sendall(struct.pack(">I", len(frame)) + frame)
        except OSError:
            pass  # the peer went away: the frame is lost, as on a cable that was pulled

    def close(self) -> None:
        self._closed = True
        for sock in (self._conn, self._listener, self._udp):
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def info(self) -> str:
        # QEMU's net/socket.c info strings; a listener says nothing until a client came
        where = f"{self.spec.host or '127.0.0.1'}:{self.spec.port}"
        if self.spec.mode == "connect":
            detail = f"socket: connect to {where}"
        elif self.spec.mode == "udp":
            detail = f"socket: udp={where}"
        else:
            detail = f"socket: connection from {self._peer}" if self._peer else ""
        return f"{self.id}: index=0,type=socket,{detail}"
