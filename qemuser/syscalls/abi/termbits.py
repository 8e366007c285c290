"""Terminal and file ioctls: request numbers from include/uapi/asm-generic/ioctls.h, structs from
include/uapi/asm-generic/termbits.h (struct termios, struct termios2) and
include/uapi/asm-generic/termios.h (struct winsize).

aarch64 and riscv64 use these generic headers unchanged, and so does the x86_64 host (its
asm/ioctls.h and asm/termbits.h include the generic ones), so requests and flag bits keep their
values; the file requests at the end (include/uapi/linux/fs.h) are architecture-independent
too. The structs are still decoded and re-encoded field by field through these layouts.
"""

from __future__ import annotations

from typing import NamedTuple

from qemuser.syscalls.abi.layout import Layout
from qemuser.syscalls.abi.scalars import CHAR as CHAR  # the ioctl table's scalar arguments
from qemuser.syscalls.abi.scalars import INT as INT
from qemuser.syscalls.abi.scalars import LOFF_T as LOFF_T

NCCS = 19


class Termios(NamedTuple):
    c_iflag: int
    c_oflag: int
    c_cflag: int
    c_lflag: int
    c_line: int
    c_cc: bytes


TERMIOS = Layout(
    "termios",
    Termios,
    [
        ("c_iflag", "I"),
        ("c_oflag", "I"),
        ("c_cflag", "I"),
        ("c_lflag", "I"),
        ("c_line", "B"),
        ("c_cc", f"{NCCS}s"),
    ],
)


class Termios2(NamedTuple):
    c_iflag: int
    c_oflag: int
    c_cflag: int
    c_lflag: int
    c_line: int
    c_cc: bytes
    c_ispeed: int
    c_ospeed: int


TERMIOS2 = Layout(
    "termios2",
    Termios2,
    [
        ("c_iflag", "I"),
        ("c_oflag", "I"),
        ("c_cflag", "I"),
        ("c_lflag", "I"),
        ("c_line", "B"),
        ("c_cc", f"{NCCS}s"),
        ("c_ispeed", "I"),
        ("c_ospeed", "I"),
    ],
)


class Winsize(NamedTuple):
    ws_row: int
    ws_col: int
    ws_xpixel: int
    ws_ypixel: int


WINSIZE = Layout(
    "winsize",
    Winsize,
    [("ws_row", "H"), ("ws_col", "H"), ("ws_xpixel", "H"), ("ws_ypixel", "H")],
)


def _ioc(direction: int, kind: str, number: int, size: int) -> int:
    """_IOC() of include/uapi/asm-generic/ioctl.h: dir<<30 | size<<16 | type<<8 | nr."""
    return direction << 30 | size << 16 | ord(kind) << 8 | number


_IOC_WRITE = 1
_IOC_READ = 2

TCGETS = 0x5401
TCSETS = 0x5402
TCSETSW = 0x5403
TCSETSF = 0x5404
TCSBRK = 0x5409
TCXONC = 0x540A
TCFLSH = 0x540B
TIOCEXCL = 0x540C
TIOCNXCL = 0x540D
TIOCSCTTY = 0x540E
TIOCGPGRP = 0x540F
TIOCSPGRP = 0x5410
TIOCOUTQ = 0x5411
TIOCSTI = 0x5412
TIOCGWINSZ = 0x5413
TIOCSWINSZ = 0x5414
TIOCMGET = 0x5415
TIOCMBIS = 0x5416
TIOCMBIC = 0x5417
TIOCMSET = 0x5418
FIONREAD = 0x541B
TIOCPKT = 0x5420
FIONBIO = 0x5421
TIOCNOTTY = 0x5422
TIOCSETD = 0x5423
TIOCGETD = 0x5424
TCSBRKP = 0x5425
TIOCSBRK = 0x5427
TIOCCBRK = 0x5428
TIOCGSID = 0x5429
TCGETS2 = _ioc(_IOC_READ, "T", 0x2A, TERMIOS2.size)
TCSETS2 = _ioc(_IOC_WRITE, "T", 0x2B, TERMIOS2.size)
TCSETSW2 = _ioc(_IOC_WRITE, "T", 0x2C, TERMIOS2.size)
TCSETSF2 = _ioc(_IOC_WRITE, "T", 0x2D, TERMIOS2.size)
TIOCGPTN = _ioc(_IOC_READ, "T", 0x30, 4)
TIOCSPTLCK = _ioc(_IOC_WRITE, "T", 0x31, 4)
TIOCGDEV = _ioc(_IOC_READ, "T", 0x32, 4)
TIOCSIG = _ioc(_IOC_WRITE, "T", 0x36, 4)
TIOCVHANGUP = 0x5437
TIOCGPKT = _ioc(_IOC_READ, "T", 0x38, 4)
TIOCGPTLCK = _ioc(_IOC_READ, "T", 0x39, 4)
TIOCGEXCL = _ioc(_IOC_READ, "T", 0x40, 4)
TIOCGPTPEER = 0x5441
FIONCLEX = 0x5450
FIOCLEX = 0x5451
FIOASYNC = 0x5452
FIOQSIZE = 0x5460

# include/uapi/linux/fs.h
FIGETBSZ = 2  # _IO(0x00, 2)
FS_IOC_GETFLAGS = _ioc(_IOC_READ, "f", 1, 8)  # declared with `long`, but the kernel moves an int
FS_IOC_SETFLAGS = _ioc(_IOC_WRITE, "f", 2, 8)
FICLONE = _ioc(_IOC_WRITE, chr(0x94), 9, 4)  # the argument is the source fd itself
