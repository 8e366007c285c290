"""The open descriptors found without /proc (qemuser.host.fds.open_fds_by_poll), which an
execve in a chroot without /proc uses to find the close-on-exec ones."""

from __future__ import annotations

import os
import resource

from qemuser.host.fds import open_fds_by_poll


def _proc_fds() -> set[int]:
    listing = os.listdir("/proc/self/fd")  # its own fd is in the listing but closed after
    return {int(name) for name in listing if os.path.exists(f"/proc/self/fd/{name}")}


def test_poll_finds_exactly_the_open_descriptors() -> None:
    read_end, write_end = os.pipe()
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    high = os.dup2(read_end, min(limit, 1 << 20) - 1)  # the last descriptor the limit allows
    closed = os.dup(write_end)
    os.close(closed)
    try:
        found = open_fds_by_poll()
        assert found == sorted(found)
        assert {read_end, write_end, high} <= set(found)
        assert closed not in found
        assert set(found) == _proc_fds()
    finally:
        for fd in (read_end, write_end, high):
            os.close(fd)
