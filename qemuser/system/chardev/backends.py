"""Character devices: where a serial port's (or a monitor's) bytes go and come from.

`-chardev BACKEND,id=ID,...` and the legacy forms `-serial`/`-monitor` take (stdio, null,
file:PATH, pipe:PATH, pty, tcp:..., unix:..., chardev:ID) all make one of these. The machine's
thread polls `read()` between slices (it never blocks) and may sleep on `wait_fds()` while the
guest idles; socket servers accept their clients on a host thread of their own.
"""

from __future__ import annotations

import os
import pty
import select
import socket
import sys
import threading
import time
import tty
from dataclasses import dataclass, field

from qemuser.system.chardev.sockets import ChardevError, SocketSpec, connect, listen


class Chardev:
    """A byte stream in both directions; the base discards output and has no input. Every
    backend has a `label` (its id), set by its constructor."""

    @property
    def filename(self) -> str:
        """As `info chardev` and query-chardev show it."""
        return ""

    def write(self, data: bytes) -> None:
        pass

    def read(self) -> bytes:
        """What is ready now, b"" when nothing is (never blocks)."""
        return b""

    def wait_fds(self) -> list[int]:
        """File descriptors whose readiness means input (for the idle wait)."""
        return []

    def close(self) -> None:
        pass


def _ready(fd: int) -> bool:
    try:
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):
        return False


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            written = os.write(fd, data)
        except BlockingIOError:
            select.select([], [fd], [], 1)
            continue
        except OSError:
            return  # a closed reader (EPIPE) or a full disk: the guest's output is lost, as QEMU
        data = data[written:]


class NullChardev(Chardev):
    def __init__(self, label: str = "") -> None:
        self.label = label

    @property
    def filename(self) -> str:
        return "null"


@dataclass(eq=False)
class FdChardev(Chardev):
    """Output to one fd, input (when any) from another: stdio, file, pipe, pty."""

    label: str
    out_fd: int
    in_fd: int | None
    name: str
    owns_fds: bool = True

    @property
    def filename(self) -> str:
        return self.name

    def write(self, data: bytes) -> None:
        _write_all(self.out_fd, data)

    def read(self) -> bytes:
        if self.in_fd is None or not _ready(self.in_fd):
            return b""
        try:
            data = os.read(self.in_fd, 4096)
        except BlockingIOError:
            return b""
        except OSError:
            data = b""
        if not data:
            self.in_fd = None  # end of input: no more bytes for the guest
        return data

    def wait_fds(self) -> list[int]:
        return [] if self.in_fd is None else [self.in_fd]

    def close(self) -> None:
        if self.owns_fds:
            for fd in {self.out_fd, self.in_fd} - {None}:
                try:
                    os.close(fd)  # type: ignore[arg-type]
                except OSError:
                    pass


def stdio_chardev(label: str) -> FdChardev:
    # stdout may be closed (`>&-`): the guest's output then goes nowhere, as with QEMU.
    out_fd = 1
    try:
        os.fstat(1)
    except OSError:
        out_fd = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    in_fd: int | None = 0
    try:
        os.fstat(0)
    except OSError:
        in_fd = None
    return FdChardev(label, out_fd, in_fd, "stdio", owns_fds=False)


def file_chardev(label: str, path: str, append: bool = False) -> FdChardev:
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        raise ChardevError(f"Could not open '{path}': {exc.strerror}") from None
    return FdChardev(label, fd, None, path)


def pipe_chardev(label: str, path: str) -> FdChardev:
    """QEMU's pipe: PATH.in and PATH.out when both exist, else PATH itself both ways."""
    try:
        if os.path.exists(path + ".in") and os.path.exists(path + ".out"):
            out_fd = os.open(path + ".out", os.O_RDWR | os.O_CLOEXEC)
            in_fd = os.open(path + ".in", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        else:
            out_fd = in_fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ChardevError(f"Could not open '{path}': {exc.strerror}") from None
    return FdChardev(label, out_fd, in_fd, f"pipe:{path}")


def pty_chardev(label: str) -> FdChardev:
    """A new pseudo-terminal; QEMU names its slave on stderr so that a user can attach."""
    master, slave = pty.openpty()
    tty.setraw(slave)
    name = os.ttyname(slave)
    os.set_blocking(master, False)
    os.set_inheritable(master, False)
    sys.stderr.write(f"char device redirected to {name} (label {label})\n")
    sys.stderr.flush()
    dev = FdChardev(label, master, master, f"pty:{name}")
    dev.slave_fd = slave  # type: ignore[attr-defined]  # kept open: no EIO before a client comes
    return dev


@dataclass(eq=False)
class RingbufChardev(Chardev):
    """A ring buffer in memory (`ringbuf_read` reads it); the oldest bytes are overwritten."""

    label: str
    size: int = 65536
    data: bytearray = field(default_factory=bytearray)

    def __post_init__(self) -> None:
        if self.size <= 0 or self.size & (self.size - 1):
            raise ChardevError("size of ringbuf chardev must be power of two")

    @property
    def filename(self) -> str:
        return "ringbuf"

    def write(self, data: bytes) -> None:
        self.data += data
        if len(self.data) > self.size:
            del self.data[: len(self.data) - self.size]

    def take(self, count: int) -> bytes:
        out = bytes(self.data[:count])
        del self.data[:count]
        return out


class SocketChardev(Chardev):
    """tcp/unix, as server (listening; one client at a time) or client (with reconnect=N: a
    lost or refused connection is retried every N seconds)."""

    def __init__(self, label: str, spec: SocketSpec, reconnect: int = 0) -> None:
        self.label = label
        self.spec = spec
        self.reconnect = reconnect
        self._lock = threading.Lock()
        self._conn: socket.socket | None = None
        self._listener: socket.socket | None = None
        self._closed = False
        if spec.server:
            self._listener = listen(spec)
            if spec.wait:
                # QEMU's words, which scripts wait for before they connect
                sys.stderr.write(f"QEMU waiting for connection on: disconnected:{spec.filename}\n")
                sys.stderr.flush()
                self._conn, _ = self._listener.accept()
            threading.Thread(target=self._accept_loop, daemon=True, name=f"chardev-{label}").start()
        else:
            try:
                self._conn = connect(spec)
            except ChardevError:
                if not reconnect:
                    raise
            if reconnect:
                threading.Thread(target=self._reconnect_loop, daemon=True).start()

    @property
    def filename(self) -> str:
        state = "" if self._conn is not None else "disconnected:"
        return state + self.spec.filename

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._conn is None:
                    self._conn = conn
                    continue
            conn.close()  # one client at a time, as QEMU

    def _reconnect_loop(self) -> None:
        while not self._closed:
            if self._conn is None:
                try:
                    conn = connect(self.spec)
                except ChardevError:
                    conn = None
                if conn is not None:
                    with self._lock:
                        self._conn = conn
            time.sleep(self.reconnect)

    def _drop(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def write(self, data: bytes) -> None:
        conn = self._conn
        if conn is None:
            return  # no client: output is dropped, as QEMU's socket chardev does
        try:
            conn.sendall(data)
        except OSError:
            self._drop()

    def read(self) -> bytes:
        conn = self._conn
        if conn is None or not _ready(conn.fileno()):
            return b""
        try:
            data = conn.recv(4096)
        except OSError:
            data = b""
        if not data:
            self._drop()
        return data

    def wait_fds(self) -> list[int]:
        conn = self._conn
        return [] if conn is None else [conn.fileno()]

    def close(self) -> None:
        self._closed = True
        self._drop()
        if self._listener is not None:
            self._listener.close()
            if self.spec.family == "unix":
                try:
                    os.unlink(self.spec.path)
                except OSError:
                    pass
