"""Waiting for file descriptors: ppoll and pselect6 (asm-generic has no poll or select; the
libc builds them on these two).

Guest fds are host fds and struct pollfd and fd_set have the same bytes on both sides, so the
host kernel does the waiting. What we keep ourselves is the guest's signal mask: the mask these
calls install for their duration is the guest's (emulated) mask, and a host signal cuts the wait
short only when the guest can take a signal, as Linux's wait would end only then.
"""

from __future__ import annotations

import ctypes
import errno
import resource
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from qemuser.host.libc import host_syscall
from qemuser.host.sysnums import HOST_SYS_PPOLL, HOST_SYS_PSELECT6
from qemuser.syscalls.abi.poll import POLLFD, SIGSET_ARGPACK, Pollfd
from qemuser.syscalls.abi.sigaction import SIGSET, SIGSET_SIZE
from qemuser.syscalls.abi.timespec import pack_timespec_ns
from qemuser.syscalls.argkinds import INT, PTR, ULONG, ArgKind, StructIn
from qemuser.syscalls.clock import TIMESPEC_IN, read_timespec, wait_unless_signalled
from qemuser.syscalls.proc import STICKY_TIMEOUTS, current_persona
from qemuser.syscalls.registry import syscall
from qemuser.syscalls.sigstate import UNBLOCKABLE

if TYPE_CHECKING:
    from qemuser.syscalls.context import GuestProcess

# an fd number beyond any fd table: the host answers POLLNVAL for it, as for an fd never open
_NEVER_OPEN = 0x7FFF_FFFF

# include/uapi/asm-generic/poll.h (aarch64, riscv64 and x86_64 all use it unchanged)
POLL_NAMES = {
    0x1: "POLLIN",
    0x2: "POLLPRI",
    0x4: "POLLOUT",
    0x8: "POLLERR",
    0x10: "POLLHUP",
    0x20: "POLLNVAL",
    0x40: "POLLRDNORM",
    0x80: "POLLRDBAND",
    0x100: "POLLWRNORM",
    0x200: "POLLWRBAND",
    0x400: "POLLMSG",
    0x2000: "POLLRDHUP",
}
FD_SET_WORD = 8  # an fd_set is an array of unsigned long (include/uapi/linux/posix_types.h)
NR_OPEN = 1 << 20  # fs/file.c sysctl_nr_open's default: no fd table is larger


def poll_events_text(events: int) -> str:
    names = [name for bit, name in POLL_NAMES.items() if events & bit]
    rest = events & ~sum(POLL_NAMES)
    if rest:
        names.append(f"{rest:#x}")
    return "|".join(names) or "0"


class PollFds(ArgKind):
    """A pollfd array, its count in argument 1: strace shows fds and events (revents after)."""

    def format(self, proc: GuestProcess, raw: int, args: tuple[int, ...], result: int) -> str:
        count = min(args[1] & 0xFFFF_FFFF, 16)
        try:
            data = proc.mem.read(raw, count * POLLFD.size)
        except Exception:
            return f"{raw:#x}"
        shown = []
        for index in range(count):
            entry = POLLFD.unpack(data, index * POLLFD.size)
            events = poll_events_text(entry.events & 0xFFFF)
            text = f"{{fd={entry.fd}, events={events}"
            if result > 0 and entry.revents:
                revents = poll_events_text(entry.revents & 0xFFFF)
                text += f", revents={revents}"
            shown.append(text + "}")
        return "[" + ", ".join(shown) + ("..." if args[1] > 16 else "") + "]"


def _show_argpack(proc: GuestProcess, addr: int) -> str:
    pack = SIGSET_ARGPACK.unpack(proc.mem.read(addr, SIGSET_ARGPACK.size))
    return f"{{p={pack.p:#x}, size={pack.size}}}"


# ---- the wait --------------------------------------------------------------------------------


def read_guest_sigmask(proc: GuestProcess, mask_ptr: int, size: int) -> int | None:
    """The temporary mask a call installs, or None when it gives none."""
    if not mask_ptr:
        return None
    if size != SIGSET_SIZE:
        raise OSError(errno.EINVAL, "bad sigsetsize")
    return SIGSET.unpack(proc.mem.read(mask_ptr, SIGSET_SIZE)).sig & ~UNBLOCKABLE


def read_timeout(proc: GuestProcess, timespec_ptr: int) -> int | None:
    """A relative struct __kernel_timespec timeout in ns (None: wait forever)."""
    if not timespec_ptr:
        return None
    sec, nsec = read_timespec(proc, timespec_ptr)
    if sec < 0 or not 0 <= nsec < 1_000_000_000:
        raise OSError(errno.EINVAL, "bad timeout")
    return sec * 1_000_000_000 + nsec


def wait_with_mask(
    proc: GuestProcess, mask: int | None, timeout_ns: int | None, wait: Callable[[int | None], int]
) -> tuple[int, int]:
    """Run `wait(remaining_ns)` with the guest's mask set to `mask` for its duration.

    Returns (result, ns left); a signal the guest can take ends it with -EINTR (see
    wait_unless_signalled). After -EINTR the temporary mask stays until the handler returns,
    as with sigsuspend (Linux's restore_saved_sigmask).
    """
    old_mask = proc.signals.mask
    if mask is not None:
        proc.signals.mask = mask
    deadline = None if timeout_ns is None else time.monotonic_ns() + timeout_ns

    def attempt() -> int:
        return wait(None if deadline is None else max(deadline - time.monotonic_ns(), 0))

    try:
        outcome = wait_unless_signalled(proc, attempt)
    except BaseException:
        proc.signals.mask = old_mask
        raise
    result = -errno.EINTR if outcome is None else outcome
    left = 0 if deadline is None else max(deadline - time.monotonic_ns(), 0)
    if mask is not None:
        if outcome is None:
            proc.restore_mask_after_handler = old_mask
        else:
            proc.signals.mask = old_mask
    return result, left


def _host_timespec(remaining_ns: int | None) -> ctypes.Array | int:
    if remaining_ns is None:
        return 0
    # the x86_64 host's struct __kernel_timespec has the guest's layout
    return ctypes.create_string_buffer(pack_timespec_ns(remaining_ns), 16)


def write_time_left(
    proc: GuestProcess, timespec_ptr: int, timeout_ns: int | None, left_ns: int
) -> None:
    """Linux writes the time left back into the caller's timeout (poll_select_finish), except
    for a zero timeout, and for a process whose personality has STICKY_TIMEOUTS."""
    if timespec_ptr and timeout_ns and not current_persona() & STICKY_TIMEOUTS:
        proc.mem.write(timespec_ptr, pack_timespec_ns(left_ns))


# ---- ppoll -----------------------------------------------------------------------------------


def _put_pollfd(entries: ctypes.Array, index: int, entry: Pollfd) -> None:
    entries[index * POLLFD.size : (index + 1) * POLLFD.size] = POLLFD.pack(entry)


@syscall("ppoll", PollFds(), ULONG, TIMESPEC_IN, PTR, ULONG, blocks=True, restart=False)
def ppoll(
    proc: GuestProcess, fds: int, count: int, timeout_ptr: int, mask_ptr: int, sigsetsize: int
) -> int:
    if count > resource.getrlimit(resource.RLIMIT_NOFILE)[0]:
        return -errno.EINVAL
    timeout = read_timeout(proc, timeout_ptr)
    mask = read_guest_sigmask(proc, mask_ptr, sigsetsize)
    given = proc.mem.read(fds, count * POLLFD.size)
    entries = ctypes.create_string_buffer(given, max(count * POLLFD.size, 1))
    # an fd of the emulator's own is no fd of the guest: the host polls one never open
    hidden = []
    if proc.host_fd_reserved:
        for i in range(count):
            entry = POLLFD.unpack(given, i * POLLFD.size)
            if entry.fd in proc.host_fd_reserved:
                hidden.append(i)
                _put_pollfd(entries, i, entry._replace(fd=_NEVER_OPEN))

    def wait(remaining: int | None) -> int:
        return host_syscall(HOST_SYS_PPOLL, entries, count, _host_timespec(remaining), 0, 0)

    result, left = wait_with_mask(proc, mask, timeout, wait)
    if result >= 0 and count:
        for i in hidden:  # with the fd the guest gave
            revents = POLLFD.unpack(entries.raw, i * POLLFD.size).revents
            _put_pollfd(entries, i, POLLFD.unpack(given, i * POLLFD.size)._replace(revents=revents))
        # the kernel writes back only revents; fd and events are what the guest gave
        proc.mem.write(fds, entries.raw[: count * POLLFD.size])
    write_time_left(proc, timeout_ptr, timeout, left)
    return result


# ---- pselect6 --------------------------------------------------------------------------------


def _fd_set_size(count: int) -> int:
    return (count + 8 * FD_SET_WORD - 1) // (8 * FD_SET_WORD) * FD_SET_WORD


@syscall(
    "pselect6", INT, PTR, PTR, PTR, TIMESPEC_IN, StructIn(_show_argpack), blocks=True, restart=False
)
def pselect6(
    proc: GuestProcess,
    count: int,
    readfds: int,
    writefds: int,
    exceptfds: int,
    timeout_ptr: int,
    argpack: int,
) -> int:
    if count < 0:
        return -errno.EINVAL
    # The kernel cuts n to its fd table's size before reading the sets; none is above NR_OPEN.
    count = min(count, NR_OPEN)
    timeout = read_timeout(proc, timeout_ptr)
    mask = None
    if argpack:
        pack = SIGSET_ARGPACK.unpack(proc.mem.read(argpack, SIGSET_ARGPACK.size))
        mask = read_guest_sigmask(proc, pack.p, pack.size)
    size = _fd_set_size(count)
    sets = [
        (addr, ctypes.create_string_buffer(proc.mem.read(addr, size), max(size, 1)) if addr else 0)
        for addr in (readfds, writefds, exceptfds)
    ]
    # an fd of the emulator's own in a set: EBADF, as for an fd never open
    for fd in proc.host_fd_reserved:
        if fd < count and any(
            isinstance(host, ctypes.Array) and host.raw[fd // 8] >> (fd % 8) & 1 for _, host in sets
        ):
            return -errno.EBADF

    def wait(remaining: int | None) -> int:
        return host_syscall(
            HOST_SYS_PSELECT6, count, *(host for _, host in sets), _host_timespec(remaining), 0
        )

    result, left = wait_with_mask(proc, mask, timeout, wait)
    if result >= 0:
        for addr, host in sets:
            if addr and size:
                assert isinstance(host, ctypes.Array)
                proc.mem.write(addr, host.raw[:size])
    write_time_left(proc, timeout_ptr, timeout, left)
    return result
