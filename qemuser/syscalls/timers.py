"""POSIX per-process timers: timer_create, timer_settime, timer_gettime, timer_getoverrun,
timer_delete.

Each armed timer is a host thread that sleeps until expiry and then sends the timer's signal to
this process as a real host signal, so that it interrupts blocking calls exactly like any other
signal; the siginfo the guest sees (SI_TIMER, the timer id, the overrun, the sigev_value) is
handed to the signal bridge beside it.
"""

from __future__ import annotations

import errno
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qemuser.host.signals import keep_signals_for_the_main_thread
from qemuser.syscalls.abi.scalars import INT as C_INT
from qemuser.syscalls.abi.siginfo import SI_TIMER, SIGEVENT, SiginfoTimer, pack_siginfo
from qemuser.syscalls.abi.timespec import ITIMERSPEC, Itimerspec
from qemuser.syscalls.argkinds import INT, PTR, Enum, Flags
from qemuser.syscalls.registry import syscall
from qemuser.syscalls.sigstate import DEFAULT_IGNORE, SIG_DFL, SIG_IGN

if TYPE_CHECKING:
    from qemuser.syscalls.context import GuestProcess

SIGEV_SIGNAL = 0
SIGEV_NONE = 1
SIGEV_THREAD = 2
SIGEV_THREAD_ID = 4
TIMER_ABSTIME = 1

CLOCKS = Enum(
    {
        0: "CLOCK_REALTIME",
        1: "CLOCK_MONOTONIC",
        2: "CLOCK_PROCESS_CPUTIME_ID",
        3: "CLOCK_THREAD_CPUTIME_ID",
        7: "CLOCK_BOOTTIME",
    }
)


@dataclass
class GuestTimer:
    timer_id: int
    clock: int
    signo: int
    notify: int
    value: int
    interval: float = 0.0
    deadline: float | None = None  # on the timer's own clock (_clock_now)
    overrun: int = 0
    generation: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _timers(proc: GuestProcess) -> dict[int, GuestTimer]:
    return proc.posix_timers


def _cpu_clock_of_self(clock: int) -> int:
    """Linux's dynamic CPU clock ids for the caller itself (what glibc's timer_create passes
    for CLOCK_PROCESS_CPUTIME_ID and CLOCK_THREAD_CPUTIME_ID: ~pid << 3 | per-thread 4 |
    CPUCLOCK_SCHED 2, pid 0) as the static ids; any other id unchanged."""
    clock &= 0xFFFF_FFFF  # an int, sign-extended
    clock = clock - (1 << 32) if clock & 0x8000_0000 else clock
    if clock >= 0 or clock & 3 != 2:
        return clock
    pid = ~(clock >> 3)
    if pid not in (0, os.getpid()):
        return clock
    return CLOCK_THREAD_CPUTIME_ID if clock & 4 else CLOCK_PROCESS_CPUTIME_ID


@syscall("timer_create", CLOCKS, PTR, PTR)
def timer_create(proc: GuestProcess, clock: int, sevp: int, timerid_ptr: int) -> int:
    clock = _cpu_clock_of_self(clock)
    if clock not in (0, 1, 2, 3, 7):
        return -errno.EINVAL
    timers = _timers(proc)
    timer_id = next(i for i in range(len(timers) + 1) if i not in timers)
    if sevp:
        # the whole struct sigevent, as the kernel copies it
        value, signo, notify, _tid = SIGEVENT.unpack(proc.mem.read(sevp, SIGEVENT.size))
    else:
        value, signo, notify = timer_id, signal.SIGALRM, SIGEV_SIGNAL
    if notify not in (SIGEV_SIGNAL, SIGEV_NONE, SIGEV_THREAD_ID, SIGEV_THREAD):
        return -errno.EINVAL
    if notify != SIGEV_NONE and not 1 <= signo <= 64:
        return -errno.EINVAL
    proc.mem.write(timerid_ptr, C_INT.pack(value=timer_id))
    timers[timer_id] = GuestTimer(timer_id, clock, signo, notify, value)
    return 0


INT_MAX = 0x7FFF_FFFF
CLOCK_PROCESS_CPUTIME_ID, CLOCK_THREAD_CPUTIME_ID = 2, 3


def _clock_now(timer: GuestTimer) -> float:
    """The time on the timer's own clock, in which its deadline is kept: the guest's CPU time
    is this process's (CLOCK_PROCESS_CPUTIME_ID), or its creating thread's, the main host
    thread's, as the guest's threads take turns on it (CLOCK_THREAD_CPUTIME_ID); the other
    clocks run at the monotonic clock's pace (an absolute time is converted when armed)."""
    if timer.clock == CLOCK_PROCESS_CPUTIME_ID:
        return time.clock_gettime(time.CLOCK_PROCESS_CPUTIME_ID)
    if timer.clock == CLOCK_THREAD_CPUTIME_ID:
        ident = threading.main_thread().ident or 0
        return time.clock_gettime(time.pthread_getcpuclockid(ident))
    return time.monotonic()


def _absolute_now(timer: GuestTimer) -> float:
    """Now on the clock a TIMER_ABSTIME value is given in."""
    if timer.clock in (CLOCK_PROCESS_CPUTIME_ID, CLOCK_THREAD_CPUTIME_ID):
        return _clock_now(timer)
    return time.time() if timer.clock == 0 else time.monotonic()


def _fire(proc: GuestProcess, timer: GuestTimer, generation: int) -> None:
    keep_signals_for_the_main_thread()
    while True:
        with timer.lock:
            if timer.generation != generation or timer.deadline is None:
                return
            delay = timer.deadline - _clock_now(timer)
        if delay > 0:
            # CPU time passes at most as fast as the wall clock (one host thread runs the
            # guest): sleeping for what is left never oversleeps it by more than a tick
            time.sleep(min(delay, 0.05))
            continue
        signals = proc.signals
        if timer.notify != SIGEV_NONE and timer.timer_id in signals.timers_in_flight:
            # its last signal is not taken yet: this expiration will be an overrun of the
            # next signal, which waits until that one is taken (the deadline stays put)
            time.sleep(0.001)
            continue
        with timer.lock:
            if timer.generation != generation:
                return
            overrun = 0
            if timer.interval > 0:
                # the expirations missed since the deadline (a deadline far in the past, or
                # an interval shorter than a turn of this loop) are the overrun, capped at
                # INT_MAX as Linux's timer_overrun_to_int
                missed = int((_clock_now(timer) - timer.deadline) // timer.interval)
                timer.deadline += (missed + 1) * timer.interval
                overrun = min(missed, INT_MAX)
            else:
                timer.deadline = None
            timer.overrun = overrun  # what timer_getoverrun says: the last expiration's
            info = pack_siginfo(
                SiginfoTimer(
                    si_signo=timer.signo,
                    si_errno=0,
                    si_code=SI_TIMER,
                    si_timerid=timer.timer_id,
                    si_overrun=overrun,
                    si_value=timer.value,
                )
            )
        if timer.notify != SIGEV_NONE:
            handler = signals.action(timer.signo).handler
            if handler != SIG_IGN and not (handler == SIG_DFL and timer.signo in DEFAULT_IGNORE):
                signals.timers_in_flight.add(timer.timer_id)  # an ignored one is never taken
            # a real host signal, carrying the guest's siginfo through the bridge; at SIG_DFL
            # the host kernel applies the default action to us, as Linux would
            proc.ensure_signal_bridge().send_to_self(timer.signo, info)
        if timer.deadline is None:
            return
        if timer.interval < 0.001:
            # no faster than a signal a millisecond: the expirations between count as
            # overruns of the next one, as Linux counts those that come while one is pending
            time.sleep(0.001)


@syscall("timer_settime", INT, Flags({TIMER_ABSTIME: "TIMER_ABSTIME"}), PTR, PTR)
def timer_settime(proc: GuestProcess, timer_id: int, flags: int, new_ptr: int, old_ptr: int) -> int:
    if not new_ptr:
        return -errno.EINVAL  # before anything is read (timer_settime02)
    i_sec, i_nsec, v_sec, v_nsec = ITIMERSPEC.unpack(proc.mem.read(new_ptr, ITIMERSPEC.size))
    timer = _timers(proc).get(timer_id)
    if timer is None:
        return -errno.EINVAL
    if not (0 <= i_nsec < 1_000_000_000 and 0 <= v_nsec < 1_000_000_000) or v_sec < 0:
        return -errno.EINVAL
    if old_ptr:
        proc.mem.write(old_ptr, _current(timer))
    if timer.signo and proc.signals.action(timer.signo).handler > 1:
        proc.ensure_signal_bridge()
    with timer.lock:
        timer.generation += 1
        timer.interval = i_sec + i_nsec / 1e9
        value = v_sec + v_nsec / 1e9
        if value == 0:
            timer.deadline = None
            return 0
        now = _clock_now(timer)
        if flags & TIMER_ABSTIME:
            # kept as given, in the past too: the expirations since count as overruns
            timer.deadline = now + (value - _absolute_now(timer))
        else:
            timer.deadline = now + value
        generation = timer.generation
    threading.Thread(target=_fire, args=(proc, timer, generation), daemon=True).start()
    return 0


def _current(timer: GuestTimer) -> bytes:
    remaining = 0.0 if timer.deadline is None else max(timer.deadline - _clock_now(timer), 0)

    def split(seconds: float) -> tuple[int, int]:
        whole = int(seconds)
        return whole, int((seconds - whole) * 1e9)

    return ITIMERSPEC.pack(Itimerspec(*split(timer.interval), *split(remaining)))


@syscall("timer_gettime", INT, PTR)
def timer_gettime(proc: GuestProcess, timer_id: int, value_ptr: int) -> int:
    timer = _timers(proc).get(timer_id)
    if timer is None:
        return -errno.EINVAL
    proc.mem.write(value_ptr, _current(timer))
    return 0


@syscall("timer_getoverrun", INT)
def timer_getoverrun(proc: GuestProcess, timer_id: int) -> int:
    timer = _timers(proc).get(timer_id)
    if timer is None:
        return -errno.EINVAL
    if timer.notify == SIGEV_NONE:
        return timer.overrun
    # the overrun of the signal taken last (Linux's it_overrun_last, set as it is dequeued)
    return proc.signals.timer_overruns.get(timer_id, 0)


@syscall("timer_delete", INT)
def timer_delete(proc: GuestProcess, timer_id: int) -> int:
    timer = _timers(proc).pop(timer_id, None)
    if timer is None:
        return -errno.EINVAL
    with timer.lock:
        timer.generation += 1
        timer.deadline = None
    proc.signals.timers_in_flight.discard(timer_id)  # the id is free for a new timer
    proc.signals.timer_overruns.pop(timer_id, None)
    return 0
