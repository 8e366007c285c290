"""-strace: the line printed for each system call, for a call we do not implement, and for a
signal delivered to the guest."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from qemuser.syscalls.abi.siginfo import SIGINFO_FAULT, SIGINFO_HEAD, SIGINFO_KILL
from qemuser.syscalls.argkinds import MASK64, Ret
from qemuser.syscalls.signames import FAULT_CODE_NAMES, SI_CODE_NAMES, signal_name

if TYPE_CHECKING:
    from qemuser.syscalls.context import GuestProcess
    from qemuser.syscalls.registry import SyscallDef


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


def format_taken_signal(siginfo: bytes) -> str:
    """The line -strace prints when a signal is delivered to a guest handler or kills the guest,
    from the guest's siginfo_t (abi/siginfo.py): si_addr for faults, the sender (the _kill
    member's si_pid/si_uid) for the codes a process sends."""
    signo, _errno, code = SIGINFO_HEAD.unpack(siginfo)
    name = signal_name(signo)
    fields = [f"si_signo={name}"]
    fault_codes = FAULT_CODE_NAMES.get(signo, {})
    if code > 0 and code in fault_codes:
        address = SIGINFO_FAULT.unpack(siginfo).si_addr
        fields += [
            f"si_code={fault_codes[code]}",
            f"si_addr={'NULL' if not address else hex(address)}",
        ]
    else:
        fields.append(f"si_code={SI_CODE_NAMES.get(code, str(code))}")
        if code <= 0:  # sent by a process: who sent it
            sender = SIGINFO_KILL.unpack(siginfo)
            fields += [f"si_pid={sender.si_pid}", f"si_uid={sender.si_uid}"]
    return f"--- {name} {{{', '.join(fields)}}} ---"


def format_call(
    proc: GuestProcess, sysdef: SyscallDef, raw: tuple[int, ...], result: int | None
) -> str:
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
