"""Socket structs of the 64-bit guest ABI.

sockaddr_in: include/uapi/linux/in.h; sockaddr_in6: include/uapi/linux/in6.h; sockaddr_un:
include/uapi/linux/un.h; __kernel_sockaddr_storage: include/uapi/linux/socket.h; user_msghdr,
mmsghdr, cmsghdr, ucred and linger: include/linux/socket.h (the userspace copies are in glibc's
bits/socket.h, with the same layout); iovec: include/uapi/linux/uio.h; sock_fprog and
sock_filter: include/uapi/linux/filter.h.

Port and address fields are in network order: they stay bytes here. The x86_64 host uses the
same layouts, which is what lets addresses and option values pass through unchanged.
"""

from __future__ import annotations

from typing import NamedTuple

from qemuser.syscalls.abi.layout import Layout

SOCKADDR_STORAGE_SIZE = 128  # sizeof(struct __kernel_sockaddr_storage)
CMSG_ALIGN = 8  # CMSG_ALIGN rounds to sizeof(long)


class SaFamily(NamedTuple):
    sa_family: int


# The family every sockaddr starts with (__kernel_sa_family_t, unsigned short)
SA_FAMILY = Layout("sockaddr", SaFamily, [("sa_family", "H")])


class SockaddrIn(NamedTuple):
    sin_family: int
    sin_port: bytes
    sin_addr: bytes


SOCKADDR_IN = Layout(
    "sockaddr_in",
    SockaddrIn,
    [("sin_family", "H"), ("sin_port", "2s"), ("sin_addr", "4s"), ("__pad", "8x")],
)


class SockaddrIn6(NamedTuple):
    sin6_family: int
    sin6_port: bytes
    sin6_flowinfo: bytes
    sin6_addr: bytes
    sin6_scope_id: int


SOCKADDR_IN6 = Layout(
    "sockaddr_in6",
    SockaddrIn6,
    [
        ("sin6_family", "H"),
        ("sin6_port", "2s"),
        ("sin6_flowinfo", "4s"),
        ("sin6_addr", "16s"),
        ("sin6_scope_id", "I"),
    ],
)


class SockaddrUn(NamedTuple):
    sun_family: int
    sun_path: bytes


UNIX_PATH_MAX = 108
SOCKADDR_UN = Layout(
    "sockaddr_un", SockaddrUn, [("sun_family", "H"), ("sun_path", f"{UNIX_PATH_MAX}s")]
)


UIO_MAXIOV = 1024  # include/uapi/linux/uio.h: the most iovecs one call takes


class Iovec(NamedTuple):
    iov_base: int
    iov_len: int


IOVEC = Layout("iovec", Iovec, [("iov_base", "Q"), ("iov_len", "Q")])


class Msghdr(NamedTuple):
    msg_name: int
    msg_namelen: int
    msg_iov: int
    msg_iovlen: int
    msg_control: int
    msg_controllen: int
    msg_flags: int


MSGHDR = Layout(
    "user_msghdr",
    Msghdr,
    [
        ("msg_name", "Q"),
        ("msg_namelen", "i"),
        ("msg_iov", "Q"),
        ("msg_iovlen", "Q"),
        ("msg_control", "Q"),
        ("msg_controllen", "Q"),
        ("msg_flags", "I"),
    ],
    size=56,
)


class Mmsghdr(NamedTuple):
    msg_hdr: bytes  # a user_msghdr: decode it with MSGHDR
    msg_len: int


MMSGHDR = Layout("mmsghdr", Mmsghdr, [("msg_hdr", f"{MSGHDR.size}s"), ("msg_len", "I")], size=64)


class Cmsghdr(NamedTuple):
    cmsg_len: int
    cmsg_level: int
    cmsg_type: int


# the data follows at CMSG_ALIGN(sizeof(struct cmsghdr)) = 16
CMSGHDR = Layout("cmsghdr", Cmsghdr, [("cmsg_len", "Q"), ("cmsg_level", "i"), ("cmsg_type", "i")])


class Ucred(NamedTuple):
    pid: int
    uid: int
    gid: int


UCRED = Layout("ucred", Ucred, [("pid", "i"), ("uid", "I"), ("gid", "I")])


class Linger(NamedTuple):
    l_onoff: int
    l_linger: int


LINGER = Layout("linger", Linger, [("l_onoff", "i"), ("l_linger", "i")])


class SockFprog(NamedTuple):
    len: int
    filter: int


SOCK_FPROG = Layout("sock_fprog", SockFprog, [("len", "H"), ("filter", "Q")])


class SockFilter(NamedTuple):
    code: int
    jt: int
    jf: int
    k: int


SOCK_FILTER = Layout(
    "sock_filter", SockFilter, [("code", "H"), ("jt", "B"), ("jf", "B"), ("k", "I")]
)
