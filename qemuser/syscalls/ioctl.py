"""ioctl: the terminal and file requests glibc, busybox, bash and CPython issue.

Each known request says how its argument travels (none, a plain value, a struct the guest gives,
a struct the kernel fills) and with which layout; the host call does the work on the same fd.
An unknown request fails with ENOTTY, as Linux answers for requests a file does not know, and is
reported once with -strace or -d unimp.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl as host_fcntl
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qemuser.syscalls.abi import termbits as t
from qemuser.syscalls.abi.layout import Layout
from qemuser.syscalls.argkinds import FD, PTR, ArgKind
from qemuser.syscalls.registry import syscall

if TYPE_CHECKING:
    from qemuser.syscalls.context import GuestProcess

NONE = "none"  # no argument
VALUE = "value"  # the argument itself is an integer
IN = "in"  # the argument points at a struct the guest gives
OUT = "out"  # the argument points at a struct the kernel fills
INOUT = "inout"  # the argument points at `size` bytes the kernel reads and fills (same layout)


@dataclass(frozen=True)
class Request:
    name: str
    passing: str
    layout: Layout | None = None  # type: ignore[type-arg]
    size: int = 0  # INOUT's bytes


# Socket and random-device requests (include/uapi/linux/sockios.h, random.h). struct ifreq is
# 40 bytes with the same layout on the 64-bit guests and the x86_64 host; struct ifconf holds
# a pointer, so SIOCGIFCONF has a path of its own.
SIOCATMARK = 0x8905
SIOCGIFCONF = 0x8912
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCGIFINDEX = 0x8933
IFREQ_SIZE = 40
RNDGETENTCNT = 0x80045200


REQUESTS: dict[int, Request] = {
    t.TCGETS: Request("TCGETS", OUT, t.TERMIOS),
    t.TCSETS: Request("TCSETS", IN, t.TERMIOS),
    t.TCSETSW: Request("TCSETSW", IN, t.TERMIOS),
    t.TCSETSF: Request("TCSETSF", IN, t.TERMIOS),
    t.TCGETS2: Request("TCGETS2", OUT, t.TERMIOS2),
    t.TCSETS2: Request("TCSETS2", IN, t.TERMIOS2),
    t.TCSETSW2: Request("TCSETSW2", IN, t.TERMIOS2),
    t.TCSETSF2: Request("TCSETSF2", IN, t.TERMIOS2),
    t.TCSBRK: Request("TCSBRK", VALUE),
    t.TCSBRKP: Request("TCSBRKP", VALUE),
    t.TCXONC: Request("TCXONC", VALUE),
    t.TCFLSH: Request("TCFLSH", VALUE),
    t.TIOCEXCL: Request("TIOCEXCL", NONE),
    t.TIOCNXCL: Request("TIOCNXCL", NONE),
    t.TIOCGEXCL: Request("TIOCGEXCL", OUT, t.INT),
    t.TIOCSCTTY: Request("TIOCSCTTY", VALUE),
    t.TIOCNOTTY: Request("TIOCNOTTY", NONE),
    t.TIOCGPGRP: Request("TIOCGPGRP", OUT, t.INT),
    t.TIOCSPGRP: Request("TIOCSPGRP", IN, t.INT),
    t.TIOCGSID: Request("TIOCGSID", OUT, t.INT),
    t.TIOCOUTQ: Request("TIOCOUTQ", OUT, t.INT),
    t.TIOCSTI: Request("TIOCSTI", IN, t.CHAR),
    t.TIOCGWINSZ: Request("TIOCGWINSZ", OUT, t.WINSIZE),
    t.TIOCSWINSZ: Request("TIOCSWINSZ", IN, t.WINSIZE),
    t.TIOCMGET: Request("TIOCMGET", OUT, t.INT),
    t.TIOCMBIS: Request("TIOCMBIS", IN, t.INT),
    t.TIOCMBIC: Request("TIOCMBIC", IN, t.INT),
    t.TIOCMSET: Request("TIOCMSET", IN, t.INT),
    t.TIOCPKT: Request("TIOCPKT", IN, t.INT),
    t.TIOCGPKT: Request("TIOCGPKT", OUT, t.INT),
    t.TIOCSETD: Request("TIOCSETD", IN, t.INT),
    t.TIOCGETD: Request("TIOCGETD", OUT, t.INT),
    t.TIOCSBRK: Request("TIOCSBRK", NONE),
    t.TIOCCBRK: Request("TIOCCBRK", NONE),
    t.TIOCGPTN: Request("TIOCGPTN", OUT, t.INT),
    t.TIOCSPTLCK: Request("TIOCSPTLCK", IN, t.INT),
    t.TIOCGPTLCK: Request("TIOCGPTLCK", OUT, t.INT),
    t.TIOCGDEV: Request("TIOCGDEV", OUT, t.INT),
    t.TIOCSIG: Request("TIOCSIG", VALUE),
    t.TIOCVHANGUP: Request("TIOCVHANGUP", NONE),
    t.TIOCGPTPEER: Request("TIOCGPTPEER", VALUE),  # the value is open flags, translated
    t.FIONREAD: Request("FIONREAD", OUT, t.INT),
    t.FIONBIO: Request("FIONBIO", IN, t.INT),
    t.FIOASYNC: Request("FIOASYNC", IN, t.INT),
    t.FIOCLEX: Request("FIOCLEX", NONE),
    t.FIONCLEX: Request("FIONCLEX", NONE),
    t.FIOQSIZE: Request("FIOQSIZE", OUT, t.LOFF_T),
    t.FIGETBSZ: Request("FIGETBSZ", OUT, t.INT),
    t.FS_IOC_GETFLAGS: Request("FS_IOC_GETFLAGS", OUT, t.INT),
    t.FS_IOC_SETFLAGS: Request("FS_IOC_SETFLAGS", IN, t.INT),
    t.FICLONE: Request("FICLONE", VALUE),  # cp tries it first; ext4 answers EOPNOTSUPP
    SIOCATMARK: Request("SIOCATMARK", OUT, t.INT),
    SIOCGIFCONF: Request("SIOCGIFCONF", INOUT, size=16),
    SIOCGIFFLAGS: Request("SIOCGIFFLAGS", INOUT, size=IFREQ_SIZE),
    SIOCSIFFLAGS: Request("SIOCSIFFLAGS", INOUT, size=IFREQ_SIZE),
    SIOCGIFINDEX: Request("SIOCGIFINDEX", INOUT, size=IFREQ_SIZE),
    RNDGETENTCNT: Request("RNDGETENTCNT", OUT, t.INT),
}


class RequestKind(ArgKind):
    def decode(self, proc: GuestProcess, raw: int) -> int:
        return raw & 0xFFFF_FFFF  # the kernel takes `unsigned int cmd`

    def format(self, proc: GuestProcess, raw: int, args: tuple[int, ...], result: int) -> str:
        request = REQUESTS.get(raw & 0xFFFF_FFFF)
        return request.name if request else f"{raw & 0xFFFF_FFFF:#x}"


@syscall("ioctl", FD, RequestKind(), PTR)
def ioctl(proc: GuestProcess, fd: int, request: int, arg: int) -> int:
    known = REQUESTS.get(request)
    if known is None:
        _report_unknown(proc, request)
        host_fcntl.fcntl(fd, host_fcntl.F_GETFD)  # a bad fd is EBADF before anything else
        return -errno.ENOTTY
    if known.passing == NONE:
        return host_fcntl.ioctl(fd, request, 0)
    if known.passing == VALUE:
        value = arg & 0xFFFF_FFFF
        if request == t.TIOCGPTPEER:
            value = proc.open_codec.to_host(value)
        return host_fcntl.ioctl(fd, request, value)
    if request == SIOCGIFCONF:
        return _ifconf(proc, fd, arg)
    if known.passing == INOUT:
        filled = host_fcntl.ioctl(fd, request, proc.mem.read(arg, known.size))
        proc.mem.write(arg, filled)
        return 0
    layout = known.layout
    assert layout is not None
    if known.passing == IN:
        # decoded and re-encoded, not copied: the host's struct has the guest's layout
        given = layout.unpack(proc.mem.read(arg, layout.size))
        host_fcntl.ioctl(fd, request, layout.pack(given))
        return 0
    filled = host_fcntl.ioctl(fd, request, bytes(layout.size))
    proc.mem.write(arg, layout.pack(layout.unpack(filled)))
    return 0


def _ifconf(proc: GuestProcess, fd: int, arg: int) -> int:
    """SIOCGIFCONF: struct ifconf {int ifc_len; char *ifc_buf} (16 bytes), the buffer the
    host fills being ours, copied to the guest's; a NULL buffer asks for the length."""
    head = proc.mem.read(arg, 16)
    length = int.from_bytes(head[:4], "little", signed=True)
    guest_buf = int.from_bytes(head[8:], "little")
    host_buf = ctypes.create_string_buffer(max(length, 0) if guest_buf else 0)
    address = ctypes.addressof(host_buf) if guest_buf else 0
    record = ctypes.create_string_buffer(
        length.to_bytes(4, "little", signed=True) + bytes(4) + address.to_bytes(8, "little"), 16
    )
    host_fcntl.ioctl(fd, SIOCGIFCONF, record)  # a mutable buffer: filled in place
    filled = int.from_bytes(record.raw[:4], "little", signed=True)
    if guest_buf:
        proc.mem.write(guest_buf, host_buf.raw[:filled])
    proc.mem.write(arg, record.raw[:4])
    return 0


_REPORTED_UNKNOWN: set[int] = set()  # per emulator process, like unknown system calls


def _report_unknown(proc: GuestProcess, request: int) -> None:
    if request in _REPORTED_UNKNOWN:
        return
    _REPORTED_UNKNOWN.add(request)
    if proc.config.strace or "unimp" in proc.config.log_items:
        proc.log_line(f"qemuser: unsupported ioctl {request:#x}")
