"""Event file descriptors: eventfd, timerfd, epoll, inotify, signalfd.

eventfd, timerfd and inotify are the host's own objects (their records have the same layout on
every architecture). epoll needs translating: x86_64 packs struct epoll_event into 12 bytes,
while aarch64 and riscv64 use the natural 16-byte layout. signalfd is ours: signals reach the
guest through the emulator, so a signalfd is a pipe that the emulator writes records into.
"""

from __future__ import annotations

import ctypes
import errno
import os
from typing import TYPE_CHECKING

from qemuser.host.libc import host_syscall
from qemuser.host.sysnums import (
    HOST_SYS_EPOLL_CREATE1,
    HOST_SYS_EPOLL_CTL,
    HOST_SYS_EPOLL_PWAIT,
    HOST_SYS_EVENTFD2,
    HOST_SYS_INOTIFY_ADD_WATCH,
    HOST_SYS_INOTIFY_INIT1,
    HOST_SYS_INOTIFY_RM_WATCH,
    HOST_SYS_TIMERFD_CREATE,
    HOST_SYS_TIMERFD_GETTIME,
    HOST_SYS_TIMERFD_SETTIME,
)
from qemuser.syscalls.abi.poll import GUEST_EPOLL_EVENT, HOST_EPOLL_EVENT
from qemuser.syscalls.abi.sigaction import SIGSET, SIGSET_SIZE
from qemuser.syscalls.abi.timespec import ITIMERSPEC
from qemuser.syscalls.argkinds import FD, INT, MAYBE_FD, PATH, PTR, ULONG, Enum, Flags, guest_fd
from qemuser.syscalls.poll import read_guest_sigmask, read_timeout, wait_with_mask
from qemuser.syscalls.registry import syscall

if TYPE_CHECKING:
    from qemuser.syscalls.context import GuestProcess

O_CLOEXEC = 0o2000000
O_NONBLOCK = 0o4000
CLOEXEC_NONBLOCK = Flags({O_CLOEXEC: "O_CLOEXEC", O_NONBLOCK: "O_NONBLOCK", 1: "EFD_SEMAPHORE"})


@syscall("eventfd2", ULONG, CLOEXEC_NONBLOCK)
def eventfd2(proc: GuestProcess, initval: int, flags: int) -> int:
    if flags & ~(O_CLOEXEC | O_NONBLOCK | 1):
        return -errno.EINVAL
    return host_syscall(HOST_SYS_EVENTFD2, initval & 0xFFFF_FFFF, flags)


# ---- timerfd ---------------------------------------------------------------------------------
# struct __kernel_itimerspec is the same on the host: the bytes pass through.
ITIMERSPEC_SIZE = ITIMERSPEC.size


@syscall(
    "timerfd_create",
    Enum({0: "CLOCK_REALTIME", 1: "CLOCK_MONOTONIC", 7: "CLOCK_BOOTTIME"}),
    CLOEXEC_NONBLOCK,
)
def timerfd_create(proc: GuestProcess, clock: int, flags: int) -> int:
    return host_syscall(HOST_SYS_TIMERFD_CREATE, clock, flags)


@syscall(
    "timerfd_settime", FD, Flags({1: "TFD_TIMER_ABSTIME", 2: "TFD_TIMER_CANCEL_ON_SET"}), PTR, PTR
)
def timerfd_settime(proc: GuestProcess, fd: int, flags: int, new_ptr: int, old_ptr: int) -> int:
    new = ctypes.create_string_buffer(proc.mem.read(new_ptr, ITIMERSPEC_SIZE), ITIMERSPEC_SIZE)
    old = ctypes.create_string_buffer(ITIMERSPEC_SIZE)
    host_syscall(HOST_SYS_TIMERFD_SETTIME, fd, flags, new, old)
    if old_ptr:
        proc.mem.write(old_ptr, old.raw)
    return 0


@syscall("timerfd_gettime", FD, PTR)
def timerfd_gettime(proc: GuestProcess, fd: int, value_ptr: int) -> int:
    value = ctypes.create_string_buffer(ITIMERSPEC_SIZE)
    host_syscall(HOST_SYS_TIMERFD_GETTIME, fd, value)
    proc.mem.write(value_ptr, value.raw)
    return 0


# ---- epoll -----------------------------------------------------------------------------------
# struct epoll_event: the guest's is 16 bytes, the x86_64 host's packed into 12 (abi/poll.py).
EPOLL_OPS = Enum({1: "EPOLL_CTL_ADD", 2: "EPOLL_CTL_DEL", 3: "EPOLL_CTL_MOD"})
MAX_EVENTS = 1 << 16


@syscall("epoll_create1", Flags({O_CLOEXEC: "EPOLL_CLOEXEC"}))
def epoll_create1(proc: GuestProcess, flags: int) -> int:
    return host_syscall(HOST_SYS_EPOLL_CREATE1, flags)


@syscall("epoll_ctl", FD, EPOLL_OPS, FD, PTR)
def epoll_ctl(proc: GuestProcess, epfd: int, op: int, fd: int, event_ptr: int) -> int:
    host_event = ctypes.create_string_buffer(HOST_EPOLL_EVENT.size)
    if op != 2:
        event = GUEST_EPOLL_EVENT.unpack(proc.mem.read(event_ptr, GUEST_EPOLL_EVENT.size))
        host_event = ctypes.create_string_buffer(
            HOST_EPOLL_EVENT.pack(event), HOST_EPOLL_EVENT.size
        )
    return host_syscall(HOST_SYS_EPOLL_CTL, epfd, op, fd, host_event)


def _epoll_wait(
    proc: GuestProcess,
    epfd: int,
    events_ptr: int,
    maxevents: int,
    timeout_ns: int | None,
    sigmask_ptr: int,
    sigsetsize: int,
) -> int:
    if not 0 < maxevents <= MAX_EVENTS:
        return -errno.EINVAL
    mask = read_guest_sigmask(proc, sigmask_ptr, sigsetsize)
    host_events = ctypes.create_string_buffer(HOST_EPOLL_EVENT.size * maxevents)

    def wait(remaining_ns: int | None) -> int:
        timeout_ms = -1 if remaining_ns is None else (remaining_ns + 999_999) // 1_000_000
        return host_syscall(HOST_SYS_EPOLL_PWAIT, epfd, host_events, maxevents, timeout_ms, 0, 8)

    # with the guest's temporary mask for the wait: a host signal it blocks does not end it
    # (the wait goes on for the time left), one it takes ends it with EINTR (epoll_pwait01)
    n, _ = wait_with_mask(proc, mask, timeout_ns, wait)
    if n < 0:
        return n
    out = bytearray()
    for i in range(n):
        event = HOST_EPOLL_EVENT.unpack(host_events.raw, i * HOST_EPOLL_EVENT.size)
        out += GUEST_EPOLL_EVENT.pack(event)
    proc.mem.write(events_ptr, bytes(out))
    return n


@syscall("epoll_pwait", FD, PTR, INT, INT, PTR, ULONG, blocks=True, restart=False)
def epoll_pwait(
    proc: GuestProcess,
    epfd: int,
    events_ptr: int,
    maxevents: int,
    timeout: int,
    sigmask_ptr: int,
    sigsetsize: int,
) -> int:
    timeout_ns = None if timeout < 0 else timeout * 1_000_000
    return _epoll_wait(proc, epfd, events_ptr, maxevents, timeout_ns, sigmask_ptr, sigsetsize)


@syscall("epoll_pwait2", FD, PTR, INT, PTR, PTR, ULONG, blocks=True, restart=False)
def epoll_pwait2(
    proc: GuestProcess,
    epfd: int,
    events_ptr: int,
    maxevents: int,
    timeout_ptr: int,
    sigmask_ptr: int,
    sigsetsize: int,
) -> int:
    timeout_ns = read_timeout(proc, timeout_ptr)  # EINVAL for a negative or bad timespec
    return _epoll_wait(proc, epfd, events_ptr, maxevents, timeout_ns, sigmask_ptr, sigsetsize)


# ---- inotify ---------------------------------------------------------------------------------


@syscall("inotify_init1", CLOEXEC_NONBLOCK)
def inotify_init1(proc: GuestProcess, flags: int) -> int:
    return host_syscall(HOST_SYS_INOTIFY_INIT1, flags)


@syscall("inotify_add_watch", FD, PATH, ULONG)
def inotify_add_watch(proc: GuestProcess, fd: int, path: bytes | None, mask: int) -> int:
    if path is None:
        return -errno.EFAULT
    host = ctypes.create_string_buffer(proc.host_path(path))
    return host_syscall(HOST_SYS_INOTIFY_ADD_WATCH, fd, host, mask & 0xFFFF_FFFF)


@syscall("inotify_rm_watch", FD, INT)
def inotify_rm_watch(proc: GuestProcess, fd: int, wd: int) -> int:
    return host_syscall(HOST_SYS_INOTIFY_RM_WATCH, fd, wd)


# ---- signalfd --------------------------------------------------------------------------------


@syscall("signalfd4", MAYBE_FD, PTR, ULONG, CLOEXEC_NONBLOCK)
def signalfd4(proc: GuestProcess, fd: int, mask_ptr: int, sizemask: int, flags: int) -> int:
    if sizemask != SIGSET_SIZE or flags & ~(O_CLOEXEC | O_NONBLOCK):
        return -errno.EINVAL
    mask = SIGSET.unpack(proc.mem.read(mask_ptr, SIGSET_SIZE)).sig
    if fd != -1:
        if fd not in proc.signalfds:
            os.fstat(guest_fd(proc, fd))  # EBADF for no fd at all, as Linux checks first
            return -errno.EINVAL
        proc.signalfds[fd].mask = mask
        return fd
    # the read end is the guest's fd (with its O_NONBLOCK/O_CLOEXEC); the write end is ours
    read_end, write_end = os.pipe2(flags & O_NONBLOCK)
    os.set_inheritable(read_end, not flags & O_CLOEXEC)
    os.set_blocking(write_end, False)
    os.set_inheritable(write_end, False)
    proc.host_fd_reserved.add(write_end)
    proc.add_signalfd(read_end, write_end, mask)
    return read_end
