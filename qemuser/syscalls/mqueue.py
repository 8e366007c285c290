"""POSIX message queues (mq_overview(7)): the host kernel's own queues, so that a queue is
shared with forked children, with other guests and with host processes, and its descriptor is a
host fd like the guest's others. Every record the calls read or write has the host's layout
(abi/mqueue.py's mq_attr, a struct __kernel_timespec, siginfo.py's struct sigevent), and the
open flags they take (O_RDONLY/O_WRONLY/O_RDWR, O_CREAT, O_EXCL, O_NONBLOCK, O_CLOEXEC) have
x86_64's values on aarch64 and riscv64 too, so each call goes through as it is.

mq_timedsend and mq_timedreceive may sleep: they are declared `blocks` (other guest threads go
on), and restarted after a handler with SA_RESTART, as man 7 signal lists them. mq_notify's
SIGEV_SIGNAL signal is sent by the host to this process, and reaches the guest as any host
signal does (without the host's si_code SI_MESGQ and si_value: qemuser's signal bridge sees
only the number)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qemuser.host.libc import host_syscall
from qemuser.host.sysnums import (
    HOST_SYS_MQ_GETSETATTR,
    HOST_SYS_MQ_NOTIFY,
    HOST_SYS_MQ_OPEN,
    HOST_SYS_MQ_TIMEDRECEIVE,
    HOST_SYS_MQ_TIMEDSEND,
    HOST_SYS_MQ_UNLINK,
)
from qemuser.syscalls.abi.mqueue import MQ_ATTR
from qemuser.syscalls.abi.siginfo import SIGEVENT
from qemuser.syscalls.abi.timespec import TIMESPEC
from qemuser.syscalls.argkinds import FD, INT, OCTAL, PATH, PTR, ULONG, InBuf, OutBuf
from qemuser.syscalls.guestbuf import copy_in, copy_out, out_buffer
from qemuser.syscalls.registry import syscall

if TYPE_CHECKING:
    from qemuser.syscalls.context import GuestProcess

# the most a message may hold (fs/mqueue.c's HARD_MSGSIZEMAX): a longer length is the host's
# EMSGSIZE/EINVAL to give, from a buffer we need not copy
_MSGSIZE_MAX = 16 * 1024 * 1024


def _name(name: bytes | None) -> bytes | int:
    # mq_open(3) strips the leading '/': the call takes the name in mqueue's own file system,
    # never a path of ours to translate
    return 0 if name is None else name


@syscall("mq_open", PATH, INT, OCTAL, PTR)
def mq_open(proc: GuestProcess, name: bytes | None, oflag: int, mode: int, attr: int) -> int:
    return host_syscall(
        HOST_SYS_MQ_OPEN, _name(name), oflag, mode, copy_in(proc, attr, MQ_ATTR.size)
    )


@syscall("mq_unlink", PATH)
def mq_unlink(proc: GuestProcess, name: bytes | None) -> int:
    return host_syscall(HOST_SYS_MQ_UNLINK, _name(name))


@syscall("mq_timedsend", FD, InBuf(2), ULONG, ULONG, PTR, blocks=True)
def mq_timedsend(
    proc: GuestProcess, mqdes: int, msg: int, length: int, priority: int, timeout: int
) -> int:
    data = copy_in(proc, msg, min(length, _MSGSIZE_MAX)) if length else None
    limit = copy_in(proc, timeout, TIMESPEC.size)
    return host_syscall(HOST_SYS_MQ_TIMEDSEND, mqdes, data or 0, length, priority, limit)


@syscall("mq_timedreceive", FD, OutBuf(2), ULONG, PTR, PTR, blocks=True)
def mq_timedreceive(
    proc: GuestProcess, mqdes: int, msg: int, length: int, priority: int, timeout: int
) -> int:
    size = min(length, _MSGSIZE_MAX)
    data = out_buffer(proc, msg, size) if size else None
    prio = out_buffer(proc, priority, 4)
    limit = copy_in(proc, timeout, TIMESPEC.size)
    received = host_syscall(HOST_SYS_MQ_TIMEDRECEIVE, mqdes, data or 0, length, prio, limit)
    copy_out(proc, msg, data, received)
    copy_out(proc, priority, prio, 4)
    return received


@syscall("mq_notify", FD, PTR)
def mq_notify(proc: GuestProcess, mqdes: int, notification: int) -> int:
    return host_syscall(HOST_SYS_MQ_NOTIFY, mqdes, copy_in(proc, notification, SIGEVENT.size))


@syscall("mq_getsetattr", FD, PTR, PTR)
def mq_getsetattr(proc: GuestProcess, mqdes: int, new: int, old: int) -> int:
    previous = out_buffer(proc, old, MQ_ATTR.size)
    result = host_syscall(HOST_SYS_MQ_GETSETATTR, mqdes, copy_in(proc, new, MQ_ATTR.size), previous)
    copy_out(proc, old, previous, MQ_ATTR.size)
    return result
