"""The GDB remote serial protocol on the wire: packet framing and escaping, one connection,
the listening socket `-g` names, and GDB's own signal numbers. Nothing here knows what is being
debugged (qemuser.gdb.session serves a qemuser.gdb.target.Target over a Connection)."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from qemuser.loader.elf import LoadError

PACKET_SIZE = 0x4000  # the largest packet we accept; advertised in qSupported
INTERRUPT_BYTE = 0x03  # Ctrl-C, sent outside any packet
ESCAPED = b"#$}*"  # bytes a packet body escapes as '}' then the byte xor 0x20
ENOENT_REPLY = b"E02"
EFAULT_REPLY = b"E0e"  # bad address (GDB prints "Cannot access memory")
EINVAL_REPLY = b"E16"


class GdbStubError(LoadError):
    """The stub cannot start (port in use, bad socket path): one line for the user."""


# ---- signal numbers -----------------------------------------------------------------------
# The protocol speaks GDB's own signal numbers (gdb/include/gdb/signals.def), not Linux's: they
# agree for the classic ones and differ for the rest.
LINUX_TO_GDB_SIGNAL = {
    1: 1,  # SIGHUP
    2: 2,  # SIGINT
    3: 3,  # SIGQUIT
    4: 4,  # SIGILL
    5: 5,  # SIGTRAP
    6: 6,  # SIGABRT
    7: 10,  # SIGBUS
    8: 8,  # SIGFPE
    9: 9,  # SIGKILL
    10: 30,  # SIGUSR1
    11: 11,  # SIGSEGV
    12: 31,  # SIGUSR2
    13: 13,  # SIGPIPE
    14: 14,  # SIGALRM
    15: 15,  # SIGTERM
    17: 20,  # SIGCHLD
    18: 19,  # SIGCONT
    19: 17,  # SIGSTOP
    20: 18,  # SIGTSTP
    21: 21,  # SIGTTIN
    22: 22,  # SIGTTOU
    23: 16,  # SIGURG
    24: 24,  # SIGXCPU
    25: 25,  # SIGXFSZ
    26: 26,  # SIGVTALRM
    27: 27,  # SIGPROF
    28: 28,  # SIGWINCH
    29: 23,  # SIGIO
    30: 32,  # SIGPWR
    31: 12,  # SIGSYS
    32: 77,  # GDB_SIGNAL_REALTIME_32
}
# GDB_SIGNAL_REALTIME_33 .. _63 are 45 .. 75
LINUX_TO_GDB_SIGNAL.update({linux: linux + 12 for linux in range(33, 64)})
GDB_TO_LINUX_SIGNAL = {gdb: linux for linux, gdb in LINUX_TO_GDB_SIGNAL.items()}
GDB_SIGNAL_UNKNOWN = 143  # GDB_SIGNAL_UNKNOWN


def gdb_signal(linux_signo: int) -> int:
    return LINUX_TO_GDB_SIGNAL.get(linux_signo, GDB_SIGNAL_UNKNOWN)


# ---- packet framing -----------------------------------------------------------------------


def checksum(body: bytes) -> int:
    """The two hex digits after '#': the sum of the body's bytes (as sent) modulo 256."""
    return sum(body) & 0xFF


def escape(data: bytes) -> bytes:
    """Escape the bytes a packet body cannot carry as they are ('#', '$', '}', and '*', which
    GDB would take for run-length encoding)."""
    if not any(byte in data for byte in ESCAPED):
        return data
    out = bytearray()
    for byte in data:
        if byte in ESCAPED:
            out += bytes((0x7D, byte ^ 0x20))
        else:
            out.append(byte)
    return bytes(out)


def unescape(data: bytes) -> bytes:
    if b"}" not in data:
        return data
    out = bytearray()
    escaped = False
    for byte in data:
        if escaped:
            out.append(byte ^ 0x20)
            escaped = False
        elif byte == 0x7D:
            escaped = True
        else:
            out.append(byte)
    return bytes(out)


def frame(payload: bytes) -> bytes:
    """A whole packet on the wire: $<escaped payload>#<checksum>."""
    body = escape(payload)
    return b"$" + body + b"#%02x" % checksum(body)


@dataclass
class Packet:
    payload: bytes  # unescaped


@dataclass
class Interrupt:
    """Ctrl-C (a bare 0x03 byte)."""


@dataclass
class BadPacket:
    """A packet whose checksum did not match: the sender is asked to send it again."""


Event = Packet | Interrupt | BadPacket


@dataclass
class PacketReader:
    """Turns the bytes GDB sends into events. Acknowledgements ('+', '-') are dropped: the
    transport is a stream socket, nothing is ever lost or sent again by us."""

    buffer: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[Event]:
        self.buffer += data
        events: list[Event] = []
        while self.buffer:
            first = self.buffer[0]
            if first == INTERRUPT_BYTE:
                del self.buffer[0]
                events.append(Interrupt())
                continue
            if first != ord("$"):
                del self.buffer[0]  # '+', '-' or noise between packets
                continue
            end = self.buffer.find(b"#")
            if end < 0 or len(self.buffer) < end + 3:
                break  # the rest of the packet has not arrived yet
            body = bytes(self.buffer[1:end])
            sent = bytes(self.buffer[end + 1 : end + 3])
            del self.buffer[: end + 3]
            try:
                good = int(sent, 16) == checksum(body)
            except ValueError:
                good = False
            events.append(Packet(unescape(body)) if good else BadPacket())
        return events


class Connection:
    """One GDB connection over a stream socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = PacketReader()
        self.pending: list[Event] = []
        self.acks = True  # until QStartNoAckMode

    def next_event(self) -> Event | None:
        """The next event, waiting for it; None when GDB has gone."""
        while not self.pending:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return None
            if not data:
                return None
            self.pending.extend(self.reader.feed(data))
        event = self.pending.pop(0)
        if self.acks and isinstance(event, Packet):
            self._send_raw(b"+")
        elif self.acks and isinstance(event, BadPacket):
            self._send_raw(b"-")  # GDB sends it again
        return event

    def send(self, payload: bytes) -> None:
        self._send_raw(frame(payload))

    def _send_raw(self, data: bytes) -> None:
        if not data:
            return
        try:
            self.sock.sendall(data)
        except OSError:
            pass  # GDB has gone: the next read says so

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# ---- the listening socket ---------------------------------------------------------------------


def open_listener(where: str) -> socket.socket:
    """Listen where `-g` says: a TCP port number, else a unix socket path (qemu-user's rule).
    Raises GdbStubError with qemu's one-line message."""
    try:
        port = int(where, 10) if where.isdigit() else 0
        if port > 0:
            if port > 65535:
                raise OSError(f"invalid port {port}")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("0.0.0.0", port))
                sock.listen(1)
            except OSError:
                sock.close()
                raise
        else:
            if not where:
                raise OSError("empty socket path")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(where)
                sock.listen(1)
            except OSError:
                sock.close()
                raise
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise GdbStubError(f"could not open gdbserver on {where}: {reason}") from None
    sock.set_inheritable(False)
    return sock
