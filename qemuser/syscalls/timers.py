"""POSIX per-process timers: timer_create, timer_settime, timer_gettime, timer_getoverrun,
timer_delete.

Each armed timer is a host thread that sleeps until expiry and then sends the timer's signal to
this process as a real host signal, so that it interrupts blocking calls exactly like any other
signal; the siginfo the guest sees (SI_TIMER, the timer id, the overrun, the sigev_value) is
handed to the signal bridge beside it.
"""

from __future__ import annotations

import errno
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
    deadline: float | None = None  # on time.monotonic()
    overrun: int = 0
    generation: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _timers(proc: GuestProcess) -> dict[int, GuestTimer]:
    return proc.posix_timers


@syscall("timer_create", CLOCKS, PTR, PTR)
def timer_create(proc: GuestProcess, clock: int, sevp: int, timerid_ptr: int) -> int:
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


def _now(timer: GuestTimer) -> float:
    return time.time() if timer.clock == 0 else time.monotonic()


def _fire(proc: GuestProcess, timer: GuestTimer, generation: int) -> None:
    keep_signals_for_the_main_thread()
    while True:
        with timer.lock:
            if timer.generation != generation or timer.deadline is None:
                return
            delay = timer.deadline - time.monotonic()
        if delay > 0:
            time.sleep(min(delay, 0.05))
            continue
        with timer.lock:
            if timer.generation != generation:
                return
            info = pack_siginfo(
                SiginfoTimer(
                    si_signo=timer.signo,
                    si_errno=0,
                    si_code=SI_TIMER,
                    si_timerid=timer.timer_id,
                    si_overrun=timer.overrun,
                    si_value=timer.value,
                )
            )
            timer.overrun = 0
            if timer.interval > 0:
                timer.deadline += timer.interval
            else:
                timer.deadline = None
        if timer.notify != SIGEV_NONE:
            # a real host signal, carrying the guest's siginfo through the bridge; at SIG_DFL
            # the host kernel applies the default action to us, as Linux would
            proc.ensure_signal_bridge().send_to_self(timer.signo, info)
        if timer.deadline is None:
            return


@syscall("timer_settime", INT, Flags({TIMER_ABSTIME: "TIMER_ABSTIME"}), PTR, PTR)
def timer_settime(proc: GuestProcess, timer_id: int, flags: int, new_ptr: int, old_ptr: int) -> int:
    timer = _timers(proc).get(timer_id)
    if timer is None:
        return -errno.EINVAL
    i_sec, i_nsec, v_sec, v_nsec = ITIMERSPEC.unpack(proc.mem.read(new_ptr, ITIMERSPEC.size))
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
        if flags & TIMER_ABSTIME:
            value -= _now(timer)
        timer.deadline = time.monotonic() + max(value, 0)
        generation = timer.generation
    threading.Thread(target=_fire, args=(proc, timer, generation), daemon=True).start()
    return 0


def _current(timer: GuestTimer) -> bytes:
    remaining = 0.0 if timer.deadline is None else max(timer.deadline - time.monotonic(), 0)

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
    return -errno.EINVAL if timer is None else timer.overrun


@syscall("timer_delete", INT)
def timer_delete(proc: GuestProcess, timer_id: int) -> int:
    timer = _timers(proc).pop(timer_id, None)
    if timer is None:
        return -errno.EINVAL
    with timer.lock:
        timer.generation += 1
        timer.deadline = None
    return 0
