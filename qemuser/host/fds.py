"""The host descriptors this process has open, found without /proc."""

from __future__ import annotations

import array
import ctypes
import re
import resource

from qemuser.host.libc import LIBC

_POLL_CHUNK = 1 << 16  # descriptors asked about in one poll() (512 KiB of pollfd)
_NOT_NVAL = re.compile(rb"[^\x20]")  # a revents whose low byte is not POLLNVAL (0x20) alone


def open_fds_by_poll() -> list[int]:
    """The open descriptors below RLIMIT_NOFILE, without /proc: one poll() with no events
    and no wait per chunk of descriptors, in which the kernel marks each closed one POLLNVAL
    (fs/select.c do_pollfd), instead of an fcntl() for every possible descriptor (a million
    system calls per execve where the limit is 2**20, as in many containers).

    A struct pollfd is {int fd; short events; short revents}: eight bytes, which the
    little-endian 64-bit integer i spells for {fd = i, events = 0, revents = 0}, so that
    array("q", range(...)) builds a whole chunk in C.
    """
    poll = LIBC["poll"]  # a fresh function object: the shared binding's prototypes stay
    poll.argtypes = (ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int)
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if limit == resource.RLIM_INFINITY or limit > 1 << 30:
        limit = 1 << 20  # fs/file.c sysctl_nr_open's default: no fd is larger
    found: list[int] = []
    for start in range(0, limit, _POLL_CHUNK):
        fds = array.array("q", range(start, min(start + _POLL_CHUNK, limit)))
        address, count = fds.buffer_info()
        if poll(address, count, 0) < 0:  # cannot happen with count <= the limit; be safe
            found.extend(fds)
            continue
        revents = fds.tobytes()[6::8]  # the low byte of each revents
        found.extend(start + m.start() for m in _NOT_NVAL.finditer(revents))
    return found
