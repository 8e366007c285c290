"""sched_setattr/sched_getattr and membarrier: the host's calls, as the others of the sched_*
family in proc.py.

struct sched_attr (abi/schedattr.py) has the host's layout; the kernel reads the size the
caller wrote in attr->size (sched_setattr: 0 means SCHED_ATTR_SIZE_VER0, a longer record must
end in zeros, E2BIG otherwise, with the size it knows written back) and writes the size the
caller gives (sched_getattr), so a host copy of up to a page of guest bytes goes through.
A pid is the host's (0: the calling thread, which for every guest thread but one is the engine's
host thread: the same approximation as sched_setscheduler's).

membarrier: the guest's threads take turns on one host thread (qemuser.user.threads), so any
barrier between them already holds; the host's call keeps its answers (the QUERY mask, the
registration that the PRIVATE_EXPEDITED commands want, EINVAL for a bad command)."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from qemuser.host.libc import UNMAPPED_HOST_ADDRESS, host_syscall
from qemuser.host.sysnums import HOST_SYS_MEMBARRIER, HOST_SYS_SCHED_GETATTR, HOST_SYS_SCHED_SETATTR
from qemuser.loader.fault import GuestFault
from qemuser.syscalls.abi.schedattr import SCHED_ATTR_SIZE_VER0
from qemuser.syscalls.argkinds import INT, PTR, ULONG
from qemuser.syscalls.guestbuf import copy_in, copy_out, out_buffer
from qemuser.syscalls.registry import syscall

if TYPE_CHECKING:
    from qemuser.syscalls.context import GuestProcess

_PAGE = 4096  # the kernel refuses a sched_attr longer than a page (E2BIG)


@syscall("sched_setattr", INT, PTR, ULONG)
def sched_setattr(proc: GuestProcess, pid: int, attr: int, flags: int) -> int:
    if not attr:
        return host_syscall(HOST_SYS_SCHED_SETATTR, pid, None, flags)
    try:
        size = proc.mem.read_u32(attr)
    except GuestFault:
        size = SCHED_ATTR_SIZE_VER0
    span = min(max(size, SCHED_ATTR_SIZE_VER0), _PAGE)
    record = copy_in(proc, attr, span)
    try:
        return host_syscall(HOST_SYS_SCHED_SETATTR, pid, record, flags)
    except OSError as exc:
        if exc.errno == errno.E2BIG:  # the kernel wrote the size it knows into attr->size
            copy_out(proc, attr, record, 4)
        raise


@syscall("sched_getattr", INT, PTR, ULONG, ULONG)
def sched_getattr(proc: GuestProcess, pid: int, attr: int, size: int, flags: int) -> int:
    span = min(size & 0xFFFF_FFFF, _PAGE)
    record = out_buffer(proc, attr, span) if span else None
    if record is None and attr:
        record = UNMAPPED_HOST_ADDRESS  # size 0: the host's EINVAL, before it looks
    result = host_syscall(HOST_SYS_SCHED_GETATTR, pid, record, size, flags)
    copy_out(proc, attr, record, span)
    return result


@syscall("membarrier", INT, ULONG, INT)
def membarrier(proc: GuestProcess, cmd: int, flags: int, cpu_id: int) -> int:
    return host_syscall(HOST_SYS_MEMBARRIER, cmd, flags, cpu_id)
