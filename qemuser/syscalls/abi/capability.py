"""struct __user_cap_header_struct and struct __user_cap_data_struct
(include/uapi/linux/capability.h): the same on every architecture, the host's included.
Version 1 passes one data struct (32 capabilities), versions 2 and 3 two (64)."""

from __future__ import annotations

from typing import NamedTuple

from qemuser.syscalls.abi.layout import Layout
from qemuser.syscalls.abi.scalars import Value

CAP_VERSION_1 = 0x19980330
CAP_VERSION_2 = 0x20071026
CAP_VERSION_3 = 0x20080522
CAP_VERSION_NAMES = {
    CAP_VERSION_1: "_LINUX_CAPABILITY_VERSION_1",
    CAP_VERSION_2: "_LINUX_CAPABILITY_VERSION_2",
    CAP_VERSION_3: "_LINUX_CAPABILITY_VERSION_3",
}


class CapHeader(NamedTuple):
    version: int
    pid: int


class CapData(NamedTuple):
    effective: int
    permitted: int
    inheritable: int


CAP_HEADER = Layout("__user_cap_header_struct", CapHeader, [("version", "I"), ("pid", "i")])
CAP_DATA = Layout(
    "__user_cap_data_struct",
    CapData,
    [("effective", "I"), ("permitted", "I"), ("inheritable", "I")],
)


def cap_data_count(version: int) -> int:
    """How many data structs a version carries: 1 for v1; 2 for v2, v3, and for a version the
    kernel does not know (it rewrites the header and touches no data then)."""
    return 1 if version == CAP_VERSION_1 else 2


# the header's first word alone: what the kernel writes back when it names its own version
CAP_VERSION_WORD = Layout("__u32", Value, [("value", "I")])
