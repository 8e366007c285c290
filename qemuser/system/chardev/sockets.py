"""Socket endpoints of chardevs and monitors: QEMU's legacy `unix:PATH` / `tcp:[HOST]:PORT`
syntax with its server/wait options, listening and connecting."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass


class ChardevError(Exception):
    """A chardev spec that cannot be used; the message is QEMU's wording."""


@dataclass(frozen=True)
class SocketSpec:
    """A socket chardev: unix:PATH or tcp:[HOST]:PORT, with server/wait/nodelay options."""

    family: str  # "unix" or "tcp"
    path: str = ""
    host: str = ""
    port: int = 0
    server: bool = False
    wait: bool = True

    @property
    def filename(self) -> str:
        """As `info chardev` and query-chardev show it."""
        where = f"unix:{self.path}" if self.family == "unix" else f"tcp:{self.host}:{self.port}"
        return where + (",server=on" if self.server else "")


ON_OFF = {"on": True, "yes": True, "off": False, "no": False}


def parse_socket_spec(spec: str) -> SocketSpec:
    """QEMU's legacy chardev syntax for sockets, as -qmp/-monitor/-serial take it."""
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in ("unix", "tcp"):
        raise ChardevError(f"'{spec}' is not a valid char driver")
    where, *options = rest.split(",")
    values: dict[str, bool] = {}
    for option in options:
        name, eq, value = option.partition("=")
        if name in ("server", "wait", "nodelay") and not eq:
            values[name] = True  # QEMU's old "server,nowait" spellings
            continue
        if name == "nowait" and not eq:
            values["wait"] = False
            continue
        if name not in ("server", "wait", "nodelay") or value not in ON_OFF:
            raise ChardevError(
                f"Invalid parameter '{name}'"
                if name not in ("server", "wait", "nodelay")
                else f"Parameter '{name}' expects 'on' or 'off'"
            )
        values[name] = ON_OFF[value]
    server = values.get("server", False)
    wait = values.get("wait", True)
    if kind == "unix":
        if not where:
            raise ChardevError("chardev: socket: no path given")
        return SocketSpec("unix", path=where, server=server, wait=wait)
    host, sep, port_text = where.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ChardevError(f"chardev: socket: bad port '{port_text}'")
    return SocketSpec("tcp", host=host, port=int(port_text), server=server, wait=wait)


def listen(spec: SocketSpec) -> socket.socket:
    if spec.family == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            os.unlink(spec.path)  # QEMU replaces a stale socket file
        except FileNotFoundError:
            pass
        address: object = spec.path
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        address = (spec.host or "0.0.0.0", spec.port)
    try:
        sock.bind(address)
        sock.listen(1)
    except OSError as exc:
        sock.close()
        where = spec.path if spec.family == "unix" else f"{spec.host}:{spec.port}"
        raise ChardevError(f"Failed to bind socket to {where}: {exc.strerror}") from None
    return sock


def connect(spec: SocketSpec) -> socket.socket:
    if spec.family == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address: object = spec.path
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        address = (spec.host or "localhost", spec.port)
    try:
        sock.connect(address)
    except OSError as exc:
        sock.close()
        where = spec.path if spec.family == "unix" else f"{spec.host}:{spec.port}"
        raise ChardevError(f"Failed to connect to '{where}': {exc.strerror}") from None
    return sock
