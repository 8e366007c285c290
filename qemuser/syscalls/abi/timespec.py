"""Time structs of the 64-bit guest ABI: include/uapi/linux/time_types.h (__kernel_timespec,
__kernel_itimerspec, __kernel_old_timeval, __kernel_old_itimerval, __kernel_sock_timeval),
include/uapi/linux/time.h (struct timezone) and include/uapi/linux/times.h (struct tms).

On aarch64 and riscv64 every `long` and `__kernel_time64_t` is 8 bytes, so the "old" and the
64-bit-time variants have the same bytes; the names follow what each system call takes.
"""

from __future__ import annotations

from typing import NamedTuple

from qemuser.syscalls.abi.layout import Layout

NS_PER_SECOND = 1_000_000_000
US_PER_SECOND = 1_000_000


class Timespec(NamedTuple):
    tv_sec: int
    tv_nsec: int


class Timeval(NamedTuple):
    tv_sec: int
    tv_usec: int


class Itimerspec(NamedTuple):
    """it_interval then it_value, each a timespec (flattened: seconds and nanoseconds)."""

    it_interval_sec: int
    it_interval_nsec: int
    it_value_sec: int
    it_value_nsec: int


class Itimerval(NamedTuple):
    it_interval_sec: int
    it_interval_usec: int
    it_value_sec: int
    it_value_usec: int


class Timezone(NamedTuple):
    tz_minuteswest: int
    tz_dsttime: int


class Tms(NamedTuple):
    tms_utime: int
    tms_stime: int
    tms_cutime: int
    tms_cstime: int


# struct __kernel_timespec {__kernel_time64_t tv_sec; long long tv_nsec}
TIMESPEC = Layout("__kernel_timespec", Timespec, [("tv_sec", "q"), ("tv_nsec", "q")])
# struct __kernel_old_timeval {__kernel_long_t tv_sec; __kernel_long_t tv_usec}
TIMEVAL = Layout("__kernel_old_timeval", Timeval, [("tv_sec", "q"), ("tv_usec", "q")])
# struct __kernel_sock_timeval {__s64 tv_sec; __s64 tv_usec} (SO_RCVTIMEO_NEW and friends)
SOCK_TIMEVAL = Layout("__kernel_sock_timeval", Timeval, [("tv_sec", "q"), ("tv_usec", "q")])
# struct __kernel_itimerspec {struct __kernel_timespec it_interval, it_value}
ITIMERSPEC = Layout(
    "__kernel_itimerspec",
    Itimerspec,
    [
        ("it_interval_sec", "q"),
        ("it_interval_nsec", "q"),
        ("it_value_sec", "q"),
        ("it_value_nsec", "q"),
    ],
)
# struct __kernel_old_itimerval {struct __kernel_old_timeval it_interval, it_value}
ITIMERVAL = Layout(
    "__kernel_old_itimerval",
    Itimerval,
    [
        ("it_interval_sec", "q"),
        ("it_interval_usec", "q"),
        ("it_value_sec", "q"),
        ("it_value_usec", "q"),
    ],
)
# struct timezone {int tz_minuteswest; int tz_dsttime}
TIMEZONE = Layout("timezone", Timezone, [("tz_minuteswest", "i"), ("tz_dsttime", "i")])
# struct tms: four __kernel_clock_t (long)
TMS = Layout(
    "tms",
    Tms,
    [("tms_utime", "q"), ("tms_stime", "q"), ("tms_cutime", "q"), ("tms_cstime", "q")],
)


def timespec_ns(spec: Timespec) -> int:
    return spec.tv_sec * NS_PER_SECOND + spec.tv_nsec


def pack_timespec_ns(ns: int) -> bytes:
    """A timespec holding `ns` nanoseconds (seconds and the remainder, as the kernel splits)."""
    sec, nsec = divmod(ns, NS_PER_SECOND)
    return TIMESPEC.pack(Timespec(sec, nsec))
