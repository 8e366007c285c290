"""Clocks and sleeping.

Clock ids are the same numbers on the guest and the x86_64 host (include/uapi/linux/time.h is
not arch-specific), so the host's clocks answer, and their errors are the guest's.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from qemuser.host import libc as host_libc
from qemuser.syscalls.abi.timespec import (
    NS_PER_SECOND,
    TIMESPEC,
    TIMEVAL,
    TIMEZONE,
    TMS,
    Timespec,
    pack_timespec_ns,
)
from qemuser.syscalls.argkinds import PTR, Enum, Flags, StructIn, StructOut
from qemuser.syscalls.registry import syscall
from qemuser.syscalls.sigstate import DEFAULT_IGNORE, SIG_DFL, SIG_IGN, bit

if TYPE_CHECKING:
    from qemuser.syscalls.context import GuestProcess

CLOCK_NAMES = {
    0: "CLOCK_REALTIME",
    1: "CLOCK_MONOTONIC",
    2: "CLOCK_PROCESS_CPUTIME_ID",
    3: "CLOCK_THREAD_CPUTIME_ID",
    4: "CLOCK_MONOTONIC_RAW",
    5: "CLOCK_REALTIME_COARSE",
    6: "CLOCK_MONOTONIC_COARSE",
    7: "CLOCK_BOOTTIME",
    8: "CLOCK_REALTIME_ALARM",
    9: "CLOCK_BOOTTIME_ALARM",
    11: "CLOCK_TAI",
}
CLOCK = Enum(CLOCK_NAMES)


def read_timespec(proc: GuestProcess, addr: int) -> Timespec:
    return TIMESPEC.unpack(proc.mem.read(addr, TIMESPEC.size))


def write_timespec(proc: GuestProcess, addr: int, ns: int) -> None:
    proc.mem.write(addr, pack_timespec_ns(ns))


def signal_ends_wait(proc: GuestProcess) -> bool:
    """Whether a pending signal ends an interruptible wait, as in Linux: one the guest does
    not block and that does something (a handler, or a default action other than ignore)."""
    thread = proc.sched.running()  # on a worker, its own thread
    mask = proc.sched.mask_of(thread)
    for pending in proc.signals.for_thread(thread.tid):
        if mask & bit(pending.signo):
            continue
        handler = proc.signals.action(pending.signo).handler
        if handler == SIG_IGN or (handler == SIG_DFL and pending.signo in DEFAULT_IGNORE):
            continue
        return True
    return False


def wait_unless_signalled(proc: GuestProcess, wait: Callable[[], int]) -> int | None:
    """Run a blocking `wait()`; None when a signal cut it short (see signal_ends_wait).

    A host signal interrupts the host call under `wait()` whether or not the guest blocks it
    (OSError(EINTR)): for a signal that
    should not end the wait, `wait()` runs again and must compute its own time left, so that
    the guest's timeout is kept rather than restarted.
    """
    while True:
        try:
            if signal_ends_wait(proc):
                return None
            return wait()
        except OSError as exc:
            if exc.errno != errno.EINTR:
                raise


def _show_timespec(proc: GuestProcess, addr: int) -> str:
    sec, nsec = read_timespec(proc, addr)
    return f"{{tv_sec={sec},tv_nsec={nsec}}}"


TIMESPEC_OUT = StructOut(_show_timespec)
TIMESPEC_IN = StructIn(_show_timespec)


@syscall("clock_gettime", CLOCK, TIMESPEC_OUT)
def clock_gettime(proc: GuestProcess, clock: int, tp: int) -> int:
    write_timespec(proc, tp, time.clock_gettime_ns(clock))
    return 0


@syscall("clock_getres", CLOCK, TIMESPEC_OUT)
def clock_getres(proc: GuestProcess, clock: int, tp: int) -> int:
    resolution = time.clock_getres(clock)  # checks the clock id even when tp is NULL
    if tp:
        write_timespec(proc, tp, round(resolution * NS_PER_SECOND))
    return 0


@syscall("clock_settime", CLOCK, TIMESPEC_IN)
def clock_settime(proc: GuestProcess, clock: int, tp: int) -> int:
    sec, nsec = read_timespec(proc, tp)
    time.clock_settime_ns(clock, sec * 1_000_000_000 + nsec)
    return 0


@syscall("gettimeofday", PTR, PTR)
def gettimeofday(proc: GuestProcess, tv: int, tz: int) -> int:
    sec, ns = divmod(time.time_ns(), NS_PER_SECOND)
    if tv:
        proc.mem.write(tv, TIMEVAL.pack(tv_sec=sec, tv_usec=ns // 1000))
    if tz:
        # the kernel's sys_tz, which nothing but settimeofday sets: UTC, no DST
        proc.mem.write(tz, TIMEZONE.pack(tz_minuteswest=0, tz_dsttime=0))
    return 0


TIMER_ABSTIME = 1
# Clocks clock_nanosleep can sleep on (kernel/time/posix-timers.c: those with an nsleep);
# CLOCK_PROCESS_CPUTIME_ID sleeps in wall time here: a sleeping single thread uses no CPU.
SLEEP_CLOCKS = {0: 0, 1: 1, 2: 1, 7: 7, 11: 11}
CLOCK_THREAD_CPUTIME_ID = 3


@syscall(
    "clock_nanosleep",
    CLOCK,
    Flags({TIMER_ABSTIME: "TIMER_ABSTIME"}),
    TIMESPEC_IN,
    PTR,
    blocks=True,
    restart=False,
)
def clock_nanosleep(proc: GuestProcess, clock: int, flags: int, req: int, rem: int) -> int:
    if not 0 <= clock <= 11:
        return -errno.EINVAL
    if clock == CLOCK_THREAD_CPUTIME_ID:
        # the thread clock has no nsleep (kernel/time/posix-cpu-timers.c): EOPNOTSUPP from the
        # call itself; glibc's wrapper says EINVAL before it calls (clock_nanosleep01)
        return -errno.EOPNOTSUPP
    if clock not in SLEEP_CLOCKS:
        return -errno.EOPNOTSUPP  # a valid clock without nsleep (MONOTONIC_RAW, *_COARSE)
    host_clock = SLEEP_CLOCKS[clock]
    sec, nsec = read_timespec(proc, req)
    if sec < 0 or not 0 <= nsec < NS_PER_SECOND:
        return -errno.EINVAL
    target = sec * NS_PER_SECOND + nsec
    if not flags & TIMER_ABSTIME:
        target += time.clock_gettime_ns(host_clock)

    def sleep() -> int:
        # host_libc's sleep reports EINTR (time.sleep would resume by itself, PEP 475); an
        # absolute target keeps the deadline across the retries of a blocked signal
        host_libc.clock_nanosleep(host_clock, True, *divmod(target, NS_PER_SECOND))
        return 0

    if wait_unless_signalled(proc, sleep) is not None:
        return 0
    if rem and not flags & TIMER_ABSTIME:
        write_timespec(proc, rem, max(target - time.clock_gettime_ns(host_clock), 0))
    return -errno.EINTR


@syscall("nanosleep", TIMESPEC_IN, PTR, blocks=True, restart=False)
def nanosleep(proc: GuestProcess, req: int, rem: int) -> int:
    return clock_nanosleep(proc, 1, 0, req, rem)


@syscall("times", PTR)
def times(proc: GuestProcess, buf: int) -> int:
    t = os.times()
    tick = os.sysconf("SC_CLK_TCK")
    if buf:
        proc.mem.write(
            buf,
            TMS.pack(
                tms_utime=int(t.user * tick),
                tms_stime=int(t.system * tick),
                tms_cutime=int(t.children_user * tick),
                tms_cstime=int(t.children_system * tick),
            ),
        )
    return int(t.elapsed * tick) & 0x7FFF_FFFF_FFFF_FFFF
