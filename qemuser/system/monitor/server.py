"""Monitors on sockets: `-qmp unix:PATH,server=on,wait=off`, `-qmp tcp:HOST:PORT,server=on,...`,
`-monitor unix:...|tcp:...` — a listening socket, one session per client, each on its own host
thread (QEMU serves one client at a time per monitor; a second one waits in the backlog)."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

from qemuser.system.chardev.sockets import SocketSpec, connect, listen
from qemuser.system.monitor.hmp import HmpInterpreter
from qemuser.system.monitor.qmp import QmpSession
from qemuser.system.monitor.target import QEMU_VERSION, MonitorTarget

HMP_BANNER = "QEMU {}.{}.{} monitor - type 'help' for more information\r\n"
PROMPT = "(qemu) "


class HmpSession:
    """HMP over a byte stream: banner, prompt, one command per line."""

    def __init__(self, target: MonitorTarget, send: Callable[[bytes], None]) -> None:
        self.interp = HmpInterpreter(target)
        self.send = send
        self._line = b""

    def start(self) -> None:
        self.send((HMP_BANNER.format(*QEMU_VERSION) + PROMPT).encode())

    def show_prompt(self) -> None:
        """The console came back to the monitor (C-a c on mon:stdio): a fresh prompt."""
        self.send(("\r\n" + PROMPT).encode())

    def feed(self, data: bytes) -> None:
        self._line += data
        while b"\n" in self._line or b"\r" in self._line:
            cut = min(i for i in (self._line.find(b"\n"), self._line.find(b"\r")) if i >= 0)
            line, self._line = self._line[:cut], self._line[cut + 1 :].lstrip(b"\n")
            text = line.decode(errors="replace")
            self.send((text + "\r\n").encode())  # the terminal echo QEMU's readline gives
            self.send((self.interp.run(text) + PROMPT).encode())

    def close(self) -> None:
        pass


@dataclass
class MonitorServer:
    """A listening monitor socket; sessions of `mode` ("control": QMP, "readline": HMP)."""

    spec: SocketSpec
    target: MonitorTarget
    mode: str = "control"

    def __post_init__(self) -> None:
        self._sock = listen(self.spec) if self.spec.server else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wait_for_client(self) -> socket.socket | None:
        """wait=on: QEMU blocks start-up until a client connects."""
        if self._sock is None:
            return connect(self.spec)
        conn, _ = self._sock.accept()
        return conn

    def start(self, first: socket.socket | None = None) -> None:
        self._thread = threading.Thread(
            target=self._serve, args=(first,), daemon=True, name="monitor"
        )
        self._thread.start()

    def _serve(self, first: socket.socket | None) -> None:
        conn = first
        while not self._stop.is_set():
            if conn is None:
                if self._sock is None:
                    return
                try:
                    conn, _ = self._sock.accept()
                except OSError:
                    return
            self._session(conn)
            conn = None
            if self._sock is None:
                return

    def _session(self, conn: socket.socket) -> None:
        def send(data: bytes) -> None:
            try:
                conn.sendall(data)
            except OSError:
                pass

        session: QmpSession | HmpSession
        session = (
            QmpSession(self.target, send)
            if self.mode == "control"
            else HmpSession(self.target, send)
        )
        try:
            session.start()
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                session.feed(data)
        finally:
            session.close()
            conn.close()

    def close(self) -> None:
        self._stop.set()
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
            if self.spec.family == "unix":
                try:
                    os.unlink(self.spec.path)
                except OSError:
                    pass
