"""Sockets for a single process: socket, bind, connect, accept4, send/recv, msghdr, options.

Guest fds are host fds, so a guest socket is a host socket and the host kernel does the
networking. What crosses the boundary is checked against explicit guest layouts:

- Every number is the same for the guest (asm-generic, as aarch64 and riscv64 use it) and the
  x86_64 host, which includes the same headers: address families, SOCK_* types and flags
  (SOCK_NONBLOCK/SOCK_CLOEXEC are O_NONBLOCK/O_CLOEXEC, which aarch64 does not override),
  MSG_* flags, SOL_SOCKET options (include/uapi/asm-generic/socket.h), SCM_*, IPPROTO_* options
  (include/uapi/linux/in.h, in6.h, tcp.h). tests/unit/test_abi_net.py holds our values against
  the host's, which is what lets option values and addresses pass as they are.
- sockaddr, linger, timeval and ucred have the same bytes on both sides (LP64, little-endian);
  they are decoded with the layouts below for -strace, and passed through.
- msghdr, mmsghdr, cmsghdr and sock_fprog carry guest pointers: they are rebuilt for the host.

No Python socket objects: Python sets O_CLOEXEC on every socket it makes, and the guest's fds
must keep the flags it asked for, so the calls are raw host system calls.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat as host_stat
import time
from typing import TYPE_CHECKING

from qemuser.host.libc import host_syscall
from qemuser.host.sysnums import (
    HOST_SYS_ACCEPT4,
    HOST_SYS_BIND,
    HOST_SYS_CONNECT,
    HOST_SYS_GETPEERNAME,
    HOST_SYS_GETSOCKNAME,
    HOST_SYS_GETSOCKOPT,
    HOST_SYS_LISTEN,
    HOST_SYS_RECVFROM,
    HOST_SYS_RECVMSG,
    HOST_SYS_SENDMSG,
    HOST_SYS_SENDTO,
    HOST_SYS_SETSOCKOPT,
    HOST_SYS_SHUTDOWN,
    HOST_SYS_SOCKET,
    HOST_SYS_SOCKETPAIR,
)
from qemuser.loader.fault import GuestFault
from qemuser.syscalls.abi.scalars import FD_PAIR
from qemuser.syscalls.abi.sockets import (
    CMSG_ALIGN,
    CMSGHDR,
    IOVEC,
    MMSGHDR,
    MSGHDR,
    SA_FAMILY,
    SOCK_FILTER,
    SOCK_FPROG,
    SOCKADDR_IN,
    SOCKADDR_IN6,
    SOCKADDR_STORAGE_SIZE,
    UIO_MAXIOV,
    Iovec,
    Msghdr,
)
from qemuser.syscalls.argkinds import FD, INT, PTR, ULONG, ArgKind, Enum, Flags, InBuf, OutBuf, s32
from qemuser.syscalls.clock import (
    NS_PER_SECOND,
    TIMESPEC_IN,
    read_timespec,
    write_timespec,
)
from qemuser.syscalls.fs import (
    check_scatter,
    check_writable,
    read_iovec,
    scatter,
)
from qemuser.syscalls.registry import syscall

if TYPE_CHECKING:
    from qemuser.syscalls.context import GuestProcess

# ---- guest constants -------------------------------------------------------------------------

# include/linux/socket.h
AF_UNSPEC = 0
AF_UNIX = 1
AF_INET = 2
AF_INET6 = 10
AF_NETLINK = 16
AF_PACKET = 17
FAMILY_NAMES = {
    AF_UNSPEC: "AF_UNSPEC",
    AF_UNIX: "AF_UNIX",
    AF_INET: "AF_INET",
    AF_INET6: "AF_INET6",
    AF_NETLINK: "AF_NETLINK",
    AF_PACKET: "AF_PACKET",
}

# include/linux/net.h (enum sock_type) and include/linux/net.h's SOCK_CLOEXEC/SOCK_NONBLOCK
SOCK_STREAM = 1
SOCK_DGRAM = 2
SOCK_RAW = 3
SOCK_SEQPACKET = 5
SOCK_TYPE_MASK = 0xF
SOCK_NONBLOCK = 0o4000
SOCK_CLOEXEC = 0o2000000
SOCK_TYPE_NAMES = {
    SOCK_STREAM: "SOCK_STREAM",
    SOCK_DGRAM: "SOCK_DGRAM",
    SOCK_RAW: "SOCK_RAW",
    4: "SOCK_RDM",
    SOCK_SEQPACKET: "SOCK_SEQPACKET",
    10: "SOCK_PACKET",
}

# include/linux/socket.h
MSG_NAMES = {
    0x1: "MSG_OOB",
    0x2: "MSG_PEEK",
    0x4: "MSG_DONTROUTE",
    0x8: "MSG_CTRUNC",
    0x20: "MSG_TRUNC",
    0x40: "MSG_DONTWAIT",
    0x80: "MSG_EOR",
    0x100: "MSG_WAITALL",
    0x2000: "MSG_ERRQUEUE",
    0x4000: "MSG_NOSIGNAL",
    0x8000: "MSG_MORE",
    0x10000: "MSG_WAITFORONE",
    0x4000000: "MSG_ZEROCOPY",
    0x40000000: "MSG_CMSG_CLOEXEC",
}
SOL_SOCKET = 1
SCM_RIGHTS = 1
SCM_CREDENTIALS = 2

# include/uapi/linux/in.h, in6.h, tcp.h: the protocol levels
SOL_IP = 0
SOL_TCP = 6
SOL_UDP = 17
SOL_IPV6 = 41
LEVEL_NAMES = {
    SOL_IP: "SOL_IP",
    SOL_SOCKET: "SOL_SOCKET",
    SOL_TCP: "SOL_TCP",
    SOL_UDP: "SOL_UDP",
    SOL_IPV6: "SOL_IPV6",
}

# include/uapi/asm-generic/socket.h
SO_NAMES = {
    1: "SO_DEBUG",
    2: "SO_REUSEADDR",
    3: "SO_TYPE",
    4: "SO_ERROR",
    5: "SO_DONTROUTE",
    6: "SO_BROADCAST",
    7: "SO_SNDBUF",
    8: "SO_RCVBUF",
    9: "SO_KEEPALIVE",
    10: "SO_OOBINLINE",
    12: "SO_PRIORITY",
    13: "SO_LINGER",
    15: "SO_REUSEPORT",
    16: "SO_PASSCRED",
    17: "SO_PEERCRED",
    18: "SO_RCVLOWAT",
    19: "SO_SNDLOWAT",
    20: "SO_RCVTIMEO",
    21: "SO_SNDTIMEO",
    25: "SO_BINDTODEVICE",
    26: "SO_ATTACH_FILTER",
    27: "SO_DETACH_FILTER",
    28: "SO_PEERNAME",
    29: "SO_TIMESTAMP",
    30: "SO_ACCEPTCONN",
    32: "SO_SNDBUFFORCE",
    33: "SO_RCVBUFFORCE",
    36: "SO_MARK",
    38: "SO_PROTOCOL",
    39: "SO_DOMAIN",
    51: "SO_ATTACH_REUSEPORT_CBPF",
    66: "SO_RCVTIMEO_NEW",
    67: "SO_SNDTIMEO_NEW",
}
SO_LINGER = 13
SO_RCVTIMEO = 20
SO_SNDTIMEO = 21
SO_ATTACH_FILTER = 26
SO_PEERCRED = 17
SO_ATTACH_REUSEPORT_CBPF = 51
SO_RCVTIMEO_NEW = 66
SO_SNDTIMEO_NEW = 67
TCP_NAMES = {
    1: "TCP_NODELAY",
    2: "TCP_MAXSEG",
    3: "TCP_CORK",
    4: "TCP_KEEPIDLE",
    5: "TCP_KEEPINTVL",
    6: "TCP_KEEPCNT",
    9: "TCP_DEFER_ACCEPT",
    12: "TCP_QUICKACK",
    23: "TCP_FASTOPEN",
}
IP_NAMES = {
    1: "IP_TOS",
    2: "IP_TTL",
    3: "IP_HDRINCL",
    4: "IP_OPTIONS",
    8: "IP_RECVTTL",
    10: "IP_MTU_DISCOVER",
    11: "IP_RECVERR",
    32: "IP_MULTICAST_IF",
    33: "IP_MULTICAST_TTL",
    34: "IP_MULTICAST_LOOP",
    35: "IP_ADD_MEMBERSHIP",
    36: "IP_DROP_MEMBERSHIP",
}
IPV6_NAMES = {
    16: "IPV6_UNICAST_HOPS",
    18: "IPV6_MULTICAST_LOOP",
    20: "IPV6_JOIN_GROUP",
    25: "IPV6_RECVERR",
    26: "IPV6_V6ONLY",
    49: "IPV6_RECVPKTINFO",
    67: "IPV6_TCLASS",
}
OPTION_NAMES = {SOL_SOCKET: SO_NAMES, SOL_TCP: TCP_NAMES, SOL_IP: IP_NAMES, SOL_IPV6: IPV6_NAMES}

# Options whose values hold pointers other than sock_fprog: the host would read our memory
# through them. Not supported: -ENOPROTOOPT, as a kernel without them answers.
# (include/uapi/linux/netfilter_ipv4/ip_tables.h's IPT_SO_* are 64..; TCP_ZEROCOPY_RECEIVE 35
# and TCP_MD5SIG 14 hold pointers or netlink-sized blobs we do not check.)
POINTER_OPTIONS = frozenset(
    {(SOL_IP, n) for n in range(64, 72)} | {(SOL_IPV6, n) for n in range(64, 72)} | {(SOL_TCP, 35)}
)

# Bounds on what we copy at once; the kernel bounds the real transfer.
MAX_TRANSFER = 1 << 24
MAX_CONTROL = 1 << 16
MAX_OPTION = 1 << 16


def cmsg_align(length: int) -> int:
    return (length + CMSG_ALIGN - 1) & ~(CMSG_ALIGN - 1)


# ---- -strace ---------------------------------------------------------------------------------


def format_sockaddr(data: bytes) -> str:
    """A sockaddr as strace shows it."""
    if len(data) < 2:
        return "{...}"
    # only -strace needs the host's socket module (~6 ms to import, with selectors)
    import socket as host_socket

    family = SA_FAMILY.unpack(data).sa_family
    name = FAMILY_NAMES.get(family, str(family))
    if family == AF_INET and len(data) >= SOCKADDR_IN.size:
        inet = SOCKADDR_IN.unpack(data)
        port = int.from_bytes(inet.sin_port, "big")
        addr = host_socket.inet_ntop(host_socket.AF_INET, inet.sin_addr)
        return f'{{sa_family={name}, sin_port=htons({port}), sin_addr=inet_addr("{addr}")}}'
    if family == AF_INET6 and len(data) >= SOCKADDR_IN6.size:
        inet6 = SOCKADDR_IN6.unpack(data)
        port = int.from_bytes(inet6.sin6_port, "big")
        addr = host_socket.inet_ntop(host_socket.AF_INET6, inet6.sin6_addr)
        return f'{{sa_family={name}, sin6_port=htons({port}), sin6_addr="{addr}"}}'
    if family == AF_UNIX:
        path = data[2:]
        if path.startswith(b"\0"):
            return f'{{sa_family={name}, sun_path=@"{path[1:].decode(errors="replace")}"}}'
        path = path.split(b"\0", 1)[0]
        return f'{{sa_family={name}, sun_path="{path.decode(errors="replace")}"}}'
    return f"{{sa_family={name}, ...}}"


class SockAddrIn(ArgKind):
    """A sockaddr the guest gives, its length in argument `length_arg`."""

    def __init__(self, length_arg: int) -> None:
        self.length_arg = length_arg

    def format(self, proc: GuestProcess, raw: int, args: tuple[int, ...], result: int) -> str:
        if raw == 0:
            return "NULL"
        try:
            length = min(s32(args[self.length_arg]), SOCKADDR_STORAGE_SIZE)
            return format_sockaddr(proc.mem.read(raw, length))
        except (GuestFault, OSError):
            return f"{raw:#x}"


class SockAddrOut(ArgKind):
    """A sockaddr the kernel fills, its in/out length at the pointer in `length_arg`."""

    def __init__(self, length_arg: int) -> None:
        self.length_arg = length_arg

    def format(self, proc: GuestProcess, raw: int, args: tuple[int, ...], result: int) -> str:
        if raw == 0:
            return "NULL"
        if result < 0:
            return f"{raw:#x}"
        try:
            length = min(proc.mem.read_u32(args[self.length_arg]), SOCKADDR_STORAGE_SIZE)
            return format_sockaddr(proc.mem.read(raw, length))
        except GuestFault:
            return f"{raw:#x}"


class SockType(ArgKind):
    def decode(self, proc: GuestProcess, raw: int) -> int:
        return s32(raw)

    def format(self, proc: GuestProcess, raw: int, args: tuple[int, ...], result: int) -> str:
        value = raw & 0xFFFF_FFFF
        kind = value & SOCK_TYPE_MASK
        parts = [SOCK_TYPE_NAMES.get(kind, str(kind))]
        for bit, name in ((SOCK_NONBLOCK, "SOCK_NONBLOCK"), (SOCK_CLOEXEC, "SOCK_CLOEXEC")):
            if value & bit:
                parts.append(name)
        rest = value & ~(SOCK_TYPE_MASK | SOCK_NONBLOCK | SOCK_CLOEXEC)
        if rest:
            parts.append(f"{rest:#x}")
        return "|".join(parts)


class OptionName(ArgKind):
    """A socket option, named according to the level in argument `level_arg`."""

    def __init__(self, level_arg: int) -> None:
        self.level_arg = level_arg

    def decode(self, proc: GuestProcess, raw: int) -> int:
        return s32(raw)

    def format(self, proc: GuestProcess, raw: int, args: tuple[int, ...], result: int) -> str:
        names = OPTION_NAMES.get(s32(args[self.level_arg]), {})
        return names.get(s32(raw), str(s32(raw)))


def _show_msghdr(proc: GuestProcess, addr: int) -> str:
    m = MSGHDR.unpack(proc.mem.read(addr, MSGHDR.size))
    return (
        f"{{msg_namelen={m.msg_namelen}, msg_iovlen={m.msg_iovlen}, "
        f"msg_controllen={m.msg_controllen}, msg_flags={m.msg_flags:#x}}}"
    )


class MsgHdrArg(ArgKind):
    def format(self, proc: GuestProcess, raw: int, args: tuple[int, ...], result: int) -> str:
        try:
            return _show_msghdr(proc, raw)
        except GuestFault:
            return f"{raw:#x}"


DOMAIN = Enum(FAMILY_NAMES)
SOCK_TYPE = SockType()
MSG_FLAGS = Flags(MSG_NAMES)
LEVEL = Enum(LEVEL_NAMES)
SHUT_HOW = Enum({0: "SHUT_RD", 1: "SHUT_WR", 2: "SHUT_RDWR"})
MSGHDR_ARG = MsgHdrArg()

# ---- guest <-> host helpers ------------------------------------------------------------------


def read_sockaddr(proc: GuestProcess, addr: int, length: int) -> bytes:
    """The bytes of a guest sockaddr, checked as the kernel's move_addr_to_kernel does."""
    if length < 0 or length > SOCKADDR_STORAGE_SIZE:
        raise OSError(errno.EINVAL, "bad address length")
    return proc.mem.read(addr, length)


def read_length(proc: GuestProcess, length_ptr: int) -> int:
    """An in/out socklen_t; negative is EINVAL, as in the kernel."""
    length = s32(proc.mem.read_u32(length_ptr))
    if length < 0:
        raise OSError(errno.EINVAL, "negative length")
    return length


def write_sockaddr(
    proc: GuestProcess, addr: int, length_ptr: int, capacity: int, data: bytes
) -> None:
    """Return an address the way move_addr_to_user does: as much as fits, the full length."""
    if capacity:
        proc.mem.write(addr, data[:capacity])
    proc.mem.write_u32(length_ptr, len(data))


def _pointer(buffer: ctypes.Array) -> int:
    return ctypes.addressof(buffer)


class HostMessage:
    """A msghdr in host memory for one sendmsg/recvmsg, with its buffers kept alive."""

    def __init__(
        self,
        name: bytes | None,
        name_capacity: int,
        data: bytes | None,
        data_capacity: int,
        control: bytes | None,
        control_capacity: int,
    ) -> None:
        self.name = ctypes.create_string_buffer(name or b"", max(name_capacity, 1))
        self.data = ctypes.create_string_buffer(data or b"", max(data_capacity, 1))
        self.control = ctypes.create_string_buffer(control or b"", max(control_capacity, 1))
        self.iovec = ctypes.create_string_buffer(
            IOVEC.pack(Iovec(_pointer(self.data), data_capacity)), IOVEC.size
        )
        self.header = ctypes.create_string_buffer(
            MSGHDR.pack(
                msg_name=_pointer(self.name) if name_capacity else 0,
                msg_namelen=name_capacity,
                msg_iov=_pointer(self.iovec),
                msg_iovlen=1,
                msg_control=_pointer(self.control) if control_capacity else 0,
                msg_controllen=control_capacity,
            ),
            MSGHDR.size,
        )

    def result_header(self) -> Msghdr:
        return MSGHDR.unpack(self.header.raw)


def parse_control(data: bytes, strict: bool = True) -> list[tuple[int, int, bytes]]:
    """The (level, type, payload) messages of a control buffer (the kernel's CMSG_NXTHDR walk).

    A malformed header is EINVAL when `strict` (what sendmsg says of the guest's), else the end
    of the walk (what the host gave back cannot be refused once the data is consumed)."""
    messages = []
    offset = 0
    while offset + CMSGHDR.size <= len(data):
        header = CMSGHDR.unpack(data, offset)
        length = header.cmsg_len
        if length < CMSGHDR.size or offset + length > len(data):
            if not strict:
                break
            raise OSError(errno.EINVAL, "bad cmsg_len")
        payload = data[offset + CMSGHDR.size : offset + length]
        messages.append((header.cmsg_level, header.cmsg_type, payload))
        offset += cmsg_align(length)
    return messages


def build_control(messages: list[tuple[int, int, bytes]]) -> bytes:
    """A control buffer of these messages, each padded to CMSG_ALIGN."""
    out = bytearray()
    for level, kind, payload in messages:
        length = CMSGHDR.size + len(payload)
        out += CMSGHDR.pack(cmsg_len=length, cmsg_level=level, cmsg_type=kind) + payload
        out += bytes(cmsg_align(length) - length)
    return bytes(out)


def control_to_guest(data: bytes, capacity: int) -> tuple[bytes, bool]:
    """A host control buffer re-laid for the guest, cut to `capacity` as put_cmsg does (the
    last message may lose its tail padding); True when something had to be cut."""
    out = bytearray()
    truncated = False
    for level, kind, payload in parse_control(data, strict=False):
        length = CMSGHDR.size + len(payload)
        if len(out) + length > capacity:
            truncated = True
            break
        out += CMSGHDR.pack(cmsg_len=length, cmsg_level=level, cmsg_type=kind) + payload
        out += bytes(min(cmsg_align(length) - length, capacity - len(out)))
    return bytes(out), truncated


# ---- creating and connecting -----------------------------------------------------------------


@syscall("socket", DOMAIN, SOCK_TYPE, INT)
def socket(proc: GuestProcess, domain: int, kind: int, protocol: int) -> int:
    return host_syscall(HOST_SYS_SOCKET, domain, kind, protocol)


@syscall("socketpair", DOMAIN, SOCK_TYPE, INT, PTR)
def socketpair(proc: GuestProcess, domain: int, kind: int, protocol: int, pair: int) -> int:
    fds = (ctypes.c_int32 * 2)()
    host_syscall(HOST_SYS_SOCKETPAIR, domain, kind, protocol, fds)
    try:
        proc.mem.write(pair, FD_PAIR.pack(fd0=fds[0], fd1=fds[1]))
    except GuestFault:
        os.close(fds[0])
        os.close(fds[1])
        raise
    return 0


@syscall("bind", FD, SockAddrIn(2), INT)
def bind(proc: GuestProcess, fd: int, addr: int, length: int) -> int:
    data = ctypes.create_string_buffer(read_sockaddr(proc, addr, length), max(length, 1))
    return host_syscall(HOST_SYS_BIND, fd, data, length)


@syscall("connect", FD, SockAddrIn(2), INT, blocks=True)
def connect(proc: GuestProcess, fd: int, addr: int, length: int) -> int:
    data = ctypes.create_string_buffer(read_sockaddr(proc, addr, length), max(length, 1))
    return host_syscall(HOST_SYS_CONNECT, fd, data, length)


@syscall("listen", FD, INT)
def listen(proc: GuestProcess, fd: int, backlog: int) -> int:
    return host_syscall(HOST_SYS_LISTEN, fd, backlog)


ACCEPT_FLAGS = Flags({SOCK_NONBLOCK: "SOCK_NONBLOCK", SOCK_CLOEXEC: "SOCK_CLOEXEC"})


@syscall("accept4", FD, SockAddrOut(2), PTR, ACCEPT_FLAGS, blocks=True)
def accept4(proc: GuestProcess, fd: int, addr: int, length_ptr: int, flags: int) -> int:
    capacity = read_length(proc, length_ptr) if addr else 0
    name = ctypes.create_string_buffer(SOCKADDR_STORAGE_SIZE)
    name_length = (ctypes.c_uint32 * 1)(SOCKADDR_STORAGE_SIZE)
    if addr:
        new_fd = host_syscall(HOST_SYS_ACCEPT4, fd, name, name_length, flags)
    else:
        new_fd = host_syscall(HOST_SYS_ACCEPT4, fd, 0, 0, flags)
    if addr:
        try:
            write_sockaddr(proc, addr, length_ptr, capacity, name.raw[: name_length[0]])
        except GuestFault:
            os.close(new_fd)  # the kernel, too, drops the new connection's fd
            raise
    return new_fd


@syscall("accept", FD, SockAddrOut(2), PTR, blocks=True)
def accept(proc: GuestProcess, fd: int, addr: int, length_ptr: int) -> int:
    return accept4(proc, fd, addr, length_ptr, 0)


def _local_or_peer_name(
    proc: GuestProcess, number: int, fd: int, addr: int, length_ptr: int
) -> int:
    capacity = read_length(proc, length_ptr)
    name = ctypes.create_string_buffer(SOCKADDR_STORAGE_SIZE)
    name_length = (ctypes.c_uint32 * 1)(SOCKADDR_STORAGE_SIZE)
    host_syscall(number, fd, name, name_length)
    write_sockaddr(proc, addr, length_ptr, capacity, name.raw[: name_length[0]])
    return 0


@syscall("getsockname", FD, SockAddrOut(2), PTR)
def getsockname(proc: GuestProcess, fd: int, addr: int, length_ptr: int) -> int:
    return _local_or_peer_name(proc, HOST_SYS_GETSOCKNAME, fd, addr, length_ptr)


@syscall("getpeername", FD, SockAddrOut(2), PTR)
def getpeername(proc: GuestProcess, fd: int, addr: int, length_ptr: int) -> int:
    return _local_or_peer_name(proc, HOST_SYS_GETPEERNAME, fd, addr, length_ptr)


@syscall("shutdown", FD, SHUT_HOW)
def shutdown(proc: GuestProcess, fd: int, how: int) -> int:
    return host_syscall(HOST_SYS_SHUTDOWN, fd, how)


# ---- data ------------------------------------------------------------------------------------


@syscall("sendto", FD, InBuf(2), ULONG, MSG_FLAGS, SockAddrIn(5), INT, blocks=True)
def sendto(
    proc: GuestProcess, fd: int, buf: int, length: int, flags: int, addr: int, addr_length: int
) -> int:
    data = proc.mem.read(buf, min(length, MAX_TRANSFER))
    payload = ctypes.create_string_buffer(data, max(len(data), 1))
    if addr:
        name = read_sockaddr(proc, addr, addr_length)
        target = ctypes.create_string_buffer(name, max(len(name), 1))
        return host_syscall(HOST_SYS_SENDTO, fd, payload, len(data), flags, target, addr_length)
    return host_syscall(HOST_SYS_SENDTO, fd, payload, len(data), flags, 0, 0)


@syscall("recvfrom", FD, OutBuf(2), ULONG, MSG_FLAGS, SockAddrOut(5), PTR, blocks=True)
def recvfrom(
    proc: GuestProcess, fd: int, buf: int, length: int, flags: int, addr: int, length_ptr: int
) -> int:
    capacity = read_length(proc, length_ptr) if addr else 0
    size = min(length, MAX_TRANSFER)
    # a buffer the guest cannot take fails before the data is consumed, as in Linux
    check_writable(proc, buf, size)
    payload = ctypes.create_string_buffer(max(size, 1))
    name = ctypes.create_string_buffer(SOCKADDR_STORAGE_SIZE)
    name_length = (ctypes.c_uint32 * 1)(SOCKADDR_STORAGE_SIZE)
    if addr:
        count = host_syscall(HOST_SYS_RECVFROM, fd, payload, size, flags, name, name_length)
    else:
        count = host_syscall(HOST_SYS_RECVFROM, fd, payload, size, flags, 0, 0)
    # With MSG_TRUNC a datagram's full length comes back, more than the buffer holds.
    proc.mem.write(buf, payload.raw[: min(count, size)])
    if addr:
        write_sockaddr(proc, addr, length_ptr, capacity, name.raw[: name_length[0]])
    return count


def _guest_iovec(proc: GuestProcess, iov: int, count: int) -> list[tuple[int, int]]:
    if count > UIO_MAXIOV:
        raise OSError(errno.EMSGSIZE, "too many iovecs")
    return read_iovec(proc, iov, count)


def _send_one(proc: GuestProcess, fd: int, header: Msghdr, flags: int) -> int:
    name_addr = header.msg_name
    name = read_sockaddr(proc, name_addr, header.msg_namelen) if name_addr else None
    vecs = _guest_iovec(proc, header.msg_iov, header.msg_iovlen)
    data = b"".join(proc.mem.read(base, length) for base, length in vecs)
    control_length = header.msg_controllen
    control = b""
    if control_length:
        if control_length > MAX_CONTROL:
            raise OSError(errno.ENOBUFS, "control buffer too large")
        # SCM_RIGHTS fds and SCM_CREDENTIALS ids mean the same on both sides: the guest's fds
        # are the host's. The messages are re-laid so that a malformed one fails here.
        raw = proc.mem.read(header.msg_control, control_length)
        control = build_control(parse_control(raw))
    message = HostMessage(name, len(name) if name else 0, data, len(data), control, len(control))
    return host_syscall(HOST_SYS_SENDMSG, fd, message.header, flags)


def _receive_one(proc: GuestProcess, fd: int, msg: int, header: Msghdr, flags: int) -> int:
    name_addr = header.msg_name
    name_capacity = header.msg_namelen if name_addr else 0
    if name_capacity < 0:
        raise OSError(errno.EINVAL, "negative msg_namelen")
    vecs = _guest_iovec(proc, header.msg_iov, header.msg_iovlen)
    size = min(sum(length for _, length in vecs), MAX_TRANSFER)
    check_scatter(proc, vecs)
    control_addr = header.msg_control
    control_capacity = min(header.msg_controllen, MAX_CONTROL) if control_addr else 0
    message = HostMessage(
        None, SOCKADDR_STORAGE_SIZE if name_addr else 0, None, size, None, control_capacity
    )
    count = host_syscall(HOST_SYS_RECVMSG, fd, message.header, flags)
    result = message.result_header()
    scatter(proc, vecs, message.data.raw[: min(count, size)])
    out_flags = result.msg_flags
    control = b""
    if control_capacity:
        used = result.msg_controllen
        control, cut = control_to_guest(message.control.raw[:used], control_capacity)
        if cut:
            out_flags |= 0x8  # MSG_CTRUNC
        proc.mem.write(control_addr, control)
    # Without a name buffer Linux leaves msg_namelen as the guest set it.
    name_length = result.msg_namelen if name_addr else header.msg_namelen
    if name_addr and name_capacity:
        proc.mem.write(name_addr, message.name.raw[: min(name_length, name_capacity)])
    header = header._replace(
        msg_namelen=name_length, msg_controllen=len(control), msg_flags=out_flags
    )
    proc.mem.write(msg, MSGHDR.pack(header))
    return count


@syscall("sendmsg", FD, MSGHDR_ARG, MSG_FLAGS, blocks=True)
def sendmsg(proc: GuestProcess, fd: int, msg: int, flags: int) -> int:
    return _send_one(proc, fd, MSGHDR.unpack(proc.mem.read(msg, MSGHDR.size)), flags)


@syscall("recvmsg", FD, MSGHDR_ARG, MSG_FLAGS, blocks=True)
def recvmsg(proc: GuestProcess, fd: int, msg: int, flags: int) -> int:
    return _receive_one(proc, fd, msg, MSGHDR.unpack(proc.mem.read(msg, MSGHDR.size)), flags)


MSG_DONTWAIT = 0x40
MSG_WAITFORONE = 0x10000


def _check_socket(fd: int) -> None:
    """What Linux checks of sendmmsg's and recvmmsg's fd before it reads a message: EBADF,
    then ENOTSOCK."""
    if not host_stat.S_ISSOCK(os.fstat(fd).st_mode):
        raise OSError(errno.ENOTSOCK, "not a socket")


@syscall("sendmmsg", FD, PTR, INT, MSG_FLAGS)
def sendmmsg(proc: GuestProcess, fd: int, vector: int, count: int, flags: int) -> int:
    """Each message in turn; the count sent, or the first error when none was (as Linux)."""
    _check_socket(fd)
    sent = 0
    for index in range(min(max(count, 0), UIO_MAXIOV)):
        entry = vector + index * MMSGHDR.size
        header = MSGHDR.unpack(proc.mem.read(entry, MSGHDR.size))
        try:
            length = _send_one(proc, fd, header, flags)
        except OSError:
            if sent:
                break
            raise
        proc.mem.write_u32(entry + MMSGHDR.offsets["msg_len"], length)
        sent += 1
    return sent


@syscall("recvmmsg", FD, PTR, INT, MSG_FLAGS, TIMESPEC_IN)
def recvmmsg(proc: GuestProcess, fd: int, vector: int, count: int, flags: int, timeout: int) -> int:
    """Each message in turn; after the first, MSG_WAITFORONE makes the rest non-blocking.
    The timeout is checked only between messages, as the kernel does (man recvmmsg, BUGS),
    and the time left is written back."""
    _check_socket(fd)
    deadline = None
    if timeout:
        sec, nsec = read_timespec(proc, timeout)
        if sec < 0 or not 0 <= nsec < NS_PER_SECOND:
            return -errno.EINVAL
        deadline = time.monotonic_ns() + sec * NS_PER_SECOND + nsec
    received = 0
    for index in range(min(max(count, 0), UIO_MAXIOV)):
        entry = vector + index * MMSGHDR.size
        header = MSGHDR.unpack(proc.mem.read(entry, MSGHDR.size))
        try:
            length = _receive_one(proc, fd, entry, header, flags)
        except OSError:
            if received:
                break
            raise
        proc.mem.write_u32(entry + MMSGHDR.offsets["msg_len"], length)
        received += 1
        if flags & MSG_WAITFORONE:
            flags |= MSG_DONTWAIT
        if deadline is not None and time.monotonic_ns() >= deadline:
            break
    if deadline is not None:
        write_timespec(proc, timeout, max(deadline - time.monotonic_ns(), 0))
    return received


# ---- options ---------------------------------------------------------------------------------


def _filter_program_to_host(proc: GuestProcess, value: bytes) -> tuple[bytes, ctypes.Array]:
    """sock_fprog holds a pointer to the guest's filter: copy the filter, point at the copy."""
    if len(value) < SOCK_FPROG.size:
        raise OSError(errno.EINVAL, "short sock_fprog")
    program = SOCK_FPROG.unpack(value)
    count = program.len
    code = proc.mem.read(program.filter, count * SOCK_FILTER.size)
    copy = ctypes.create_string_buffer(code, max(len(code), 1))
    return SOCK_FPROG.pack(len=count, filter=ctypes.addressof(copy)), copy


@syscall("setsockopt", FD, LEVEL, OptionName(1), PTR, INT)
def setsockopt(proc: GuestProcess, fd: int, level: int, name: int, value: int, length: int) -> int:
    if length < 0:
        return -errno.EINVAL
    if (level, name) in POINTER_OPTIONS:
        return -errno.ENOPROTOOPT
    data = proc.mem.read(value, min(length, MAX_OPTION))
    filter_copy = None  # the host reads it during the call: it must outlive the call
    if level == SOL_SOCKET and name in (SO_ATTACH_FILTER, SO_ATTACH_REUSEPORT_CBPF):
        data, filter_copy = _filter_program_to_host(proc, data)
        length = len(data)
    host_value = ctypes.create_string_buffer(data, max(len(data), 1))
    result = host_syscall(HOST_SYS_SETSOCKOPT, fd, level, name, host_value, length)
    del filter_copy
    return result


@syscall("getsockopt", FD, LEVEL, OptionName(1), PTR, PTR)
def getsockopt(
    proc: GuestProcess, fd: int, level: int, name: int, value: int, length_ptr: int
) -> int:
    if (level, name) in POINTER_OPTIONS:
        return -errno.ENOPROTOOPT
    capacity = min(read_length(proc, length_ptr), MAX_OPTION)
    host_value = ctypes.create_string_buffer(max(capacity, 1))
    host_length = (ctypes.c_uint32 * 1)(capacity)
    host_syscall(HOST_SYS_GETSOCKOPT, fd, level, name, host_value, host_length)
    returned = host_length[0]
    proc.mem.write(value, host_value.raw[: min(returned, capacity)])
    proc.mem.write_u32(length_ptr, returned)
    return 0
