"""open(2) flags: include/uapi/asm-generic/fcntl.h, with aarch64's overrides from
arch/arm64/include/uapi/asm/fcntl.h (O_DIRECTORY, O_NOFOLLOW, O_DIRECT, O_LARGEFILE).

The x86_64 host uses the asm-generic values, so riscv64 flags pass through and aarch64's four
differing bits are swapped both ways.
"""

from __future__ import annotations

import os

GENERIC_FLAGS: dict[str, int] = {
    "O_WRONLY": 0o1, "O_RDWR": 0o2, "O_CREAT": 0o100, "O_EXCL": 0o200, "O_NOCTTY": 0o400,
    "O_TRUNC": 0o1000, "O_APPEND": 0o2000, "O_NONBLOCK": 0o4000, "O_DSYNC": 0o10000,
    "O_ASYNC": 0o20000, "O_DIRECT": 0o40000, "O_LARGEFILE": 0o100000,
    "O_DIRECTORY": 0o200000, "O_NOFOLLOW": 0o400000, "O_NOATIME": 0o1000000,
    "O_CLOEXEC": 0o2000000, "O_SYNC": 0o4010000, "O_PATH": 0o10000000,
    "O_TMPFILE": 0o20200000,
}

ARCH_FLAG_OVERRIDES: dict[str, dict[str, int]] = {
    "aarch64": {
        "O_DIRECTORY": 0o40000, "O_NOFOLLOW": 0o100000, "O_DIRECT": 0o200000,
        "O_LARGEFILE": 0o400000, "O_TMPFILE": 0o20040000,
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
        self.pairs = [
            (self.guest[name], getattr(os, name, GENERIC_FLAGS[name])) for name in _HOST_NAMES
        ]
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
