"""Polling structs: struct pollfd (include/uapi/asm-generic/poll.h), struct epoll_event
(include/uapi/linux/eventpoll.h) per architecture, and pselect6's sixth argument.

struct epoll_event is {__poll_t events; __u64 data} with __EPOLL_PACKED, which the header
defines as __attribute__((packed)) only on x86_64: aarch64 and riscv64 pad `data` to offset 8
(16 bytes), the x86_64 host packs it at offset 4 (12 bytes). epoll_ctl and epoll_wait convert
between the two.
"""

from __future__ import annotations

from typing import NamedTuple

from qemuser.syscalls.abi.layout import Layout


class Pollfd(NamedTuple):
    fd: int
    events: int
    revents: int


POLLFD = Layout("pollfd", Pollfd, [("fd", "i"), ("events", "h"), ("revents", "h")])


class EpollEvent(NamedTuple):
    events: int
    data: int


_EPOLL_FIELDS = [("events", "I"), ("data", "Q")]
EPOLL_EVENT: dict[str, Layout[EpollEvent]] = {
    "aarch64": Layout("epoll_event", EpollEvent, _EPOLL_FIELDS),
    "riscv64": Layout("epoll_event", EpollEvent, _EPOLL_FIELDS),
    "x86_64": Layout("epoll_event", EpollEvent, _EPOLL_FIELDS, packed=True),
}
GUEST_EPOLL_EVENT = EPOLL_EVENT["aarch64"]  # the two guests agree (a test checks it)
HOST_EPOLL_EVENT = EPOLL_EVENT["x86_64"]


class SigsetArgpack(NamedTuple):
    p: int
    size: int


# pselect6's sixth argument: {const sigset_t __user *p; size_t size} (fs/select.c, the kernel's
# struct sigset_argpack; glibc passes the same two words)
SIGSET_ARGPACK = Layout("sigset_argpack", SigsetArgpack, [("p", "Q"), ("size", "Q")])
