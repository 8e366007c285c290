"""Resource structs: struct rusage and struct rlimit64 of include/uapi/linux/resource.h.

struct rusage is two struct __kernel_old_timeval (ru_utime, ru_stime) then fourteen `long`
counters: 144 bytes on aarch64 and riscv64, and the same on the x86_64 host, whose wait4 fills
it. struct rlimit (two unsigned longs) has the bytes of struct rlimit64 on 64-bit.
"""

from __future__ import annotations

from typing import NamedTuple

from qemuser.syscalls.abi.layout import Layout

RUSAGE_COUNTERS = (
    "maxrss",
    "ixrss",
    "idrss",
    "isrss",
    "minflt",
    "majflt",
    "nswap",
    "inblock",
    "oublock",
    "msgsnd",
    "msgrcv",
    "nsignals",
    "nvcsw",
    "nivcsw",
)


class Rusage(NamedTuple):
    ru_utime_sec: int
    ru_utime_usec: int
    ru_stime_sec: int
    ru_stime_usec: int
    ru_maxrss: int
    ru_ixrss: int
    ru_idrss: int
    ru_isrss: int
    ru_minflt: int
    ru_majflt: int
    ru_nswap: int
    ru_inblock: int
    ru_oublock: int
    ru_msgsnd: int
    ru_msgrcv: int
    ru_nsignals: int
    ru_nvcsw: int
    ru_nivcsw: int


RUSAGE = Layout(
    "rusage",
    Rusage,
    [("ru_utime_sec", "q"), ("ru_utime_usec", "q"), ("ru_stime_sec", "q"), ("ru_stime_usec", "q")]
    + [(f"ru_{name}", "q") for name in RUSAGE_COUNTERS],
)


class Rlimit(NamedTuple):
    rlim_cur: int
    rlim_max: int


# struct rlimit64 {__u64 rlim_cur; __u64 rlim_max}
RLIMIT64 = Layout("rlimit64", Rlimit, [("rlim_cur", "Q"), ("rlim_max", "Q")])
RLIM_INFINITY = (1 << 64) - 1  # RLIM64_INFINITY, and RLIM_INFINITY (~0UL) on 64-bit
