"""Stopping the engine at a host-time deadline, from another thread, instead of counting.

The run loop must get the CPU back when the guest's timer is due, to notice typed input, and now
and then for whatever else it polls. Slicing with `emu_start(count=N)` makes unicorn call a hook
after every instruction (~25% of the host time of a Linux boot). Instead, a host thread calls
`uc_emu_stop()` at the deadline while `emu_start` runs. That is safe only with unicorn's exit
check after every memory access turned off (qemuser/cpu/exit_checks.py, UNICORN-NOTES): the stop
then lands at the start of the next translated block, where the guest state is whole.

User mode's Ticker (qemuser/syscalls/preempt.py) is the same idea with a fixed period; this one
follows a deadline that the run loop sets before each `emu_start`.

A stop requested before `emu_start` has begun is lost (unicorn clears its stop request when it
starts), so once the deadline has passed the thread stops the engine again every `RETRY_NS`
until it is disarmed.
"""

from __future__ import annotations

import threading
import time

from unicorn import Uc

RETRY_NS = 500_000  # after a stop that may have been lost, try again this soon


class Stopper:
    """`arm(deadline_ns)` just before `emu_start`, `disarm()` just after it, `close()` when the
    engine goes away. While armed, the engine is stopped once host monotonic time passes the
    deadline. The lock guarantees that no stop reaches the engine after `disarm()` returned."""

    def __init__(self, uc: Uc) -> None:
        self._uc = uc
        self._cond = threading.Condition(threading.Lock())
        self._deadline_ns: int | None = None  # None: disarmed
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="qemuser-stopper", daemon=True)
        self._thread.start()

    def arm(self, deadline_ns: int) -> None:
        with self._cond:
            self._deadline_ns = deadline_ns
            self._cond.notify()

    def disarm(self) -> None:
        with self._cond:
            self._deadline_ns = None

    def close(self) -> None:
        with self._cond:
            self._deadline_ns = None
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                deadline = self._deadline_ns
                if deadline is None:
                    self._cond.wait()
                    continue
                remaining = deadline - time.monotonic_ns()
                if remaining > 0:
                    self._cond.wait(remaining / 1e9)
                    continue
                # Under the lock: disarm() cannot return (and the engine be closed) meanwhile.
                self._uc.emu_stop()
                self._deadline_ns = time.monotonic_ns() + RETRY_NS
