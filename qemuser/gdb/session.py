"""One GDB session: the remote protocol served over a connection for one `Target`.

The session answers GDB's packets (GDB manual, "Remote Protocol"): registers through a target
description (qXfer:features:read), memory, continue and single step (also through vCont),
breakpoints and watchpoints (the target implements them), the auxiliary vector and the
program's name when the target has them, the target's files read-only through vFile, threads
(the target is seen as one thread), kill and detach. The guest's own runner decides when the
target stops: it calls `report_stop` with the signal, which sends the stop reply and serves GDB
until it resumes (a Resume) or goes away (None). While the target runs, a host thread watches
the connection for GDB's Ctrl-C and raises `interrupted`, which the runner looks at between its
slices. Nothing here knows user mode or system mode.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

from qemuser.gdb.fileio import (
    FILEIO_EBADF,
    FILEIO_EROFS,
    FILEIO_ERRNO,
    FILEIO_EUNKNOWN,
    FILEIO_O_RDONLY,
    FILEIO_STAT,
)
from qemuser.gdb.packets import (
    EFAULT_REPLY,
    EINVAL_REPLY,
    ENOENT_REPLY,
    GDB_TO_LINUX_SIGNAL,
    PACKET_SIZE,
    BadPacket,
    Connection,
    GdbStubError,
    Interrupt,
    gdb_signal,
    open_listener,
)
from qemuser.gdb.target import BREAKPOINT_KINDS, WATCHPOINT_KINDS, Target
from qemuser.gdb.tdesc import decode_register, encode_register
from qemuser.host.signals import keep_signals_for_the_main_thread

THREAD_ID = 1  # the one thread the session shows (GDB's thread ids start at 1)
WATCH_NAMES = {2: b"watch", 3: b"rwatch", 4: b"awatch"}


@dataclass
class Resume:
    step: bool
    signo: int = 0  # a Linux signal to deliver on resuming, 0 for none


class GdbSession:
    """The protocol side of debugging one target, from the listening socket to detach."""

    def __init__(self, listener: socket.socket, where: str) -> None:
        self.listener: socket.socket | None = listener
        self.where = where
        self.conn: Connection | None = None
        self.target: Target | None = None
        self.last_signal = signal.SIGTRAP  # why the target stopped last (GDB's '?')
        self.multiprocess = False  # GDB asked for p<pid>.<tid> thread ids
        self.interrupted = threading.Event()  # Ctrl-C came while the target ran
        self._watcher: threading.Thread | None = None
        self._watcher_stop_read = -1
        self._watcher_stop_write = -1
        self._host_files: set[int] = set()  # host fds GDB opened through vFile

    @classmethod
    def open(cls, where: str) -> GdbSession:
        """Listen where `-g` says (GdbStubError with qemu's one line when that fails)."""
        return cls(open_listener(where), where)

    @property
    def connected(self) -> bool:
        return self.conn is not None

    def accept(self, target: Target) -> None:
        """Wait for GDB to connect; the listening socket is closed then (one debugger)."""
        self.target = target
        assert self.listener is not None
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
        target.reserve_fd(sock.fileno(), True)
        self.last_signal = signal.SIGTRAP

    def report_stop(self, signo: int) -> Resume | None:
        """The target stopped with `signo`: tell GDB, serve it until it resumes the target
        (a Resume) or detaches or goes away (None)."""
        self.stop_watcher()
        self.last_signal = signo
        assert self.conn is not None
        self.conn.send(self._stop_reply(signo))
        return self.serve()

    def serve(self) -> Resume | None:
        """Answer GDB until it resumes the target (a Resume) or detaches (None)."""
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
            try:
                outcome = self._handle(event.payload)
            except (ValueError, IndexError):  # a malformed packet, a bad register or value
                outcome = EINVAL_REPLY
            if isinstance(outcome, Resume):
                return outcome
            if outcome is None:  # detached
                return None
            conn.send(outcome)
            conn = self.conn
        return None

    def report_exit(self, status: int | None, signo: int | None) -> None:
        """W<status> or X<signal>: GDB's inferior is gone; the session ends."""
        if self.conn is None:
            return
        self.stop_watcher()
        if signo is not None:
            self.conn.send(b"X%02x" % gdb_signal(signo) + self._process_suffix())
        else:
            self.conn.send(b"W%02x" % ((status or 0) & 0xFF) + self._process_suffix())
        self.disconnect()

    def disconnect(self) -> None:
        """Forget GDB (the target's points are the target's to drop)."""
        self.stop_watcher()
        target = self.target
        for fd in self._host_files:  # files GDB left open
            if target is not None:
                target.reserve_fd(fd, False)
            os.close(fd)
        self._host_files.clear()
        if self.conn is not None:
            if target is not None:
                target.reserve_fd(self.conn.sock.fileno(), False)
            self.conn.close()
            self.conn = None

    def forget_in_fork_child(self) -> None:
        """In a forked copy of the debugged process: drop this copy of the connection (the
        parent's stays open) without touching the parent's watcher thread."""
        self._watcher = None
        self.disconnect()

    def _process_suffix(self) -> bytes:
        if self.multiprocess and self.target is not None:
            return b";process:%x" % self.target.pid
        return b""

    # ---- Ctrl-C while the target runs ----------------------------------------------------------

    def start_watcher(self) -> None:
        """A host thread waits for GDB's Ctrl-C while the target runs. It only raises a flag:
        an engine stop from another thread could land inside an instruction (exact stops are
        on), so the runner looks at the flag between its slices."""
        assert self.conn is not None and self.target is not None
        if self._watcher_stop_read < 0:
            self._watcher_stop_read, self._watcher_stop_write = os.pipe2(os.O_CLOEXEC)
            self.target.reserve_fd(self._watcher_stop_read, True)
            self.target.reserve_fd(self._watcher_stop_write, True)
        conn = self.conn
        if any(isinstance(event, Interrupt) for event in conn.pending):
            # Ctrl-C came with the resume packet, before the thread could see it
            conn.pending = [e for e in conn.pending if not isinstance(e, Interrupt)]
            self.interrupted.set()
            return
        sock = conn.sock
        stop_read = self._watcher_stop_read

        def watch() -> None:
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
                    self.interrupted.set()  # the runner looks at the end of each slice
                    return

        self._watcher = threading.Thread(target=watch, name="qemuser-gdb", daemon=True)
        self._watcher.start()

    @staticmethod
    def _watcher_stop_requested(stop_read: int) -> bool:
        ready, _, _ = select.select([stop_read], [], [], 0)
        if ready:
            os.read(stop_read, 1)
        return bool(ready)

    def stop_watcher(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is None:
            return
        if watcher.is_alive():
            os.write(self._watcher_stop_write, b"x")
        watcher.join()
        # the thread may have ended by itself (Ctrl-C, GDB gone) with the wake-up byte unread
        self._watcher_stop_requested(self._watcher_stop_read)

    # ---- the protocol --------------------------------------------------------------------------

    def _handle(self, packet: bytes) -> bytes | Resume | None:
        if not packet:
            return b""
        handler = self._COMMANDS.get(packet[:1])
        if handler is None:
            return b""  # unsupported: the empty reply
        return handler(self, packet)

    @property
    def _target(self) -> Target:
        assert self.target is not None
        return self.target

    def _query(self, packet: bytes) -> bytes:
        target = self._target
        if packet.startswith(b"qSupported"):
            # multiprocess ids tell GDB the pid, which it needs to read the program's name
            # (qXfer:exec-file) when it was given no file
            self.multiprocess = b"multiprocess+" in packet
            features = [b"PacketSize=%x" % PACKET_SIZE, b"qXfer:features:read+"]
            if target.auxv() is not None:
                features.append(b"qXfer:auxv:read+")
            if target.exec_file() is not None:
                features.append(b"qXfer:exec-file:read+")
            features += [b"QStartNoAckMode+", b"vContSupported+"]
            if self.multiprocess:
                features.append(b"multiprocess+")
            return b";".join(features)
        if packet.startswith(b"qXfer:"):
            return self._transfer(packet)
        if packet == b"qAttached" or packet.startswith(b"qAttached:"):
            return b"1"  # as qemu: on quitting, GDB detaches and the target runs on
        if packet == b"qC":
            return b"QC" + self._thread_id(self._current_thread())
        if packet == b"qfThreadInfo":
            return b"m" + b",".join(self._thread_id(tid) for tid in self._thread_ids())
        if packet == b"qsThreadInfo":
            return b"l"
        if packet.startswith(b"qSymbol"):
            return b"OK"
        if packet.startswith(b"qThreadExtraInfo"):
            extra = getattr(target, "thread_extra", None)  # a target of several threads
            tid = self._thread_number(packet.partition(b",")[2])
            if extra is not None and tid is not None and tid > 0:
                return extra(tid).hex().encode()
            return target.thread_name.hex().encode() or b"00"
        if packet == b"qqemu.PhyMemMode" and hasattr(target, "set_physical_memory"):
            return b"1" if getattr(target, "physical", False) else b"0"
        return b""

    def _set(self, packet: bytes) -> bytes:
        if packet == b"QStartNoAckMode":
            assert self.conn is not None
            self.conn.acks = False  # this packet was acknowledged already; none after it
            return b"OK"
        # QEMU's system-mode extension: memory packets take physical addresses (1) or virtual
        # ones through the MMU (0); only a target with an MMU has it (system mode's)
        physical = getattr(self._target, "set_physical_memory", None)
        if packet.startswith(b"Qqemu.PhyMemMode:") and physical is not None:
            mode = packet.partition(b":")[2]
            if mode not in (b"0", b"1"):
                return EINVAL_REPLY
            physical(mode == b"1")
            return b"OK"
        return b""

    def _transfer(self, packet: bytes) -> bytes:
        """qXfer:<object>:read:<annex>:<offset>,<length>."""
        parts = packet.split(b":")
        if len(parts) != 5 or parts[2] != b"read":
            return b""
        obj, annex = parts[1], parts[3]
        offset_text, _, length_text = parts[4].partition(b",")
        offset, length = int(offset_text, 16), int(length_text, 16)
        data: bytes | None
        if obj == b"features":
            if annex != b"target.xml":
                return ENOENT_REPLY
            data = self._target.description.target_xml()
        elif obj == b"auxv":
            data = self._target.auxv()
        elif obj == b"exec-file":
            data = self._target.exec_file()
        else:
            data = None
        if data is None:
            return b""
        chunk = data[offset : offset + length]
        return (b"l" if offset + length >= len(data) else b"m") + chunk

    def _stop_reason(self, _packet: bytes) -> bytes:
        return self._stop_reply(self.last_signal)

    def _stop_reply(self, signo: int) -> bytes:
        reply = b"T%02xthread:%s;" % (gdb_signal(signo), self._thread_id(self._current_thread()))
        hit = self._target.watch_hit()
        if hit is not None and signo == signal.SIGTRAP:
            kind, address = hit
            reply += WATCH_NAMES[kind] + b":%x;" % address
        return reply

    # registers

    def _read_registers(self, _packet: bytes) -> bytes:
        regs = self._target.description.registers
        values = self._target.read_registers()
        return b"".join(encode_register(v, reg.bits) for v, reg in zip(values, regs))

    def _write_registers(self, packet: bytes) -> bytes:
        data = packet[1:]
        at = 0
        for number, reg in enumerate(self._target.description.registers):
            width = reg.bits // 4
            if at + width > len(data):
                break
            self._target.write_register(number, decode_register(data[at : at + width], reg.bits))
            at += width
        return b"OK"

    def _read_register(self, packet: bytes) -> bytes:
        number = int(packet[1:], 16)
        regs = self._target.description.registers
        if number >= len(regs):
            return ENOENT_REPLY
        return encode_register(self._target.read_register(number), regs[number].bits)

    def _write_register(self, packet: bytes) -> bytes:
        number_text, _, value_text = packet[1:].partition(b"=")
        regs = self._target.description.registers
        number = int(number_text, 16)
        if number >= len(regs):
            return ENOENT_REPLY
        self._target.write_register(number, decode_register(value_text, regs[number].bits))
        return b"OK"

    # memory

    def _read_memory(self, packet: bytes) -> bytes:
        address_text, _, length_text = packet[1:].partition(b",")
        address, length = int(address_text, 16), int(length_text, 16)
        data = self._target.read_memory(address, min(length, PACKET_SIZE // 2))
        return EFAULT_REPLY if data is None else data.hex().encode()

    def _write_memory(self, packet: bytes) -> bytes:
        header, _, body = packet[1:].partition(b":")
        address_text, _, length_text = header.partition(b",")
        address, length = int(address_text, 16), int(length_text, 16)
        data = bytes.fromhex(body.decode()) if packet[:1] == b"M" else body
        if len(data) != length:
            return EINVAL_REPLY
        return b"OK" if self._target.write_memory(address, data) else EFAULT_REPLY

    # running

    def _continue(self, packet: bytes) -> Resume:
        """c [addr], s [addr], C sig[;addr], S sig[;addr]."""
        command = packet[:1]
        rest = packet[1:]
        signo = 0
        if command in (b"C", b"S"):
            sig_text, _, rest = rest.partition(b";")
            signo = GDB_TO_LINUX_SIGNAL.get(int(sig_text, 16), 0)
        if rest:  # resume at another address
            self._target.set_pc(int(rest, 16))
        return Resume(step=command in (b"s", b"S"), signo=signo)

    def _v_command(self, packet: bytes) -> bytes | Resume | None:
        if packet == b"vCont?":
            return b"vCont;c;C;s;S"
        if packet.startswith(b"vCont;"):
            for action in packet[6:].split(b";"):
                what, _, thread = action.partition(b":")
                if thread and not self._is_ours(thread):
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
            self._target.kill()
        if packet.startswith(b"vFile:") and self._target.files is not None:
            return self._host_io(packet[6:])
        return b""

    # files: GDB's default sysroot "target:" reads the target's files (the program, its loader
    # and libraries) through the stub, so that no `set sysroot` is needed

    def _host_io(self, request: bytes) -> bytes:
        """vFile:<operation>:<arguments>; replies F<result>[;<data>] or F-1,<errno>."""
        files = self._target.files
        assert files is not None
        operation, _, arguments = request.partition(b":")
        args = arguments.split(b",")
        try:
            if operation == b"setfs":
                return b"F0"  # one process, one file system view
            if operation == b"open":
                path = bytes.fromhex(args[0].decode())
                if int(args[1], 16) & 3 != FILEIO_O_RDONLY:
                    return b"F-1,%x" % FILEIO_EROFS  # reading is all GDB needs
                fd = files.open(path)
                self._host_files.add(fd)
                self._target.reserve_fd(fd, True)
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
                self._target.reserve_fd(fd, False)
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
                target = files.readlink(bytes.fromhex(args[0].decode()))
                return b"F%x;" % len(target) + target
        except OSError as exc:
            return b"F-1,%x" % FILEIO_ERRNO.get(exc.errno or 0, FILEIO_EUNKNOWN)
        return b""

    def _kill_packet(self, _packet: bytes) -> bytes:
        self._target.kill()

    def _detach(self, _packet: bytes) -> None:
        assert self.conn is not None
        self.conn.send(b"OK")
        self.disconnect()
        return None

    def _set_thread(self, packet: bytes) -> bytes:
        select = getattr(self._target, "select_thread", None)  # a target of several threads
        if select is None:
            return b"OK" if self._is_ours(packet[2:]) else ENOENT_REPLY
        tid = self._thread_number(packet[2:])
        return b"OK" if tid is not None and select(tid) else ENOENT_REPLY

    def _thread_alive(self, packet: bytes) -> bytes:
        thread = packet[1:]
        if hasattr(self._target, "thread_ids"):
            tid = self._thread_number(thread)
            return b"OK" if tid in self._thread_ids() else ENOENT_REPLY
        return b"OK" if self._is_ours(thread) and b"-1" not in thread else ENOENT_REPLY

    def _thread_ids(self) -> list[int]:
        """The target's threads (`thread_ids`, system mode's vCPUs), else the one thread."""
        ids = getattr(self._target, "thread_ids", None)
        return ids() if ids is not None else [THREAD_ID]

    def _current_thread(self) -> int:
        current = getattr(self._target, "current_thread", None)
        return current() if current is not None else THREAD_ID

    def _thread_id(self, tid: int = THREAD_ID) -> bytes:
        """p<pid>.<tid> with multiprocess ids, else <tid>; a one-thread target's thread is
        p<pid>.<pid> (user mode: the target's pid)."""
        if self.multiprocess:
            pid = self._target.pid
            if not hasattr(self._target, "thread_ids"):
                tid = pid
            return b"p%x.%x" % (pid, tid)
        return b"%x" % tid

    def _thread_number(self, thread: bytes) -> int | None:
        """A thread id's number (-1: all, 0: any) for a target of several threads; None for
        another process's or a malformed one."""
        if thread.startswith(b"p"):
            pid, _, thread = thread[1:].partition(b".")
            if pid not in (b"-1", b"0", b"%x" % self._target.pid):
                return None
            if not thread:
                return -1
        try:
            return -1 if thread == b"-1" else int(thread, 16)
        except ValueError:
            return None

    def _is_ours(self, thread: bytes) -> bool:
        """Whether a thread id (or -1, all; 0, any) names our one thread (one of a target's
        several threads)."""
        if hasattr(self._target, "thread_ids"):
            tid = self._thread_number(thread)
            return tid is not None and (tid in (-1, 0) or tid in self._thread_ids())
        if thread.startswith(b"p"):
            pid, _, tid = thread[1:].partition(b".")
            ours = b"%x" % self._target.pid
            return pid in (b"-1", b"0", ours) and tid in (b"", b"-1", b"0", ours)
        return thread in (b"-1", b"0", b"%x" % THREAD_ID)

    # breakpoints and watchpoints

    def _points(self, packet: bytes) -> bytes:
        insert = packet[:1] == b"Z"
        kind_text, address_text, length_text = packet[1:].split(b";")[0].split(b",")[:3]
        kind, address, length = int(kind_text), int(address_text, 16), int(length_text, 16)
        if kind not in BREAKPOINT_KINDS + WATCHPOINT_KINDS:
            return b""
        if insert:
            done = self._target.insert_point(kind, address, length)
        else:
            done = self._target.remove_point(kind, address, length)
        return b"OK" if done else b""

    def _close_listener(self) -> None:
        listener, self.listener = self.listener, None
        if listener is None:
            return
        try:
            if listener.family == socket.AF_UNIX:
                os.unlink(self.where)
        except OSError:
            pass
        listener.close()

    _COMMANDS: dict[bytes, Callable[[GdbSession, bytes], bytes | Resume | None]] = {
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
