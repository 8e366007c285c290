"""Calls real programs make that belong to no other topic: the kernel log (busybox dmesg) and I/O
priorities (ionice). Each is passed to the host kernel, as qemu-user does, the log's bytes copied
out to the guest.
"""

from __future__ import annotations

import ctypes
import errno
from typing import TYPE_CHECKING

from qemuser.host.libc import host_syscall
from qemuser.host.sysnums import HOST_SYS_IOPRIO_GET, HOST_SYS_IOPRIO_SET, HOST_SYS_SYSLOG
from qemuser.syscalls.argkinds import INT, Enum, OutBuf
from qemuser.syscalls.registry import syscall

if TYPE_CHECKING:
    from qemuser.syscalls.context import GuestProcess

# include/linux/syslog.h
SYSLOG_ACTIONS = {
    0: "SYSLOG_ACTION_CLOSE",
    1: "SYSLOG_ACTION_OPEN",
    2: "SYSLOG_ACTION_READ",
    3: "SYSLOG_ACTION_READ_ALL",
    4: "SYSLOG_ACTION_READ_CLEAR",
    5: "SYSLOG_ACTION_CLEAR",
    6: "SYSLOG_ACTION_CONSOLE_OFF",
    7: "SYSLOG_ACTION_CONSOLE_ON",
    8: "SYSLOG_ACTION_CONSOLE_LEVEL",
    9: "SYSLOG_ACTION_SIZE_UNREAD",
    10: "SYSLOG_ACTION_SIZE_BUFFER",
}
SYSLOG_READS = (2, 3, 4)  # the actions that fill the buffer
SYSLOG_BUFFER_LIMIT = 1 << 24  # the kernel's log buffer is at most 2^25 bytes; guests ask less

# include/uapi/linux/ioprio.h
IOPRIO_WHICH = Enum({1: "IOPRIO_WHO_PROCESS", 2: "IOPRIO_WHO_PGRP", 3: "IOPRIO_WHO_USER"})
IOPRIO_WHO_PROCESS = 1


def _host_who(proc: GuestProcess, which: int, who: int) -> int:
    """A guest thread id means the calling thread: the host knows it as 0 (self)."""
    if which == IOPRIO_WHO_PROCESS and who == proc.tid:
        return 0
    return who


@syscall("syslog", Enum(SYSLOG_ACTIONS), OutBuf(2), INT)
def syslog(proc: GuestProcess, action: int, buf: int, length: int) -> int:
    if action not in SYSLOG_READS:
        return host_syscall(HOST_SYS_SYSLOG, action, None, length)
    if length < 0:
        raise OSError(errno.EINVAL, "negative length")
    host_buf = ctypes.create_string_buffer(max(1, min(length, SYSLOG_BUFFER_LIMIT)))
    count = host_syscall(HOST_SYS_SYSLOG, action, host_buf, min(length, SYSLOG_BUFFER_LIMIT))
    proc.mem.write(buf, host_buf.raw[:count])
    return count


@syscall("ioprio_get", IOPRIO_WHICH, INT)
def ioprio_get(proc: GuestProcess, which: int, who: int) -> int:
    return host_syscall(HOST_SYS_IOPRIO_GET, which, _host_who(proc, which, who))


@syscall("ioprio_set", IOPRIO_WHICH, INT, INT)
def ioprio_set(proc: GuestProcess, which: int, who: int, ioprio: int) -> int:
    return host_syscall(HOST_SYS_IOPRIO_SET, which, _host_who(proc, which, who), ioprio)
