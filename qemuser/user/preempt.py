"""Getting the run loop back from the engine now and then, without counting instructions.

The run loop must regain control while the guest computes: to deliver host signals (Python runs
their handlers only between bytecodes, never inside `emu_start`) and to give other guest threads
their turn. Two ways:

- **A tick** (the default): a host thread calls `uc_emu_stop()` every `TICK_SECONDS` while the
  guest runs. The engine stops at the start of its next translated block, where the guest state
  is whole. This is safe only because unicorn's exit check after every memory access is turned
  off (qemuser/cpu/exit_checks.py): with that check, a stop from another thread lands between a
  load and the rest of its instruction, and the instruction is replayed with half its effects
  (seen: `ldr x0, [x0]` replayed from the loaded x0, a wild read). Measured with a thread
  stopping the compute benchmark every 0.1 ms: every run wrong with the check, every run right
  without it.
- **Counted slices** (`emu_start(count=N)`) where the check cannot be turned off (an unknown
  unicorn build): unicorn then calls a hook after every instruction, which costs about a third of
  the guest's speed.

A tick that lands while the engine is not running is lost, which is harmless: the loop is in
Python then and looks at its signals and threads before it starts the engine again.
"""

from __future__ import annotations

import os
import threading
import time

from unicorn import Uc

from qemuser.host.signals import keep_signals_for_the_main_thread

TICK_SECONDS = 0.002  # host-signal latency and guest-thread time slice; ~1% of the run


class Ticker:
    """One per host process (the engine of the moment runs on the main thread): `arm(uc)` before
    `emu_start`, `disarm()` after it; while armed, the engine is stopped every tick."""

    def __init__(self) -> None:
        # held while the tick stops the engine, so that the engine cannot be disarmed (and then
        # closed, after an execve) under the tick's feet
        self._lock = threading.Lock()
        self._armed: Uc | None = None
        self._owner_pid = 0  # the process whose thread ticks (threads do not survive fork)
        self._wake = threading.Event()
        os.register_at_fork(after_in_child=self._after_fork)

    def arm(self, uc: Uc) -> None:
        if self._owner_pid != os.getpid():
            self._start()
        self._armed = uc
        self._wake.set()

    def _after_fork(self) -> None:
        """A guest fork happens inside `emu_start`, so the child goes on running armed, with no
        tick thread (threads do not survive fork) and with a copy of the lock that the parent's
        tick may have held at that moment: give the child a fresh lock and its own tick."""
        self._lock = threading.Lock()
        self._owner_pid = 0
        if self._armed is not None:
            self._start()

    def disarm(self) -> None:
        with self._lock:
            self._armed = None

    def _start(self) -> None:
        self._owner_pid = os.getpid()
        self._wake = threading.Event()
        if self._armed is not None:
            self._wake.set()
        threading.Thread(target=self._tick, name="qemuser-tick", daemon=True).start()

    def _tick(self) -> None:
        keep_signals_for_the_main_thread()
        while True:
            self._wake.wait()  # sleep while the guest does not run
            self._wake.clear()
            while self._armed is not None:
                time.sleep(TICK_SECONDS)
                with self._lock:
                    if self._armed is not None:
                        self._armed.emu_stop()


TICKER = Ticker()
