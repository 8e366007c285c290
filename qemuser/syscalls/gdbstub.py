"""qemu-user's `-g port`: a GDB remote serial protocol stub for the guest process.

`qemuser-<arch> -g 1234 prog` (or QEMU_GDB=1234) starts the guest stopped at its first
instruction (the ELF interpreter's entry for a dynamic program) and waits for GDB on TCP port
1234; as in qemu's gdbstub/user.c, anything that is not a port number is the path of a unix
socket to listen on. The stub then serves the protocol (GDB manual, "Remote Protocol"):
registers through a target description (qXfer:features:read), memory, continue and single
step (also through vCont), software breakpoints, watchpoints, the auxiliary vector (so that
GDB finds the dynamic loader and the load address of a PIE), the guest's files read-only through
vFile (GDB's default sysroot "target:" then finds the libraries where the guest does, -L
included; with multiprocess ids GDB also learns the program's name, so it needs no file), kill
and detach. Every signal the
guest is about to take (its own faults included) is reported as a stop first, as qemu does; GDB
then passes it on (`C`/`vCont;C`) or drops it. Ctrl-C from GDB stops a running guest (seen
between two slices of guest code: a guest blocked in a system call stops when the call returns).

Breakpoints never touch guest memory: each is a unicorn code hook bounded to its one address,
which stops the engine before the instruction there runs. Watchpoints are memory hooks bounded
to the watched bytes (accesses the guest's system calls make on its behalf are not seen). The
guest is seen as one thread: a multi-threaded guest is reported through the thread that is
running when it stops. A forked child and a program the guest execs run undebugged.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import struct
import sys
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from unicorn import (
    UC_HOOK_CODE,
    UC_HOOK_MEM_READ,
    UC_HOOK_MEM_WRITE,
    Uc,
    UcError,
    arm64_const,
    riscv_const,
)
from unicorn.unicorn import UcContext
from unicorn.unicorn_const import UC_MEM_WRITE

from qemuser.loader.elf import LoadError
from qemuser.loader.memory import GuestFault

if TYPE_CHECKING:
    from qemuser.syscalls.process import ExitState, FatalSignal, Process
    from qemuser.syscalls.sigstate import PendingSignal

PACKET_SIZE = 0x4000  # the largest packet we accept; advertised in qSupported
# While GDB is attached the guest runs in counted slices, so that Ctrl-C is seen at the end of
# one (in about a millisecond).
CONTINUE_SLICE = 100_000
THREAD_ID = 1  # the one thread the stub shows (GDB's thread ids start at 1)
INTERRUPT_BYTE = 0x03  # Ctrl-C, sent outside any packet
ESCAPED = b"#$}*"  # bytes a packet body escapes as '}' then the byte xor 0x20
ENOENT_REPLY = b"E02"
EFAULT_REPLY = b"E0e"  # bad address (GDB prints "Cannot access memory")
EINVAL_REPLY = b"E16"


# vFile's own constants (GDB manual, "File-I/O Remote Protocol Extension"): open flags, errno
# values, and struct stat as big-endian fixed-size fields.
FILEIO_O_RDONLY = 0
FILEIO_EBADF = 9
FILEIO_EROFS = 30
FILEIO_EUNKNOWN = 9999
FILEIO_ERRNO = {
    errno.EPERM: 1,
    errno.ENOENT: 2,
    errno.EINTR: 4,
    errno.EBADF: 9,
    errno.EACCES: 13,
    errno.EFAULT: 14,
    errno.EBUSY: 16,
    errno.EEXIST: 17,
    errno.ENODEV: 19,
    errno.ENOTDIR: 20,
    errno.EISDIR: 21,
    errno.EINVAL: 22,
    errno.ENFILE: 23,
    errno.EMFILE: 24,
    errno.EFBIG: 27,
    errno.ENOSPC: 28,
    errno.ESPIPE: 29,
    errno.EROFS: 30,
    errno.ENAMETOOLONG: 91,
}
# st_dev, st_ino, st_mode, st_nlink, st_uid, st_gid, st_rdev, st_size, st_blksize, st_blocks,
# st_atime, st_mtime, st_ctime
FILEIO_STAT = struct.Struct(">IIIIIIIQQQIII")


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


# ---- registers and target descriptions -------------------------------------------------------


@dataclass(frozen=True)
class GdbRegister:
    name: str
    bits: int
    uc_reg: int
    type: str  # a GDB target-description type
    group: str | None = None


@dataclass(frozen=True)
class GdbFeature:
    name: str  # e.g. org.gnu.gdb.aarch64.core: GDB checks the register names it expects there
    registers: tuple[GdbRegister, ...]
    types_xml: str = ""  # type definitions the registers use


@dataclass(frozen=True)
class GdbArch:
    """How GDB sees one of our CPU specs: register numbers follow the order of the features."""

    architecture: str
    features: tuple[GdbFeature, ...]
    # a register whose writes go to another engine register (aarch64's cpsr: only the flags)
    write_through: dict[str, int] = field(default_factory=dict)

    @property
    def registers(self) -> tuple[GdbRegister, ...]:
        return tuple(reg for feature in self.features for reg in feature.registers)

    def target_xml(self) -> bytes:
        parts = [
            '<?xml version="1.0"?>',
            '<!DOCTYPE target SYSTEM "gdb-target.dtd">',
            "<target>",
            f"<architecture>{self.architecture}</architecture>",
            "<osabi>GNU/Linux</osabi>",
        ]
        for feature in self.features:
            parts.append(f'<feature name="{feature.name}">')
            if feature.types_xml:
                parts.append(feature.types_xml)
            for reg in feature.registers:
                group = f' group="{reg.group}"' if reg.group else ""
                parts.append(
                    f'<reg name="{reg.name}" bitsize="{reg.bits}" type="{reg.type}"{group}/>'
                )
            parts.append("</feature>")
        parts.append("</target>")
        return "\n".join(parts).encode()


# A V register seen as each lane shape (GDB's aarch64 tdesc offers the same views).
_AARCH64_VECTOR_TYPES = "\n".join(
    (
        '<vector id="v2d" type="ieee_double" count="2"/>',
        '<vector id="v2u" type="uint64" count="2"/>',
        '<vector id="v4f" type="ieee_single" count="4"/>',
        '<vector id="v4u" type="uint32" count="4"/>',
        '<vector id="v8u" type="uint16" count="8"/>',
        '<vector id="v16u" type="uint8" count="16"/>',
        '<union id="aarch64v">',
        '<field name="d" type="v2d"/>',
        '<field name="ud" type="v2u"/>',
        '<field name="s" type="v4f"/>',
        '<field name="us" type="v4u"/>',
        '<field name="h" type="v8u"/>',
        '<field name="b" type="v16u"/>',
        '<field name="q" type="uint128"/>',
        "</union>",
    )
)

_A64 = arm64_const
_AARCH64_X = tuple(range(_A64.UC_ARM64_REG_X0, _A64.UC_ARM64_REG_X28 + 1)) + (
    _A64.UC_ARM64_REG_X29,
    _A64.UC_ARM64_REG_X30,
)
AARCH64_GDB = GdbArch(
    architecture="aarch64",
    features=(
        GdbFeature(
            "org.gnu.gdb.aarch64.core",
            tuple(GdbRegister(f"x{i}", 64, reg, "int") for i, reg in enumerate(_AARCH64_X))
            + (
                GdbRegister("sp", 64, _A64.UC_ARM64_REG_SP, "data_ptr"),
                GdbRegister("pc", 64, _A64.UC_ARM64_REG_PC, "code_ptr"),
                # user mode runs at EL0 with nothing masked: only the condition flags are live
                GdbRegister("cpsr", 32, _A64.UC_ARM64_REG_NZCV, "int"),
            ),
        ),
        GdbFeature(
            "org.gnu.gdb.aarch64.fpu",
            tuple(
                GdbRegister(f"v{i}", 128, _A64.UC_ARM64_REG_V0 + i, "aarch64v", "vector")
                for i in range(32)
            )
            + (
                GdbRegister("fpsr", 32, _A64.UC_ARM64_REG_FPSR, "int", "float"),
                GdbRegister("fpcr", 32, _A64.UC_ARM64_REG_FPCR, "int", "float"),
            ),
            _AARCH64_VECTOR_TYPES,
        ),
    ),
)

_RV = riscv_const
RISCV_X_NAMES = (
    "zero ra sp gp tp t0 t1 t2 fp s1 a0 a1 a2 a3 a4 a5 a6 a7 "
    "s2 s3 s4 s5 s6 s7 s8 s9 s10 s11 t3 t4 t5 t6"
).split()
RISCV_F_NAMES = (
    "ft0 ft1 ft2 ft3 ft4 ft5 ft6 ft7 fs0 fs1 fa0 fa1 fa2 fa3 fa4 fa5 fa6 fa7 "
    "fs2 fs3 fs4 fs5 fs6 fs7 fs8 fs9 fs10 fs11 ft8 ft9 ft10 ft11"
).split()
_RISCV_X_TYPES = {"sp": "data_ptr", "ra": "code_ptr", "fp": "data_ptr", "gp": "data_ptr"}
RISCV64_GDB = GdbArch(
    architecture="riscv:rv64",
    features=(
        GdbFeature(
            "org.gnu.gdb.riscv.cpu",
            tuple(
                GdbRegister(name, 64, _RV.UC_RISCV_REG_X0 + i, _RISCV_X_TYPES.get(name, "int"))
                for i, name in enumerate(RISCV_X_NAMES)
            )
            + (GdbRegister("pc", 64, _RV.UC_RISCV_REG_PC, "code_ptr"),),
        ),
        GdbFeature(
            "org.gnu.gdb.riscv.fpu",
            tuple(
                GdbRegister(name, 64, _RV.UC_RISCV_REG_F0 + i, "ieee_double", "float")
                for i, name in enumerate(RISCV_F_NAMES)
            )
            + (
                GdbRegister("fflags", 32, _RV.UC_RISCV_REG_FFLAGS, "int", "float"),
                GdbRegister("frm", 32, _RV.UC_RISCV_REG_FRM, "int", "float"),
                GdbRegister("fcsr", 32, _RV.UC_RISCV_REG_FCSR, "int", "float"),
            ),
        ),
    ),
)

GDB_ARCHES = {"aarch64": AARCH64_GDB, "riscv64": RISCV64_GDB}


def encode_register(value: int, bits: int) -> bytes:
    """A register's value as the protocol carries it: target byte order (little), in hex."""
    return (value & ((1 << bits) - 1)).to_bytes(bits // 8, "little").hex().encode()


def decode_register(text: bytes, bits: int) -> int:
    return int.from_bytes(bytes.fromhex(text[: bits // 4].decode()), "little")


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


# ---- the stub ---------------------------------------------------------------------------------


@dataclass
class Resume:
    step: bool
    signo: int = 0  # a Linux signal to deliver on resuming, 0 for none


class GdbStub:
    """The debugger's side of one guest process. The run loop calls `attach` before the first
    instruction, `on_signal` when the guest faults, `on_delivery` before it takes a signal,
    `after_slice` after each engine run and `on_exit` at the end; `slice_instructions` bounds
    its next engine run (one instruction when GDB steps)."""

    def __init__(self, listener: socket.socket, where: str) -> None:
        self.listener = listener
        self.where = where
        self.conn: Connection | None = None
        self.proc: Process | None = None
        self.gdb_arch: GdbArch = AARCH64_GDB
        self.stepping = False
        self.breakpoints: dict[int, int] = {}  # guest address -> unicorn hook handle
        self.watchpoints: dict[tuple[int, int, int], int] = {}  # (kind, address, length) -> hook
        self.last_signal = signal.SIGTRAP  # why the guest stopped last (GDB's '?')
        self._skip_at: int | None = None  # a breakpoint to pass over once, when resuming at it
        self._hit_breakpoint = False
        self._watch_hit: tuple[int, int] | None = None  # (kind, address)
        self._watch_context: UcContext | None = None  # the CPU before the watched instruction
        self._watch_old_bytes: tuple[int, bytes] | None = None  # what it overwrote
        self._fresh_resume = False
        self._interrupted = threading.Event()  # Ctrl-C came while the guest ran
        self._watcher: threading.Thread | None = None
        self._watcher_stop_read = -1
        self._watcher_stop_write = -1
        self._fault: FatalSignal | None = None
        self._exact_stops: AbstractContextManager[None] | None = None
        self._host_files: set[int] = set()  # host fds GDB opened through vFile
        self.multiprocess = False  # GDB asked for p<pid>.<tid> thread ids

    @classmethod
    def open(cls, where: str) -> GdbStub:
        return cls(open_listener(where), where)

    @property
    def slice_instructions(self) -> int:
        """How many instructions the run loop's next engine run may take at most."""
        return 1 if self.stepping else CONTINUE_SLICE

    # ---- hooks called by the run loop ---------------------------------------------------------

    def attach(self, proc: Process) -> None:
        """Wait for GDB, then serve it with the guest stopped at its first instruction."""
        self.proc = proc
        self.gdb_arch = GDB_ARCHES[proc.spec.name]
        try:
            sock, _peer = self.listener.accept()
        except OSError as exc:
            raise GdbStubError(f"gdbserver on {self.where}: {exc.strerror}") from None
        finally:
            self._close_listener()
        sock.set_inheritable(False)
        if sock.family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = Connection(sock)
        proc.host_fd_reserved.add(sock.fileno())
        # A breakpoint's engine stop must land before its instruction, not at the end of the
        # block (where the per-access exit checks are off, exit_checks.py): exact stops for as
        # long as GDB is attached.
        self._exact_stops = proc.exit_checks.exact_stops()
        self._exact_stops.__enter__()
        self.last_signal = signal.SIGTRAP
        self._resume_here(proc, self._serve_and_resume(proc))

    def on_signal(self, proc: Process, fatal: FatalSignal) -> FatalSignal | None:
        """A fault of the guest's: GDB sees it first, then says which signal (if any) the
        guest gets. Returns the signal to force on the guest, or None."""
        if self.conn is None:
            return fatal
        self._stop_watcher()
        self._fault = fatal
        self._hit_breakpoint = False
        self.last_signal = fatal.signo
        self.conn.send(self._stop_reply(fatal.signo))
        forced = self._serve_and_resume(proc)
        # the run loop forces the signal (which may move pc to a handler): the skip over a
        # breakpoint at the resume address is armed after that, in after_slice
        self._fresh_resume = True
        return forced

    def on_delivery(self, proc: Process, pending: PendingSignal) -> PendingSignal | None:
        """A signal the guest is about to take (qemu reports each one): GDB sees it first and
        passes it on, or not. Returns the signal to deliver, or None."""
        if self.conn is None:
            return pending
        self._stop_watcher()
        self._fault = None
        self._hit_breakpoint = False
        self.last_signal = pending.signo
        self.conn.send(self._stop_reply(pending.signo))
        forced = self._serve_and_resume(proc)
        self._fresh_resume = True  # the signal's frame may move pc: skip armed in after_slice
        if self.conn is None:  # detached, or GDB went away: the guest takes its signal
            return pending
        if forced is None:  # GDB dropped it
            return None
        if forced.signo == pending.signo:
            return pending
        proc.force_signal(forced)  # GDB asked for another signal instead
        return None

    def after_slice(self, proc: Process) -> None:
        """After one run of the engine: report a breakpoint, watchpoint, finished step or
        Ctrl-C, and serve GDB until it resumes the guest."""
        if self.conn is None:
            return
        if self._fresh_resume:  # GDB has just resumed the guest after a reported fault
            self._fresh_resume = False
            self._arm_skip(proc)
            return
        if self._interrupted.is_set():
            signo = signal.SIGINT
        elif self._watch_hit is not None:
            self._undo_watched_instruction(proc)
            signo = signal.SIGTRAP
        elif self._hit_breakpoint or self.stepping:
            signo = signal.SIGTRAP
        else:
            return
        self._stop_watcher()
        self._fault = None
        self.last_signal = signo
        self.conn.send(self._stop_reply(signo))
        self._resume_here(proc, self._serve_and_resume(proc))

    def _resume_here(self, proc: Process, forced: FatalSignal | None) -> None:
        """Resuming outside a fault: a signal GDB passes is delivered now."""
        if forced is not None:
            proc.force_signal(forced)
        self._arm_skip(proc)

    def on_exit(self, state: ExitState) -> None:
        """W<status> or X<signal>: GDB's inferior is gone."""
        if self.conn is None:
            return
        self._stop_watcher()
        if state.signal is not None:
            self.conn.send(b"X%02x" % gdb_signal(state.signal) + self._process_suffix())
        else:
            self.conn.send(b"W%02x" % ((state.status or 0) & 0xFF) + self._process_suffix())
        self.disconnect()

    def _process_suffix(self) -> bytes:
        if self.multiprocess and self.proc is not None:
            return b";process:%x" % self.proc.pid
        return b""

    def forget_in_fork_child(self) -> None:
        """A forked guest child runs on undebugged (qemu-user does the same without
        follow-fork): it drops its copy of the connection (the parent's stays open), the
        breakpoints and the exact stops."""
        self._watcher = None  # the parent's thread: not in this process
        self.disconnect()
        if self.proc is not None:
            self.proc.debugger = None

    # ---- resuming ------------------------------------------------------------------------------

    def _serve_and_resume(self, proc: Process) -> FatalSignal | None:
        resume = self._serve(proc)
        self._hit_breakpoint = False
        self._watch_hit = None
        self._interrupted.clear()
        forced: FatalSignal | None = None
        if resume is None:  # detached, or GDB went away: the guest runs on undebugged
            self.stepping = False
            return self._fault
        self.stepping = resume.step
        if resume.signo:
            fault = self._fault
            if fault is not None and fault.signo == resume.signo:
                forced = fault
            else:
                from qemuser.syscalls.process import FatalSignal

                forced = FatalSignal(resume.signo)
        self._fault = None
        if not resume.step:
            self._start_watcher()
        return forced

    def _arm_skip(self, proc: Process) -> None:
        pc = proc.uc.reg_read(proc.spec.pc)
        self._skip_at = pc if pc in self.breakpoints else None

    def _on_breakpoint(self, uc: Uc, address: int, _size: int, _data: object) -> None:
        if self._skip_at == address:
            self._skip_at = None  # resuming at this breakpoint: its instruction runs once
            return
        self._skip_at = None
        self._hit_breakpoint = True
        uc.emu_stop()

    def _on_watch(
        self, uc: Uc, access: int, address: int, size: int, _value: int, kind: object
    ) -> None:
        """A watched access, about to happen. A stop requested here lands after the access but
        before the rest of its instruction (pc unchanged): `_undo_watched_instruction` then
        returns to the state saved now."""
        assert isinstance(kind, int)
        if self._watch_hit is not None:
            return
        self._watch_hit = (kind, address)
        self._watch_context = uc.context_save()
        self._watch_old_bytes = None
        if access == UC_MEM_WRITE:
            self._watch_old_bytes = (address, bytes(uc.mem_read(address, size)))
        uc.emu_stop()

    def _undo_watched_instruction(self, proc: Process) -> None:
        """Back to the state before the watched instruction: its registers and the bytes it
        stored. GDB takes aarch64 and riscv watchpoints to trigger before the access (its
        `have_nonsteppable_watchpoint`): it steps over the instruction itself, with the
        watchpoints out, and then looks at the value."""
        if self._watch_context is None:
            return
        proc.uc.context_restore(self._watch_context)
        self._watch_context = None
        if self._watch_old_bytes is not None:
            address, old = self._watch_old_bytes
            proc.mem.write_init(address, old)
            self._watch_old_bytes = None

    # ---- Ctrl-C while the guest runs -----------------------------------------------------------

    def _start_watcher(self) -> None:
        """A host thread waits for GDB's Ctrl-C while the guest runs. It only raises a flag:
        with exact stops on, an engine stop from another thread could land inside an
        instruction (preempt.py), so the run loop looks at the flag between its slices."""
        assert self.conn is not None
        if self._watcher_stop_read < 0:
            self._watcher_stop_read, self._watcher_stop_write = os.pipe2(os.O_CLOEXEC)
            assert self.proc is not None
            self.proc.host_fd_reserved.update((self._watcher_stop_read, self._watcher_stop_write))
        conn = self.conn
        if any(isinstance(event, Interrupt) for event in conn.pending):
            # Ctrl-C came with the resume packet, before the thread could see it
            conn.pending = [e for e in conn.pending if not isinstance(e, Interrupt)]
            self._interrupted.set()
            return
        sock = conn.sock
        stop_read = self._watcher_stop_read

        def watch() -> None:
            from qemuser.syscalls.sigstate import keep_signals_for_the_main_thread

            keep_signals_for_the_main_thread()
            while True:
                ready, _, _ = select.select([sock, stop_read], [], [])
                if stop_read in ready:
                    os.read(stop_read, 1)
                    return
                try:
                    data = sock.recv(4096)
                except OSError:
                    return
                if not data:
                    return
                events = conn.reader.feed(data)
                conn.pending.extend(e for e in events if not isinstance(e, Interrupt))
                if any(isinstance(e, Interrupt) for e in events):
                    self._interrupted.set()  # the run loop looks at the end of each slice
                    return

        self._watcher = threading.Thread(target=watch, name="qemuser-gdb", daemon=True)
        self._watcher.start()

    @staticmethod
    def _watcher_stop_requested(stop_read: int) -> bool:
        ready, _, _ = select.select([stop_read], [], [], 0)
        if ready:
            os.read(stop_read, 1)
        return bool(ready)

    def _stop_watcher(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is None:
            return
        if watcher.is_alive():
            os.write(self._watcher_stop_write, b"x")
        watcher.join()
        # the thread may have ended by itself (Ctrl-C, GDB gone) with the wake-up byte unread
        self._watcher_stop_requested(self._watcher_stop_read)

    # ---- the protocol --------------------------------------------------------------------------

    def _serve(self, proc: Process) -> Resume | None:
        """Answer GDB until it resumes the guest (a Resume) or detaches (None)."""
        conn = self.conn
        while conn is not None:
            event = conn.next_event()
            if event is None:  # GDB went away without detaching: qemu lets the guest run on
                self.disconnect()
                return None
            if isinstance(event, Interrupt):
                conn.send(self._stop_reply(self.last_signal))  # already stopped
                continue
            if isinstance(event, BadPacket):
                continue
            payload = event.payload
            try:
                outcome = self._handle(proc, payload)
            except (ValueError, IndexError, UcError):  # a malformed packet, a bad register
                outcome = EINVAL_REPLY
            if isinstance(outcome, Resume):
                return outcome
            if outcome is None:  # detached
                return None
            conn.send(outcome)
            conn = self.conn
        return None

    def _handle(self, proc: Process, packet: bytes) -> bytes | Resume | None:
        if not packet:
            return b""
        command = packet[:1]
        handler = self._COMMANDS.get(command)
        if handler is None:
            return b""  # unsupported: the empty reply
        return handler(self, proc, packet)

    def _query(self, proc: Process, packet: bytes) -> bytes:
        if packet.startswith(b"qSupported"):
            # multiprocess ids tell GDB the pid, which it needs to read the program's name
            # (qXfer:exec-file) when it was given no file
            self.multiprocess = b"multiprocess+" in packet
            return (
                b"PacketSize=%x;qXfer:features:read+;qXfer:auxv:read+;qXfer:exec-file:read+;"
                b"QStartNoAckMode+;vContSupported+" % PACKET_SIZE
            ) + (b";multiprocess+" if self.multiprocess else b"")
        if packet.startswith(b"qXfer:"):
            return self._transfer(proc, packet)
        if packet == b"qAttached" or packet.startswith(b"qAttached:"):
            return b"1"  # as qemu: on quitting, GDB detaches and the guest runs on
        if packet == b"qC":
            return b"QC" + self._thread_id(proc)
        if packet == b"qfThreadInfo":
            return b"m" + self._thread_id(proc)
        if packet == b"qsThreadInfo":
            return b"l"
        if packet.startswith(b"qSymbol"):
            return b"OK"
        if packet.startswith(b"qThreadExtraInfo"):
            return proc.thread_name.hex().encode() or b"00"
        return b""

    def _set(self, _proc: Process, packet: bytes) -> bytes:
        if packet == b"QStartNoAckMode":
            assert self.conn is not None
            self.conn.acks = False  # this packet was acknowledged already; none after it
            return b"OK"
        return b""

    def _transfer(self, proc: Process, packet: bytes) -> bytes:
        """qXfer:<object>:read:<annex>:<offset>,<length>."""
        parts = packet.split(b":")
        if len(parts) != 5 or parts[2] != b"read":
            return b""
        obj, annex = parts[1], parts[3]
        offset_text, _, length_text = parts[4].partition(b",")
        offset, length = int(offset_text, 16), int(length_text, 16)
        if obj == b"features":
            if annex != b"target.xml":
                return ENOENT_REPLY
            data = self.gdb_arch.target_xml()
        elif obj == b"auxv":
            data = self._auxv(proc)
        elif obj == b"exec-file":
            data = os.fsencode(proc.exe_path)
        else:
            return b""
        chunk = data[offset : offset + length]
        return (b"l" if offset + length >= len(data) else b"m") + chunk

    @staticmethod
    def _auxv(proc: Process) -> bytes:
        stack = proc.stack
        if stack is None:
            return b""
        size = len(stack.auxv) * 16  # the pairs, AT_NULL's included
        try:
            return proc.mem.read(stack.auxv_addr, size, check=False)
        except GuestFault:
            return b""

    def _stop_reason(self, _proc: Process, _packet: bytes) -> bytes:
        return self._stop_reply(self.last_signal)

    def _stop_reply(self, signo: int) -> bytes:
        assert self.proc is not None
        reply = b"T%02xthread:%s;" % (gdb_signal(signo), self._thread_id(self.proc))
        if self._watch_hit is not None and signo == signal.SIGTRAP:
            kind, address = self._watch_hit
            name = {2: b"watch", 3: b"rwatch", 4: b"awatch"}[kind]
            reply += name + b":%x;" % address
        return reply

    # registers

    def _read_registers(self, proc: Process, _packet: bytes) -> bytes:
        regs = self.gdb_arch.registers
        values = proc.uc.reg_read_batch([reg.uc_reg for reg in regs])
        return b"".join(encode_register(v, reg.bits) for v, reg in zip(values, regs))

    def _write_registers(self, proc: Process, packet: bytes) -> bytes:
        data = packet[1:]
        at = 0
        for reg in self.gdb_arch.registers:
            width = reg.bits // 4
            if at + width > len(data):
                break
            self._write_one(proc, reg, decode_register(data[at : at + width], reg.bits))
            at += width
        return b"OK"

    def _read_register(self, proc: Process, packet: bytes) -> bytes:
        number = int(packet[1:], 16)
        regs = self.gdb_arch.registers
        if number >= len(regs):
            return ENOENT_REPLY
        reg = regs[number]
        return encode_register(proc.uc.reg_read(reg.uc_reg), reg.bits)

    def _write_register(self, proc: Process, packet: bytes) -> bytes:
        number_text, _, value_text = packet[1:].partition(b"=")
        regs = self.gdb_arch.registers
        number = int(number_text, 16)
        if number >= len(regs):
            return ENOENT_REPLY
        reg = regs[number]
        self._write_one(proc, reg, decode_register(value_text, reg.bits))
        return b"OK"

    @staticmethod
    def _write_one(proc: Process, reg: GdbRegister, value: int) -> None:
        if reg.uc_reg == arm64_const.UC_ARM64_REG_NZCV:
            value &= 0xF000_0000
        proc.uc.reg_write(reg.uc_reg, value)

    # memory

    @staticmethod
    def _read_guest(proc: Process, address: int, length: int) -> bytes | None:
        if not proc.mem.is_fully_mapped(address, address + length):
            return None  # the engine maps more than the guest has (its own pages)
        try:
            return proc.mem.read(address, length)
        except GuestFault:
            pass
        try:  # pages the guest cannot read (GDB may look anywhere): the engine's own view
            return proc.mem.read(address, length, check=False)
        except (GuestFault, UcError):
            return None

    def _read_memory(self, proc: Process, packet: bytes) -> bytes:
        address_text, _, length_text = packet[1:].partition(b",")
        address, length = int(address_text, 16), int(length_text, 16)
        data = self._read_guest(proc, address, min(length, PACKET_SIZE // 2))
        return EFAULT_REPLY if data is None else data.hex().encode()

    def _write_memory(self, proc: Process, packet: bytes) -> bytes:
        header, _, body = packet[1:].partition(b":")
        address_text, _, length_text = header.partition(b",")
        address, length = int(address_text, 16), int(length_text, 16)
        data = bytes.fromhex(body.decode()) if packet[:1] == b"M" else body
        if len(data) != length:
            return EINVAL_REPLY
        if not proc.mem.is_fully_mapped(address, address + length):
            return EFAULT_REPLY
        try:
            proc.mem.write_init(address, data)  # GDB may patch read-only code pages
        except (GuestFault, UcError):
            return EFAULT_REPLY
        return b"OK"

    # running

    def _continue(self, proc: Process, packet: bytes) -> Resume:
        """c [addr], s [addr], C sig[;addr], S sig[;addr]."""
        command = packet[:1]
        rest = packet[1:]
        signo = 0
        if command in (b"C", b"S"):
            sig_text, _, rest = rest.partition(b";")
            signo = GDB_TO_LINUX_SIGNAL.get(int(sig_text, 16), 0)
        if rest:  # resume at another address
            proc.uc.reg_write(proc.spec.pc, int(rest, 16))
        return Resume(step=command in (b"s", b"S"), signo=signo)

    def _v_command(self, proc: Process, packet: bytes) -> bytes | Resume | None:
        if packet == b"vCont?":
            return b"vCont;c;C;s;S"
        if packet.startswith(b"vCont;"):
            for action in packet[6:].split(b";"):
                what, _, thread = action.partition(b":")
                if thread and not self._is_ours(proc, thread):
                    continue
                kind = what[:1]
                if kind in (b"c", b"s"):
                    return Resume(step=kind == b"s")
                if kind in (b"C", b"S"):
                    signo = GDB_TO_LINUX_SIGNAL.get(int(what[1:3], 16), 0)
                    return Resume(step=kind == b"S", signo=signo)
            return EINVAL_REPLY
        if packet.startswith(b"vKill"):
            assert self.conn is not None
            self.conn.send(b"OK")
            self._kill()
        if packet.startswith(b"vFile:"):
            return self._host_io(proc, packet[6:])
        return b""

    # files: GDB's default sysroot "target:" reads the guest's files (the program, its loader
    # and libraries) through the stub, so that no `set sysroot` is needed

    def _host_io(self, proc: Process, request: bytes) -> bytes:
        """vFile:<operation>:<arguments>; replies F<result>[;<data>] or F-1,<errno>."""
        operation, _, arguments = request.partition(b":")
        args = arguments.split(b",")
        try:
            if operation == b"setfs":
                return b"F0"  # one process, one file system view
            if operation == b"open":
                path = bytes.fromhex(args[0].decode())
                if int(args[1], 16) & 3 != FILEIO_O_RDONLY:
                    return b"F-1,%x" % FILEIO_EROFS  # reading is all GDB needs
                fd = os.open(proc.host_path(path), os.O_RDONLY | os.O_CLOEXEC)
                self._host_files.add(fd)
                proc.host_fd_reserved.add(fd)
                return b"F%x" % fd
            if operation == b"pread":
                fd, count, offset = (int(arg, 16) for arg in args[:3])
                if fd not in self._host_files:
                    return b"F-1,%x" % FILEIO_EBADF
                data = os.pread(fd, min(count, PACKET_SIZE // 2), offset)
                return b"F%x;" % len(data) + data
            if operation == b"close":
                fd = int(args[0], 16)
                if fd not in self._host_files:
                    return b"F-1,%x" % FILEIO_EBADF
                self._host_files.discard(fd)
                proc.host_fd_reserved.discard(fd)
                os.close(fd)
                return b"F0"
            if operation == b"fstat":
                fd = int(args[0], 16)
                if fd not in self._host_files:
                    return b"F-1,%x" % FILEIO_EBADF
                info = os.fstat(fd)
                packed = FILEIO_STAT.pack(
                    info.st_dev & 0xFFFF_FFFF,
                    info.st_ino & 0xFFFF_FFFF,
                    info.st_mode,
                    info.st_nlink,
                    info.st_uid,
                    info.st_gid,
                    info.st_rdev & 0xFFFF_FFFF,
                    info.st_size,
                    info.st_blksize,
                    info.st_blocks,
                    int(info.st_atime) & 0xFFFF_FFFF,
                    int(info.st_mtime) & 0xFFFF_FFFF,
                    int(info.st_ctime) & 0xFFFF_FFFF,
                )
                return b"F%x;" % len(packed) + packed
            if operation == b"readlink":
                target = os.readlink(proc.host_path(bytes.fromhex(args[0].decode())))
                return b"F%x;" % len(target) + target
        except OSError as exc:
            return b"F-1,%x" % FILEIO_ERRNO.get(exc.errno or 0, FILEIO_EUNKNOWN)
        return b""

    def _kill(self) -> None:
        """k / vKill: qemu-user exits at once, with status 0."""
        sys.stdout.flush()
        os._exit(0)

    def _kill_packet(self, _proc: Process, _packet: bytes) -> bytes:
        self._kill()
        return b""  # not reached

    def _detach(self, _proc: Process, _packet: bytes) -> None:
        assert self.conn is not None
        self.conn.send(b"OK")
        self.disconnect()
        return None

    def disconnect(self) -> None:
        """Forget GDB: the guest runs on without breakpoints."""
        self._stop_watcher()
        self._remove_all_points()
        self.stepping = False
        if self._exact_stops is not None:
            self._exact_stops.__exit__(None, None, None)
            self._exact_stops = None
        for fd in self._host_files:  # files GDB left open
            if self.proc is not None:
                self.proc.host_fd_reserved.discard(fd)
            os.close(fd)
        self._host_files.clear()
        if self.conn is not None:
            if self.proc is not None:
                self.proc.host_fd_reserved.discard(self.conn.sock.fileno())
            self.conn.close()
            self.conn = None

    def _set_thread(self, proc: Process, packet: bytes) -> bytes:
        return b"OK" if self._is_ours(proc, packet[2:]) else ENOENT_REPLY

    def _thread_alive(self, proc: Process, packet: bytes) -> bytes:
        thread = packet[1:]
        return b"OK" if self._is_ours(proc, thread) and b"-1" not in thread else ENOENT_REPLY

    def _thread_id(self, proc: Process) -> bytes:
        """The one thread: p<pid>.<pid> with multiprocess ids (the guest's pid), else 1."""
        if self.multiprocess:
            return b"p%x.%x" % (proc.pid, proc.pid)
        return b"%x" % THREAD_ID

    def _is_ours(self, proc: Process, thread: bytes) -> bool:
        """Whether a thread id (or -1, all; 0, any) names our one thread."""
        if thread.startswith(b"p"):
            pid, _, tid = thread[1:].partition(b".")
            ours = b"%x" % proc.pid
            return pid in (b"-1", b"0", ours) and tid in (b"", b"-1", b"0", ours)
        return thread in (b"-1", b"0", b"%x" % THREAD_ID)

    # breakpoints and watchpoints

    def _points(self, proc: Process, packet: bytes) -> bytes:
        insert = packet[:1] == b"Z"
        kind_text, address_text, length_text = packet[1:].split(b";")[0].split(b",")[:3]
        kind, address, length = int(kind_text), int(address_text, 16), int(length_text, 16)
        uc = proc.uc
        if kind in (0, 1):  # software and hardware breakpoints are the same thing here
            if insert and address not in self.breakpoints:
                self.breakpoints[address] = uc.hook_add(
                    UC_HOOK_CODE, self._on_breakpoint, None, address, address
                )
            elif not insert and address in self.breakpoints:
                uc.hook_del(self.breakpoints.pop(address))
            return b"OK"
        if kind in (2, 3, 4):
            key = (kind, address, length)
            if insert and key not in self.watchpoints:
                access = {
                    2: UC_HOOK_MEM_WRITE,
                    3: UC_HOOK_MEM_READ,
                    4: UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE,
                }
                self.watchpoints[key] = uc.hook_add(
                    access[kind], self._on_watch, kind, address, address + max(length, 1) - 1
                )
            elif not insert and key in self.watchpoints:
                uc.hook_del(self.watchpoints.pop(key))
            return b"OK"
        return b""

    def _remove_all_points(self) -> None:
        proc = self.proc
        if proc is None:
            return
        for hook in [*self.breakpoints.values(), *self.watchpoints.values()]:
            try:
                proc.uc.hook_del(hook)
            except UcError:
                pass
        self.breakpoints.clear()
        self.watchpoints.clear()
        self._skip_at = None

    def _close_listener(self) -> None:
        try:
            if self.listener.family == socket.AF_UNIX:
                os.unlink(self.where)
        except OSError:
            pass
        self.listener.close()

    _COMMANDS: dict[bytes, Callable[[GdbStub, Process, bytes], bytes | Resume | None]] = {
        b"?": _stop_reason,
        b"g": _read_registers,
        b"G": _write_registers,
        b"p": _read_register,
        b"P": _write_register,
        b"m": _read_memory,
        b"M": _write_memory,
        b"X": _write_memory,
        b"c": _continue,
        b"s": _continue,
        b"C": _continue,
        b"S": _continue,
        b"v": _v_command,
        b"k": _kill_packet,
        b"D": _detach,
        b"H": _set_thread,
        b"T": _thread_alive,
        b"q": _query,
        b"Q": _set,
        b"Z": _points,
        b"z": _points,
    }
