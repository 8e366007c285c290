"""One registry of system calls: each handler is declared once, with its name and argument kinds.

The same declaration drives dispatch (decoding arguments for the handler) and -strace (printing
them). Handlers take the Process and the decoded arguments and return an int result; an OSError
becomes -errno and a GuestFault -EFAULT, in `dispatch` alone.
"""

from __future__ import annotations

import errno
import signal as host_signal
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qemuser.loader.memory import GuestFault

if TYPE_CHECKING:
    from qemuser.syscalls.process import Process

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

    def decode(self, proc: Process, raw: int) -> Any:
        return raw

    def format(self, proc: Process, raw: int, args: tuple[int, ...], result: int) -> str:
        return str(s64(raw))


class Int(ArgKind):
    """A C int: 32-bit signed."""

    def decode(self, proc: Process, raw: int) -> int:
        return s32(raw)

    def format(self, proc: Process, raw: int, args: tuple[int, ...], result: int) -> str:
        return str(s32(raw))


class Long(ArgKind):
    def decode(self, proc: Process, raw: int) -> int:
        return s64(raw)


class ULong(ArgKind):
    def format(self, proc: Process, raw: int, args: tuple[int, ...], result: int) -> str:
        return str(raw & MASK64)


class Ptr(ArgKind):
    def format(self, proc: Process, raw: int, args: tuple[int, ...], result: int) -> str:
        return "NULL" if raw == 0 else f"{raw:#x}"


class Fd(Int):
    pass


class DirFd(Int):
    def format(self, proc: Process, raw: int, args: tuple[int, ...], result: int) -> str:
        return "AT_FDCWD" if s32(raw) == AT_FDCWD else str(s32(raw))


class Path(ArgKind):
    """A NUL-terminated path: the handler gets bytes (None for a NULL pointer)."""

    def decode(self, proc: Process, raw: int) -> bytes | None:
        if raw == 0:
            return None
        path = proc.mem.read_cstr(raw, 4097)
        if len(path) >= 4096:
            raise OSError(errno.ENAMETOOLONG, "path too long")
        return path

    def format(self, proc: Process, raw: int, args: tuple[int, ...], result: int) -> str:
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

    def format(self, proc: Process, raw: int, args: tuple[int, ...], result: int) -> str:
        try:
            return c_string_literal(proc.mem.read(raw, min(args[self.length_arg], 65)), 64)
        except GuestFault:
            return f"{raw:#x}"


class OutBuf(InBuf):
    """A buffer the kernel fills: strace shows what the call returned in it."""

    def format(self, proc: Process, raw: int, args: tuple[int, ...], result: int) -> str:
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

    def decode(self, proc: Process, raw: int) -> int:
        return raw & 0xFFFF_FFFF

    def format(self, proc: Process, raw: int, args: tuple[int, ...], result: int) -> str:
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

    def decode(self, proc: Process, raw: int) -> int:
        return s32(raw)

    def format(self, proc: Process, raw: int, args: tuple[int, ...], result: int) -> str:
        return self.names.get(s32(raw), str(s32(raw)))


class Octal(ArgKind):
    """A mode: shown as a C octal literal (0644; 0 is "0")."""

    def decode(self, proc: Process, raw: int) -> int:
        return raw & 0xFFFF_FFFF

    def format(self, proc: Process, raw: int, args: tuple[int, ...], result: int) -> str:
        value = raw & 0xFFFF_FFFF
        return f"0{value:o}" if value else "0"


class StructOut(ArgKind):
    """An out-pointer to a struct: strace shows selected fields after the call."""

    def __init__(self, show: Callable[[Process, int], str]) -> None:
        self.show = show

    def format(self, proc: Process, raw: int, args: tuple[int, ...], result: int) -> str:
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

    def format(self, proc: Process, raw: int, args: tuple[int, ...], result: int) -> str:
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
DIRFD = DirFd()
PATH = Path()
OCTAL = Octal()


class Ret:
    INT = "int"
    HEX = "hex"  # addresses (mmap, brk)
    NONE = "none"  # never returns (exit)


def _decode_int(proc: Process, raw: int) -> int:
    """Int.decode without its method call (the most common argument kind, on every call)."""
    return ((raw + 0x8000_0000) & 0xFFFF_FFFF) - 0x8000_0000


def _same(proc: Process, raw: int) -> int:
    return raw


def _caller(
    handler: Callable[..., int], kinds: tuple[ArgKind, ...]
) -> Callable[[Process, tuple[int, ...]], int]:
    """handler(proc, *decoded arguments) from the raw argument registers, with as little
    Python per call as the kinds allow: this runs on every system call."""
    count = len(kinds)
    decoders: list[Callable[[Process, int], Any]] = []
    for kind in kinds:
        decode = type(kind).decode
        if decode is ArgKind.decode:
            decoders.append(_same)  # the raw value as it is
        elif decode is Int.decode:
            decoders.append(_decode_int)
        else:
            decoders.append(kind.decode)
    if all(decoder is _same for decoder in decoders):
        return lambda proc, raw: handler(proc, *raw[:count])
    if all(decoder is _same for decoder in decoders[1:]):  # read(fd, buf, count), close(fd)
        first = decoders[0]
        return lambda proc, raw: handler(proc, first(proc, raw[0]), *raw[1:count])
    # spelled out for other short argument lists (lseek, fcntl, openat's neighbours)
    if count == 1:
        (d0,) = decoders
        return lambda proc, raw: handler(proc, d0(proc, raw[0]))
    if count == 2:
        d0, d1 = decoders
        return lambda proc, raw: handler(proc, d0(proc, raw[0]), d1(proc, raw[1]))
    if count == 3:
        d0, d1, d2 = decoders
        return lambda proc, raw: handler(proc, d0(proc, raw[0]), d1(proc, raw[1]), d2(proc, raw[2]))
    steps = tuple(enumerate(decoders))
    return lambda proc, raw: handler(proc, *[decoder(proc, raw[i]) for i, decoder in steps])


# eq=False: compared by identity only; every start would compile the generated __eq__.
@dataclass(frozen=True, eq=False)
class SyscallDef:
    """One declared system call: its handler, argument kinds and result kind."""

    name: str
    handler: Callable[..., int]
    args: tuple[ArgKind, ...]
    ret: str = Ret.INT
    # handler(proc, *decoded args) from the raw argument registers (what dispatch calls)
    call: Callable[[Process, tuple[int, ...]], int] = field(init=False, repr=False, compare=False)
    pending = False  # a declaration, not a deferred.Deferred still to be imported

    def __post_init__(self) -> None:
        object.__setattr__(self, "call", _caller(self.handler, self.args))


REGISTRY: dict[str, SyscallDef] = {}


def syscall(
    name: str, *args: ArgKind, ret: str = Ret.INT
) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Declare the handler of system call `name` with the kinds of its arguments."""

    def register(handler: Callable[..., int]) -> Callable[..., int]:
        if name in REGISTRY:
            raise ValueError(f"syscall {name} declared twice")
        REGISTRY[name] = SyscallDef(name, handler, args, ret)
        return handler

    return register


# Linux errno names the host Python does not know (include/uapi/asm-generic/errno.h)
EXTRA_ERRNO_NAMES = {133: "EHWPOISON"}


def errno_name(code: int) -> str:
    """The errno's symbolic name; asm-generic numbers are the x86-64 host's too."""
    return errno.errorcode.get(code) or EXTRA_ERRNO_NAMES.get(code, str(code))


def format_unknown_call(pid: int, number: int, name: str | None, raw: tuple[int, ...]) -> str:
    """The -strace line of a call we do not implement: its name when the number has one, its
    raw arguments (their kinds are unknown), and the ENOSYS it gets."""
    args = ",".join(f"{value:#x}" for value in raw)
    code = errno.ENOSYS
    shown = name or f"syscall_{number}"
    return f"{pid} {shown}({args}) = -1 errno={code} ({errno_name(code)}: {_strerror(code)})"


# ---- signals as -strace shows them -----------------------------------------------------------

# si_code values (include/uapi/asm-generic/siginfo.h): the generic ones, then per signal
SI_CODE_NAMES = {
    0: "SI_USER",
    0x80: "SI_KERNEL",
    -1: "SI_QUEUE",
    -2: "SI_TIMER",
    -3: "SI_MESGQ",
    -4: "SI_ASYNCIO",
    -5: "SI_SIGIO",
    -6: "SI_TKILL",
}
FAULT_CODE_NAMES = {
    4: {
        1: "ILL_ILLOPC",
        2: "ILL_ILLOPN",
        3: "ILL_ILLADR",
        4: "ILL_ILLTRP",
        5: "ILL_PRVOPC",
        6: "ILL_PRVREG",
        7: "ILL_COPROC",
        8: "ILL_BADSTK",
    },
    5: {1: "TRAP_BRKPT", 2: "TRAP_TRACE", 3: "TRAP_BRANCH", 4: "TRAP_HWBKPT"},
    7: {1: "BUS_ADRALN", 2: "BUS_ADRERR", 3: "BUS_OBJERR"},
    8: {
        1: "FPE_INTDIV",
        2: "FPE_INTOVF",
        3: "FPE_FLTDIV",
        4: "FPE_FLTOVF",
        5: "FPE_FLTUND",
        6: "FPE_FLTRES",
        7: "FPE_FLTINV",
        8: "FPE_FLTSUB",
    },
    11: {1: "SEGV_MAPERR", 2: "SEGV_ACCERR", 3: "SEGV_BNDERR", 4: "SEGV_PKUERR"},
}
SIGRTMIN = 32  # the kernel's (glibc keeps 32 and 33 for itself)


def signal_name(signo: int) -> str:
    """SIGSEGV, SIGRT_2...: asm-generic numbers 1-31 are the x86-64 host's too."""
    if SIGRTMIN <= signo <= 64:
        return f"SIGRT_{signo - SIGRTMIN}"
    try:
        return host_signal.Signals(signo).name
    except ValueError:
        return str(signo)


def format_taken_signal(siginfo: bytes) -> str:
    """The line -strace prints when a signal is delivered to a guest handler or kills the guest,
    from the guest's siginfo_t (include/uapi/asm-generic/siginfo.h: si_signo, si_errno,
    si_code, then a union at offset 16 holding si_addr for faults, si_pid/si_uid for kill)."""
    signo, _errno, code = struct.unpack_from("<iii", siginfo, 0)
    name = signal_name(signo)
    fields = [f"si_signo={name}"]
    fault_codes = FAULT_CODE_NAMES.get(signo, {})
    if code > 0 and code in fault_codes:
        (address,) = struct.unpack_from("<Q", siginfo, 16)
        fields += [
            f"si_code={fault_codes[code]}",
            f"si_addr={'NULL' if not address else hex(address)}",
        ]
    else:
        fields.append(f"si_code={SI_CODE_NAMES.get(code, str(code))}")
        if code <= 0:  # sent by a process: who sent it
            pid, uid = struct.unpack_from("<iI", siginfo, 16)
            fields += [f"si_pid={pid}", f"si_uid={uid}"]
    return f"--- {name} {{{', '.join(fields)}}} ---"


def format_call(proc: Process, sysdef: SyscallDef, raw: tuple[int, ...], result: int | None) -> str:
    """One -strace line: name(args) = result, with errno names."""
    shown = []
    res = 0 if result is None else result
    for kind, value in zip(sysdef.args, raw):
        try:
            shown.append(kind.format(proc, value, raw, res))
        except Exception:  # a formatter must never break the guest
            shown.append(f"{value:#x}")
    head = f"{proc.pid} {sysdef.name}({','.join(shown)})"
    if result is None:
        return head
    if -4096 < result < 0:
        code = -result
        return f"{head} = -1 errno={code} ({errno_name(code)}: {_strerror(code)})"
    if sysdef.ret == Ret.HEX:
        return f"{head} = {result & MASK64:#x}"
    return f"{head} = {result}"


def _strerror(code: int) -> str:
    import os

    try:
        return os.strerror(code)
    except ValueError:
        return "Unknown error"
