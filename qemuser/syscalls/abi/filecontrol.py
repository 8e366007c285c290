"""open(2) flags: include/uapi/asm-generic/fcntl.h, with aarch64's overrides from
arch/arm64/include/uapi/asm/fcntl.h (O_DIRECTORY, O_NOFOLLOW, O_DIRECT, O_LARGEFILE).

The x86_64 host uses the asm-generic values (arch/x86/include/uapi/asm/fcntl.h includes the generic
header), so riscv64 flags pass through and aarch64's four differing bits are swapped both ways.
The host values are the kernel's, not Python's os.O_*: glibc defines O_LARGEFILE as 0 on 64-bit
hosts, while the kernel still reports 0o100000 in F_GETFL.
"""

from __future__ import annotations

from typing import NamedTuple

from qemuser.syscalls.abi.layout import Layout

GENERIC_FLAGS: dict[str, int] = {
    "O_WRONLY": 0o1,
    "O_RDWR": 0o2,
    "O_CREAT": 0o100,
    "O_EXCL": 0o200,
    "O_NOCTTY": 0o400,
    "O_TRUNC": 0o1000,
    "O_APPEND": 0o2000,
    "O_NONBLOCK": 0o4000,
    "O_DSYNC": 0o10000,
    "O_ASYNC": 0o20000,
    "O_DIRECT": 0o40000,
    "O_LARGEFILE": 0o100000,
    "O_DIRECTORY": 0o200000,
    "O_NOFOLLOW": 0o400000,
    "O_NOATIME": 0o1000000,
    "O_CLOEXEC": 0o2000000,
    "O_SYNC": 0o4010000,
    "O_PATH": 0o10000000,
    "O_TMPFILE": 0o20200000,
}

ARCH_FLAG_OVERRIDES: dict[str, dict[str, int]] = {
    "aarch64": {
        "O_DIRECTORY": 0o40000,
        "O_NOFOLLOW": 0o100000,
        "O_DIRECT": 0o200000,
        "O_LARGEFILE": 0o400000,
        "O_TMPFILE": 0o20040000,
    },
    "riscv64": {},
}

_HOST_NAMES = ("O_DIRECTORY", "O_NOFOLLOW", "O_DIRECT", "O_LARGEFILE")


def open_flags(arch: str) -> dict[str, int]:
    flags = dict(GENERIC_FLAGS)
    flags.update(ARCH_FLAG_OVERRIDES.get(arch, {}))
    return flags


class OpenFlagCodec:
    """Guest <-> host translation of open/fcntl status flags for one arch."""

    def __init__(self, arch: str) -> None:
        self.guest = open_flags(arch)
        self.pairs = [(self.guest[name], GENERIC_FLAGS[name]) for name in _HOST_NAMES]
        self.moved_guest = sum(g for g, _ in self.pairs)
        self.moved_host = sum(h for _, h in self.pairs)

    def to_host(self, flags: int) -> int:
        out = flags & ~self.moved_guest
        for guest_bit, host_bit in self.pairs:
            if flags & guest_bit:
                out |= host_bit
        return out

    def to_guest(self, flags: int) -> int:
        out = flags & ~self.moved_host
        for guest_bit, host_bit in self.pairs:
            if flags & host_bit:
                out |= guest_bit
        return out

    def names(self) -> dict[int, str]:
        """bit -> name for -strace (the access mode is handled apart)."""
        shown = {}
        for name, bit in sorted(self.guest.items(), key=lambda kv: -kv[1]):
            if name in ("O_WRONLY", "O_RDWR", "O_SYNC", "O_TMPFILE"):
                continue
            shown[bit] = name
        return shown


# struct flock (include/uapi/asm-generic/fcntl.h, 64-bit: __kernel_off_t is 8 bytes, no
# __ARCH_FLOCK_PAD): F_GETLK/F_SETLK/F_SETLKW and the F_OFD_* commands. x86_64 uses the same
# header, so the host's struct is decoded with this layout too.
class Flock(NamedTuple):
    l_type: int
    l_whence: int
    l_start: int
    l_len: int
    l_pid: int


FLOCK = Layout(
    "flock",
    Flock,
    [("l_type", "h"), ("l_whence", "h"), ("l_start", "q"), ("l_len", "q"), ("l_pid", "i")],
    size=32,
)


class FOwnerEx(NamedTuple):
    type: int
    pid: int


# struct f_owner_ex (include/uapi/asm-generic/fcntl.h): F_GETOWN_EX/F_SETOWN_EX.
F_OWNER_EX = Layout("f_owner_ex", FOwnerEx, [("type", "i"), ("pid", "i")])

# fcntl commands (include/uapi/asm-generic/fcntl.h and include/uapi/linux/fcntl.h); 64-bit
# aarch64/riscv64 and x86_64 share every value.
F_DUPFD = 0
F_GETFD = 1
F_SETFD = 2
F_GETFL = 3
F_SETFL = 4
F_GETLK = 5
F_SETLK = 6
F_SETLKW = 7
F_SETOWN = 8
F_GETOWN = 9
F_SETSIG = 10
F_GETSIG = 11
F_SETOWN_EX = 15
F_GETOWN_EX = 16
F_OFD_GETLK = 36
F_OFD_SETLK = 37
F_OFD_SETLKW = 38
F_SETLEASE = 1024
F_GETLEASE = 1025
F_NOTIFY = 1026
F_CANCELLK = 1029
F_DUPFD_CLOEXEC = 1030
F_SETPIPE_SZ = 1031
F_GETPIPE_SZ = 1032
F_ADD_SEALS = 1033
F_GET_SEALS = 1034
FD_CLOEXEC = 1
O_CLOEXEC = 0o2000000  # the same in asm-generic and arm64
