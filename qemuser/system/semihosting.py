"""Arm semihosting (the "Semihosting for AArch32 and AArch64" spec, v2), on both virt boards.

The guest traps with `hlt #0xf000` (A64) or RISC-V's `slli x0,x0,0x1f; ebreak; srai x0,x0,7`;
the op is in x0/a0, x1/a1 points to the parameter block (64-bit words on both), the result
goes back in x0/a0. The arch code (system/arch/aarch64.py, riscv64.py) recognises the trap and
calls Semihosting.call; pointers are guest virtual addresses, read through the calling CPU's
own MMU (uc_vmem_read/uc_vmem_write), so a bad one gives -1 with errno EFAULT.

As QEMU 7.2 with target=native (or auto without GDB): ":tt" is the host's stdin, stdout or
stderr by the open mode, other names are host files relative to the current directory;
SYS_WRITEC/SYS_WRITE0/SYS_READC use the chardev= given, else the host's stderr/stdin.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from unicorn import UC_PROT_READ, UC_PROT_WRITE, Uc
from unicorn.unicorn_py3.unicorn import uclib

from qemuser.system.chardev.backends import Chardev

SYS_OPEN, SYS_CLOSE, SYS_WRITEC, SYS_WRITE0, SYS_WRITE, SYS_READ, SYS_READC = range(1, 8)
SYS_ISERROR, SYS_ISTTY, SYS_SEEK = 0x08, 0x09, 0x0A
SYS_FLEN, SYS_CLOCK, SYS_TIME, SYS_ERRNO = 0x0C, 0x10, 0x11, 0x13
SYS_GET_CMDLINE, SYS_HEAPINFO, SYS_EXIT, SYS_EXIT_EXTENDED = 0x15, 0x16, 0x18, 0x20
SYS_TMPNAM, SYS_REMOVE, SYS_RENAME, SYS_SYSTEM = 0x0D, 0x0E, 0x0F, 0x12
SYS_ELAPSED, SYS_TICKFREQ = 0x30, 0x31
TICKS_PER_SECOND = 1_000_000_000  # SYS_ELAPSED counts nanoseconds, as QEMU's get_clock()
ADP_STOPPED_APPLICATION_EXIT = 0x20026
WORD = 8  # both arches are 64-bit: parameter block words and results are 64 bits
MASK = (1 << 64) - 1
PAGE = 0x1000

# SYS_OPEN's modes 0-11 are fopen's "r", "rb", "r+", "r+b", "w", ... "a+b": pairs by mode // 2.
_OPEN_FLAGS = (
    os.O_RDONLY,
    os.O_RDWR,
    os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    os.O_RDWR | os.O_CREAT | os.O_TRUNC,
    os.O_WRONLY | os.O_CREAT | os.O_APPEND,
    os.O_RDWR | os.O_CREAT | os.O_APPEND,
)


class GuestFault(Exception):
    """A guest pointer the calling CPU cannot read or write."""


@dataclass
class SemihostingConfig:
    """-semihosting / -semihosting-config, as parsed (cli/system_options.py)."""

    enabled: bool = False
    target: str = "auto"  # "native" or "auto" (GDB is refused at the command line)
    chardev: str | None = None
    args: list[str] = field(default_factory=list)  # arg=..., SYS_GET_CMDLINE's words
    # Every arg= so far: QEMU merges the -semihosting-config options into one and, after
    # each, appends all of its arg= again ("arg=a,arg=b" then "arg=c" gives "a b a b c").
    arg_options: list[str] = field(default_factory=list)
    userspace: bool = False  # calls from EL0 / U mode too (else they are what they are)


_TRUE, _FALSE = ("on", "yes", "true", "y"), ("off", "no", "false", "n")


def parse_config(value: str, config: SemihostingConfig) -> None:
    """One -semihosting-config argument into `config` (ValueError: QEMU's message). As
    QEMU's, each one turns semihosting on unless it says enable=off."""
    config.enabled = True
    for item in value.split(","):
        key, sep, val = item.partition("=")
        if key in ("enable", "userspace"):
            val = val if sep else "on"  # QEMU's (deprecated) short form
            if val not in _TRUE + _FALSE:
                raise ValueError(
                    f"-semihosting-config {value}: Parameter '{key}' expects 'on' or 'off'"
                )
            setattr(config, "enabled" if key == "enable" else key, val in _TRUE)
        elif key == "target" and val in ("native", "auto"):
            config.target = val
        elif key == "target" and val == "gdb":
            raise ValueError(
                f"-semihosting-config {value}: semihosting through GDB (target=gdb) is not "
                "supported by qemuser"
            )
        elif key == "chardev" and val:
            config.chardev = val
        elif key == "arg" and sep:
            config.arg_options.append(val)
        elif key in ("target", "chardev", "arg"):
            raise ValueError(f"-semihosting-config {value}: unsupported semihosting-config {value}")
        else:
            raise ValueError(f"-semihosting-config {value}: Invalid parameter '{key}'")
    config.args.extend(config.arg_options)


def _vmem(uc: Uc, vaddr: int, prot: int, buf: ctypes.Array[ctypes.c_char]) -> bool:
    fn = uclib.uc_vmem_read if prot == UC_PROT_READ else uclib.uc_vmem_write
    return fn(uc._uch, ctypes.c_uint64(vaddr), prot, buf, ctypes.c_size_t(len(buf))) == 0


def read_guest(uc: Uc, vaddr: int, size: int) -> bytes:
    out = bytearray()
    while size > 0:
        chunk = min(size, PAGE - (vaddr & (PAGE - 1)))  # one page at a time: one translation
        buf = ctypes.create_string_buffer(chunk)
        if not _vmem(uc, vaddr, UC_PROT_READ, buf):
            raise GuestFault
        out += buf.raw
        vaddr, size = (vaddr + chunk) & MASK, size - chunk
    return bytes(out)


def write_guest(uc: Uc, vaddr: int, data: bytes) -> None:
    while data:
        chunk = min(len(data), PAGE - (vaddr & (PAGE - 1)))
        buf = ctypes.create_string_buffer(data[:chunk], chunk)
        if not _vmem(uc, vaddr, UC_PROT_WRITE, buf):
            raise GuestFault
        vaddr, data = (vaddr + chunk) & MASK, data[chunk:]


def read_string(uc: Uc, vaddr: int, limit: int = 1 << 20) -> bytes:
    out = bytearray()
    while len(out) < limit:
        chunk = read_guest(uc, vaddr, PAGE - (vaddr & (PAGE - 1)))
        end = chunk.find(0)
        if end >= 0:
            return bytes(out + chunk[:end])
        out += chunk
        vaddr = (vaddr + len(chunk)) & MASK
    raise GuestFault


@dataclass
class _Handle:
    fd: int
    console: bool  # ":tt": the host's own stdin/stdout/stderr, never closed


class Semihosting:
    """The semihosting calls of one machine: its open files, errno and command line."""

    def __init__(
        self,
        config: SemihostingConfig,
        *,
        cmdline: str,
        ram: tuple[int, int],
        stop: Callable[[int], None],
        console: Chardev | None = None,
    ) -> None:
        self.config = config
        self.cmdline = cmdline
        self.ram_base, self.ram_size = ram
        self.stop = stop
        self.console = console
        self.errno = 0
        self.handles: dict[int, _Handle] = {}
        self.started = time.monotonic_ns()  # SYS_ELAPSED counts from the machine's start

    def close_all(self) -> None:
        for handle in self.handles.values():
            if not handle.console:
                os.close(handle.fd)
        self.handles.clear()

    def call(self, uc: Uc, op: int, param: int) -> int:
        """One call: the value for x0/a0 (64 bits)."""
        try:
            return self._dispatch(uc, op, param) & MASK
        except GuestFault:
            self.errno = errno.EFAULT
        except OSError as exc:
            self.errno = exc.errno or errno.EIO
        return MASK  # -1

    def _args(self, uc: Uc, param: int, count: int) -> list[int]:
        raw = read_guest(uc, param, count * WORD)
        return [int.from_bytes(raw[i : i + WORD], "little") for i in range(0, len(raw), WORD)]

    def _handle(self, number: int) -> _Handle:
        handle = self.handles.get(number)
        if handle is None:
            raise OSError(errno.EBADF, "bad handle")
        return handle

    def _console_out(self, data: bytes) -> None:
        if self.console is not None:
            self.console.write(data)
        else:
            sys.stderr.flush()
            os.write(2, data)

    def _console_in(self) -> int:
        if self.console is None:
            data = os.read(0, 1)
            return data[0] if data else -1
        while True:
            data = self.console.read()
            if data:
                return data[0]  # one byte a call: the rest is dropped, as a guest asks per byte
            fds = self.console.wait_fds()
            if not fds:
                return -1
            select.select(fds, [], [])

    def _dispatch(self, uc: Uc, op: int, param: int) -> int:
        if op == SYS_OPEN:
            name_ptr, mode, length = self._args(uc, param, 3)
            name = read_guest(uc, name_ptr, length)
            if mode > 11:
                raise OSError(errno.EINVAL, "bad mode")
            if name == b":tt":
                fd, console = (0 if mode < 4 else 1 if mode < 8 else 2), True
            else:
                fd, console = os.open(name, _OPEN_FLAGS[mode // 2], 0o644), False
            number = 1
            while number in self.handles:
                number += 1
            self.handles[number] = _Handle(fd, console)
            return number
        if op == SYS_CLOSE:
            (number,) = self._args(uc, param, 1)
            handle = self._handle(number)
            del self.handles[number]
            if not handle.console:
                os.close(handle.fd)
            return 0
        if op == SYS_WRITEC:
            self._console_out(read_guest(uc, param, 1))
            return 0
        if op == SYS_WRITE0:
            self._console_out(read_string(uc, param))
            return 0
        if op == SYS_WRITE:
            number, buf, length = self._args(uc, param, 3)
            handle = self._handle(number)
            data = read_guest(uc, buf, length)
            if handle.console and handle.fd == 1:
                sys.stdout.flush()
            written = os.write(handle.fd, data) if data else 0
            return length - written  # the bytes NOT written
        if op == SYS_READ:
            number, buf, length = self._args(uc, param, 3)
            data = os.read(self._handle(number).fd, length)
            write_guest(uc, buf, data)
            return length - len(data)  # the bytes NOT read
        if op == SYS_READC:
            return self._console_in()
        if op == SYS_ISERROR:
            (status,) = self._args(uc, param, 1)
            return int(status >> 63 == 1)
        if op == SYS_ISTTY:
            (number,) = self._args(uc, param, 1)
            return int(os.isatty(self._handle(number).fd))
        if op == SYS_SEEK:
            number, position = self._args(uc, param, 2)
            os.lseek(self._handle(number).fd, position, os.SEEK_SET)
            return 0
        if op == SYS_FLEN:
            (number,) = self._args(uc, param, 1)
            return os.fstat(self._handle(number).fd).st_size
        if op == SYS_CLOCK:
            return int(time.process_time() * 100)  # QEMU: clock(), the host CPU time
        if op == SYS_TIME:
            return int(time.time())
        if op == SYS_ERRNO:
            return self.errno
        if op == SYS_TMPNAM:
            buf, target, size = self._args(uc, param, 3)
            name = f"{tempfile.gettempdir()}/qemu-{os.getpid():x}{target & 0xFF:02x}".encode()
            if len(name) + 1 > size:
                return MASK  # -1, errno untouched: QEMU's answer to a short buffer
            write_guest(uc, buf, name + b"\0")
            return 0
        if op == SYS_REMOVE:
            name_ptr, length = self._args(uc, param, 2)
            os.unlink(read_guest(uc, name_ptr, length))
            return 0
        if op == SYS_RENAME:
            old_ptr, old_length, new_ptr, new_length = self._args(uc, param, 4)
            os.rename(read_guest(uc, old_ptr, old_length), read_guest(uc, new_ptr, new_length))
            return 0
        if op == SYS_SYSTEM:
            command_ptr, length = self._args(uc, param, 2)
            command = read_guest(uc, command_ptr, length)
            sys.stdout.flush()
            return os.system(command.decode(errors="surrogateescape"))  # system()'s status
        if op == SYS_ELAPSED:
            elapsed = time.monotonic_ns() - self.started
            write_guest(uc, param, elapsed.to_bytes(WORD, "little"))  # 64-bit: one doubleword
            return 0
        if op == SYS_TICKFREQ:
            return TICKS_PER_SECOND
        if op == SYS_GET_CMDLINE:
            buf, size = self._args(uc, param, 2)
            line = self.cmdline.encode()
            if len(line) + 1 > size:
                raise OSError(errno.E2BIG, "command line too long")
            write_guest(uc, buf, line + b"\0")
            write_guest(uc, param + WORD, len(line).to_bytes(WORD, "little"))
            return 0
        if op == SYS_HEAPINFO:
            (block,) = self._args(uc, param, 1)
            # QEMU's system-mode answer: heap in the upper half of RAM, stack down from its top.
            top = self.ram_base + self.ram_size
            words = (self.ram_base + self.ram_size // 2, top, top, self.ram_base)
            write_guest(uc, block, b"".join(w.to_bytes(WORD, "little") for w in words))
            return 0
        if op in (SYS_EXIT, SYS_EXIT_EXTENDED):
            # 64-bit guests pass a block (reason, subcode) to both; ApplicationExit's subcode
            # is the status, any other reason is 1 (QEMU's common_semi_sys_exit_extended).
            reason, subcode = self._args(uc, param, 2)
            status = subcode & 0xFF if reason == ADP_STOPPED_APPLICATION_EXIT else 1
            self.close_all()
            self.stop(status)
            return 0
        raise UnsupportedCall(op)


class UnsupportedCall(Exception):
    """An op number semihosting does not define (QEMU aborts the machine)."""

    def __init__(self, op: int) -> None:
        super().__init__(f"Unsupported SemiHosting SWI 0x{op:02x}")
