"""Clocks and sleeping."""

from __future__ import annotations

import errno
import os
import struct
import time

from qemuser.syscalls.process import Process
from qemuser.syscalls.registry import PTR, Enum, Flags, StructIn, StructOut, syscall

CLOCK_NAMES = {0: "CLOCK_REALTIME", 1: "CLOCK_MONOTONIC", 2: "CLOCK_PROCESS_CPUTIME_ID",
               3: "CLOCK_THREAD_CPUTIME_ID", 4: "CLOCK_MONOTONIC_RAW", 5: "CLOCK_REALTIME_COARSE",
               6: "CLOCK_MONOTONIC_COARSE", 7: "CLOCK_BOOTTIME", 8: "CLOCK_REALTIME_ALARM",
               9: "CLOCK_BOOTTIME_ALARM", 11: "CLOCK_TAI"}
CLOCK = Enum(CLOCK_NAMES)


def read_timespec(proc: Process, addr: int) -> tuple[int, int]:
    """struct __kernel_timespec (include/uapi/linux/time_types.h): {s64 tv_sec; s64 tv_nsec}."""
    return struct.unpack("<qq", proc.mem.read(addr, 16))


def write_timespec(proc: Process, addr: int, ns: int) -> None:
    proc.mem.write(addr, struct.pack("<qq", *divmod(ns, 1_000_000_000)))


def _show_timespec(proc: Process, addr: int) -> str:
    sec, nsec = read_timespec(proc, addr)
    return f"{{tv_sec={sec},tv_nsec={nsec}}}"


TIMESPEC_OUT = StructOut(_show_timespec)
TIMESPEC_IN = StructIn(_show_timespec)


def _valid_clock(clock: int) -> bool:
    if clock < 0:  # CPU-time clocks of other processes/threads (CPUCLOCK_*)
        return True
    return clock in CLOCK_NAMES and clock not in (8, 9)


@syscall("clock_gettime", CLOCK, TIMESPEC_OUT)
def clock_gettime(proc: Process, clock: int, tp: int) -> int:
    if not _valid_clock(clock):
        return -errno.EINVAL
    write_timespec(proc, tp, time.clock_gettime_ns(clock))
    return 0


@syscall("clock_getres", CLOCK, TIMESPEC_OUT)
def clock_getres(proc: Process, clock: int, tp: int) -> int:
    if not _valid_clock(clock):
        return -errno.EINVAL
    if tp:
        write_timespec(proc, tp, int(round(time.clock_getres(clock) * 1e9)))
    return 0


@syscall("clock_settime", CLOCK, TIMESPEC_IN)
def clock_settime(proc: Process, clock: int, tp: int) -> int:
    sec, nsec = read_timespec(proc, tp)
    time.clock_settime_ns(clock, sec * 1_000_000_000 + nsec)
    return 0


@syscall("gettimeofday", PTR, PTR)
def gettimeofday(proc: Process, tv: int, tz: int) -> int:
    now = time.time_ns()
    if tv:
        sec, ns = divmod(now, 1_000_000_000)
        proc.mem.write(tv, struct.pack("<qq", sec, ns // 1000))
    if tz:
        proc.mem.write(tz, struct.pack("<ii", 0, 0))
    return 0


def _sleep_until(deadline_ns: int, clock: int) -> None:
    while True:
        remaining = deadline_ns - time.clock_gettime_ns(clock)
        if remaining <= 0:
            return
        time.sleep(remaining / 1e9)


TIMER_ABSTIME = 1


@syscall("clock_nanosleep", CLOCK, Flags({TIMER_ABSTIME: "TIMER_ABSTIME"}), TIMESPEC_IN, PTR)
def clock_nanosleep(proc: Process, clock: int, flags: int, req: int, rem: int) -> int:
    if clock not in (0, 1, 7, 11, 2) and clock >= 0:
        return -errno.EINVAL
    sec, nsec = read_timespec(proc, req)
    if sec < 0 or not 0 <= nsec < 1_000_000_000:
        return -errno.EINVAL
    host_clock = clock if clock != 2 else 1
    target = sec * 1_000_000_000 + nsec
    if not flags & TIMER_ABSTIME:
        target += time.clock_gettime_ns(host_clock)
    _sleep_until(target, host_clock)
    return 0


@syscall("nanosleep", TIMESPEC_IN, PTR)
def nanosleep(proc: Process, req: int, rem: int) -> int:
    return clock_nanosleep(proc, 1, 0, req, rem)


# struct tms (include/uapi/linux/times.h): four clock_t (long).
@syscall("times", PTR)
def times(proc: Process, buf: int) -> int:
    t = os.times()
    tick = os.sysconf("SC_CLK_TCK")
    if buf:
        proc.mem.write(buf, struct.pack(
            "<qqqq", int(t.user * tick), int(t.system * tick),
            int(t.children_user * tick), int(t.children_system * tick),
        ))
    return int(t.elapsed * tick) & 0x7FFF_FFFF_FFFF_FFFF


@syscall("time", PTR)
def time_(proc: Process, tloc: int) -> int:
    now = int(time.time())
    if tloc:
        proc.mem.write(tloc, struct.pack("<q", now))
    return now



