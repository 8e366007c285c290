"""Argument kinds: how each system call argument is decoded for its handler and shown by
-strace (a C int, a path, flags by name, a struct behind a pointer...), and the result kinds."""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qemuser.loader.fault import GuestFault

if TYPE_CHECKING:
    from qemuser.syscalls.context import GuestProcess

MASK64 = (1 << 64) - 1
AT_FDCWD = -100


def s32(value: int) -> int:
    value &= 0xFFFF_FFFF
    return value - (1 << 32) if value & 0x8000_0000 else value


def s64(value: int) -> int:
    value &= MASK64
    return value - (1 << 64) if value >> 63 else value


def c_string_literal(data: bytes, limit: int = 64) -> str:
    """A guest string as strace shows it: quoted, escaped, cut with '...' past `limit`."""
    shown = data[:limit]
    out = []
    for b in shown:
        c = chr(b)
        if c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif c == '"':
            out.append('\\"')
        elif c == "\\":
            out.append("\\\\")
        elif 32 <= b < 127:
            out.append(c)
        else:
            out.append(f"\\{b:o}")
    return '"' + "".join(out) + '"' + ("..." if len(data) > limit else "")


class ArgKind:
    """How one argument is decoded for the handler and shown by -strace."""

    def decode(self, proc: GuestProcess, raw: int) -> Any:
        return raw

    def format(self, proc: GuestProcess, raw: int, args: tuple[int, ...], result: int) -> str:
        return str(s64(raw))


class Int(ArgKind):
    """A C int: 32-bit signed."""

    def decode(self, proc: GuestProcess, raw: int) -> int:
        return s32(raw)

    def format(self, proc: GuestProcess, raw: int, args: tuple[int, ...], result: int) -> str:
        return str(s32(raw))


class Long(ArgKind):
    def decode(self, proc: GuestProcess, raw: int) -> int:
        return s64(raw)


class ULong(ArgKind):
    def format(self, proc: GuestProcess, raw: int, args: tuple[int, ...], result: int) -> str:
        return str(raw & MASK64)


class Ptr(ArgKind):
    def format(self, proc: GuestProcess, raw: int, args: tuple[int, ...], result: int) -> str:
        return "NULL" if raw == 0 else f"{raw:#x}"


def guest_fd(proc: GuestProcess, fd: int) -> int:
    """`fd` if it may be one of the guest's open files, else EBADF at once (as fdget() fails
    first in Linux): a negative number (Python's os calls would raise ValueError), or a host
    fd of the emulator's own (its log, a signalfd's write end...), which Linux would see as
    never opened. The host checks the rest: closed, out of range."""
    if fd < 0 or fd in proc.host_fd_reserved:
        raise OSError(errno.EBADF, "not an open file descriptor of the guest")
    return fd


class Fd(Int):
    """A file descriptor: every FD argument is checked here, in one place (guest_fd)."""

    def decode(self, proc: GuestProcess, raw: int) -> int:
        return guest_fd(proc, ((raw + 0x8000_0000) & 0xFFFF_FFFF) - 0x8000_0000)  # s32, inline


class MaybeFd(Int):
    """An fd that may be "none" (-1): mmap's with MAP_ANONYMOUS, signalfd4's "make one". The
    handler checks it with guest_fd where it is an fd."""


# a number no fd of ours ever has: the host's EBADF where Linux would look the dirfd up
_NO_FD = -1


class DirFd(Int):
    """A directory fd for a relative path (AT_FDCWD: the current directory). One of the
    emulator's own fds is no fd of the guest: the host sees one that is never open."""

    def decode(self, proc: GuestProcess, raw: int) -> int:
        fd = s32(raw)
        return _NO_FD if fd in proc.host_fd_reserved else fd

    def format(self, proc: GuestProcess, raw: int, args: tuple[int, ...], result: int) -> str:
        return "AT_FDCWD" if s32(raw) == AT_FDCWD else str(s32(raw))


class Path(ArgKind):
    """A NUL-terminated path: the handler gets bytes (None for a NULL pointer)."""

    def decode(self, proc: GuestProcess, raw: int) -> bytes | None:
        if raw == 0:
            return None
        path = proc.mem.read_cstr(raw, 4097)
        if len(path) >= 4096:
            raise OSError(errno.ENAMETOOLONG, "path too long")
        return path

    def format(self, proc: GuestProcess, raw: int, args: tuple[int, ...], result: int) -> str:
        if raw == 0:
            return "NULL"
        try:
            return c_string_literal(proc.mem.read_cstr(raw, 4097), 4096)
        except GuestFault:
            return f"{raw:#x}"


class InBuf(ArgKind):
    """A buffer the guest gives, its length in argument `length_arg`: strace shows the bytes."""

    def __init__(self, length_arg: int) -> None:
        self.length_arg = length_arg

    def format(self, proc: GuestProcess, raw: int, args: tuple[int, ...], result: int) -> str:
        try:
            return c_string_literal(proc.mem.read(raw, min(args[self.length_arg], 65)), 64)
        except GuestFault:
            return f"{raw:#x}"


class OutBuf(InBuf):
    """A buffer the kernel fills: strace shows what the call returned in it."""

    def format(self, proc: GuestProcess, raw: int, args: tuple[int, ...], result: int) -> str:
        if result < 0:
            return f"{raw:#x}"
        try:
            return c_string_literal(proc.mem.read(raw, min(result, 65)), 64)
        except GuestFault:
            return f"{raw:#x}"


class Flags(ArgKind):
    """Bit flags shown by name (O_RDONLY|O_CLOEXEC); `zero` names the value 0 if it has one."""

    def __init__(
        self,
        names: dict[int, str],
        zero: str = "0",
        mask_field: dict[int, str] | None = None,
        field_mask: int = 0,
        octal: bool = False,
    ) -> None:
        self.names = names
        self.zero = zero
        self.field_names = mask_field or {}
        self.field_mask = field_mask
        self.octal = octal

    def decode(self, proc: GuestProcess, raw: int) -> int:
        return raw & 0xFFFF_FFFF

    def format(self, proc: GuestProcess, raw: int, args: tuple[int, ...], result: int) -> str:
        value = raw & 0xFFFF_FFFF
        parts = []
        if self.field_mask:
            field = value & self.field_mask
            parts.append(self.field_names.get(field, f"{field:#x}"))
            value &= ~self.field_mask
        for bit, name in self.names.items():
            if value & bit == bit and bit:
                parts.append(name)
                value &= ~bit
        if value:
            parts.append(f"0{value:o}" if self.octal else f"{value:#x}")
        if not parts:
            return self.zero
        return "|".join(parts)


class Enum(ArgKind):
    def __init__(self, names: dict[int, str]) -> None:
        self.names = names

    def decode(self, proc: GuestProcess, raw: int) -> int:
        return s32(raw)

    def format(self, proc: GuestProcess, raw: int, args: tuple[int, ...], result: int) -> str:
        return self.names.get(s32(raw), str(s32(raw)))


class Octal(ArgKind):
    """A mode: shown as a C octal literal (0644; 0 is "0")."""

    def decode(self, proc: GuestProcess, raw: int) -> int:
        return raw & 0xFFFF_FFFF

    def format(self, proc: GuestProcess, raw: int, args: tuple[int, ...], result: int) -> str:
        value = raw & 0xFFFF_FFFF
        return f"0{value:o}" if value else "0"


class StructOut(ArgKind):
    """An out-pointer to a struct: strace shows selected fields after the call."""

    def __init__(self, show: Callable[[GuestProcess, int], str]) -> None:
        self.show = show

    def format(self, proc: GuestProcess, raw: int, args: tuple[int, ...], result: int) -> str:
        if raw == 0:
            return "NULL"
        if result < 0:
            return f"{raw:#x}"
        try:
            return self.show(proc, raw)
        except GuestFault:
            return f"{raw:#x}"


class StructIn(StructOut):
    """An in-pointer to a struct: strace shows selected fields."""

    def format(self, proc: GuestProcess, raw: int, args: tuple[int, ...], result: int) -> str:
        if raw == 0:
            return "NULL"
        try:
            return self.show(proc, raw)
        except GuestFault:
            return f"{raw:#x}"


# access(2)'s mode (include/linux/fcntl.h's F_OK/R_OK/W_OK/X_OK, the same on every arch)
ACCESS_MODE = Flags({4: "R_OK", 2: "W_OK", 1: "X_OK"}, zero="F_OK")

INT = Int()
LONG = Long()
ULONG = ULong()
PTR = Ptr()
FD = Fd()
MAYBE_FD = MaybeFd()
DIRFD = DirFd()
PATH = Path()
OCTAL = Octal()


class Ret:
    INT = "int"
    HEX = "hex"  # addresses (mmap, brk)
    NONE = "none"  # never returns (exit)
