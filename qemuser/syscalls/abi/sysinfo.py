"""System information: struct new_utsname (include/uapi/linux/utsname.h) for uname and
struct sysinfo (include/uapi/linux/sysinfo.h) for sysinfo.

struct sysinfo on 64-bit: __kernel_long_t and __kernel_ulong_t fields are 8 bytes, and the
trailing `char _f[20 - 2*sizeof(__kernel_ulong_t) - sizeof(__u32)]` is zero-sized, so the
struct is 112 bytes with tail padding after mem_unit; the x86_64 host's is the same.
"""

from __future__ import annotations

from typing import NamedTuple

from qemuser.syscalls.abi.layout import Layout

UTSNAME_FIELDS = ("sysname", "nodename", "release", "version", "machine", "domainname")
UTS_LENGTH = 65  # __NEW_UTS_LEN + 1


class Utsname(NamedTuple):
    sysname: bytes
    nodename: bytes
    release: bytes
    version: bytes
    machine: bytes
    domainname: bytes


UTSNAME = Layout("new_utsname", Utsname, [(f, f"{UTS_LENGTH}s") for f in UTSNAME_FIELDS])


class Sysinfo(NamedTuple):
    uptime: int
    loads: tuple[int, int, int]
    totalram: int
    freeram: int
    sharedram: int
    bufferram: int
    totalswap: int
    freeswap: int
    procs: int
    totalhigh: int
    freehigh: int
    mem_unit: int


SYSINFO = Layout(
    "sysinfo",
    Sysinfo,
    [
        ("uptime", "q"),
        ("loads", "3Q"),
        ("totalram", "Q"),
        ("freeram", "Q"),
        ("sharedram", "Q"),
        ("bufferram", "Q"),
        ("totalswap", "Q"),
        ("freeswap", "Q"),
        ("procs", "H"),
        ("pad", "2x"),  # __u16 pad: explicit padding, zero
        ("totalhigh", "Q"),
        ("freehigh", "Q"),
        ("mem_unit", "I"),
    ],
    size=112,
)
