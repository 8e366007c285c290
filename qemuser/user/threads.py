"""Guest threads on one CPU engine, and futexes.

Guest threads share one unicorn engine and take turns on it (shared/UNICORN-NOTES.md: guest code
must not run in parallel, or the guest's atomics would not be atomic): the engine's registers are
saved and restored with unicorn contexts at each switch. Switches happen when a thread blocks,
exits, or when its slice of instructions ends while another thread is ready. A thread whose
system call may block hands it to its own host thread (whose native id is the guest tid), so
a read on a pipe or an accept never stops the other guest threads.
Futex waits are queued here, checked and queued between guest instructions, so that a wake
cannot slip between the value check and the sleep.

Signals reach a blocked thread as on Linux. The scheduler picks the thread that takes each
signal (tgkill's own, else the main thread unless it blocks it, else the first that does not:
route_signals), and wakes it if it sleeps: a futex sleeper leaves its queue, and a worker's
host call is ended by INTERRUPT_SIGNAL, sent to that worker alone (it is the one signal a
worker does not block; its host handler does nothing, but has no SA_RESTART, so the host kernel
ends the call with EINTR). The signal may land just before the worker enters its call, where it
ends nothing: the scheduler sends it again every KICK_INTERVAL while the thread still sleeps and
its signal is still pending. What an interrupted call returns (EINTR or a restart, SA_RESTART)
is decided when its thread is back on the CPU, with that thread's registers, mask and signals.

A program that never calls clone() pays nothing: no slicing, no worker, no switch.
"""

from __future__ import annotations

import errno
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qemuser.host.signals import INTERRUPT_SIGNAL
from qemuser.syscalls.sigstate import (
    DEFAULT_IGNORE,
    SA_RESTART,
    SIG_DFL,
    SIG_IGN,
    PendingSignal,
    bit,
)

if TYPE_CHECKING:
    from qemuser.syscalls.registry import SyscallDef
    from qemuser.user.runtime import RuntimeProcess

# Instructions a thread runs before the scheduler looks again (~2 ms), once there are threads.
# Slices are counted by the engine itself: stopping it from another host thread (uc_emu_stop,
# as unicorn's own timeout does) was seen to corrupt the next thread's start now and then.
SLICE_INSTRUCTIONS = 200_000

# How often a sleeping thread's worker is signalled again while its signal is still pending
# (the first one may have arrived just before the host call began).
KICK_INTERVAL = 0.01


# eq=False: a thread is itself, compared by identity. The generated __eq__ compared every
# field, and the scheduler tests membership in its queues (`thread in self.ready`) at every
# switch and futex wake: 167k field-by-field comparisons in the threads benchmark.
@dataclass(eq=False)
class GuestThread:
    tid: int
    context: Any = None  # unicorn context while not on the CPU
    # the same context object while on the CPU: the next switch saves into it in place
    # (context_update, ~0.7 µs), where context_save allocates a new one (~5-8 µs a switch)
    spare_context: Any = None
    state: str = "runnable"  # runnable | blocked | exited
    clear_child_tid: int = 0
    robust_list: tuple[int, int] = (0, 0)
    sigmask: int = 0
    alt_stack: tuple[int, int, int] = (0, 2, 0)
    result: int | None = None  # to write into the return register when it runs again
    futex_address: int = 0
    futex_bitset: int = 0
    deadline: float | None = None  # futex timeout (monotonic)
    worker: Worker | None = None
    name: bytes = b""
    # a call a signal cut short, to finish when the thread runs again: (its definition and
    # arguments) for a worker's call, (None, (timed,)) for a futex wait
    interrupted: tuple[SyscallDef | None, tuple[int, ...]] | None = None
    suspended: bool = False  # in rt_sigsuspend, until a signal comes
    # a CLONE_VM child that is not a thread (it runs here, as a thread): the pid getppid()
    # gives it, its creator's (or with CLONE_PARENT the creator's parent); 0 for a thread
    parent_pid: int = 0
    restore_mask: int | None = None  # rt_sigsuspend's mask to restore after the handler


class _HostThreadState(threading.local):
    """What each host thread knows of itself: a worker's guest thread. The class attribute is
    every other thread's value (the engine's thread), so reading it never raises: a missing
    attribute of a plain threading.local costs a formatted AttributeError, several µs on
    every system call that asks which guest thread it runs for (getppid, gettid, futex)."""

    thread: GuestThread | None = None


def _interrupt_only(_signo: int, _frame: object) -> None:
    """INTERRUPT_SIGNAL's handler: its work is done by the kernel, which ended the call."""


class Worker:
    """A host thread that runs one guest thread's blocking system calls."""

    def __init__(self, scheduler: Scheduler, thread: GuestThread | None) -> None:
        import queue  # here: a program that never blocks in a thread does not pay its import

        self.scheduler = scheduler
        self.thread = thread
        self.jobs: queue.Queue[tuple[int, tuple[int, ...]] | None] = queue.Queue()
        self.native_id = 0
        self.in_call = False  # running a job: INTERRUPT_SIGNAL may be sent (under cond)
        self.kicked_at: float | None = None
        started = threading.Event()
        self.host = threading.Thread(
            target=self._loop, args=(started,), daemon=True, name="qemuser-guest-thread"
        )
        self.host.start()
        started.wait()

    def _loop(self, started: threading.Event) -> None:
        from qemuser.host.signals import keep_signals_for_the_main_thread

        keep_signals_for_the_main_thread()
        # Never blocked here: outside a call it is sent only while in_call, so it cannot be
        # left pending to cut a later call short.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {INTERRUPT_SIGNAL})
        self.native_id = threading.get_native_id()
        started.set()
        scheduler = self.scheduler
        proc = scheduler.proc
        while True:
            job = self.jobs.get()
            if job is None:
                return
            nr, raw = job
            thread = self.thread
            assert thread is not None
            scheduler.local.thread = thread
            with scheduler.cond:
                self.in_call = True
                self.kicked_at = None
                if proc.signals.pending:
                    scheduler.cond.notify_all()  # a signal for this thread can now end its call
            result = proc.dispatch(nr, raw)
            scheduler.finish_blocking(thread, result)

    def stop(self) -> None:
        self.jobs.put(None)


class Scheduler:
    def __init__(self, proc: RuntimeProcess, main_tid: int) -> None:
        self.proc = proc
        self.current = GuestThread(tid=main_tid)
        self.threads: dict[int, GuestThread] = {main_tid: self.current}
        self.ready: deque[GuestThread] = deque()
        self.cond = threading.Condition()
        self.local = _HostThreadState()
        self.multi = False
        self.waiters: dict[int, list[GuestThread]] = {}
        self.main_tid = main_tid

    # ---- who is running ----------------------------------------------------------------------

    def running(self) -> GuestThread:
        """The guest thread a handler acts for (a worker's own thread, else the current one)."""
        return self.local.thread or self.current

    def live_threads(self) -> int:
        return sum(1 for t in self.threads.values() if t.state != "exited")

    # ---- creation and exit -------------------------------------------------------------------

    def new_thread(self, context: Any, sigmask: int) -> GuestThread:
        thread = GuestThread(tid=0, context=context, sigmask=sigmask)
        worker = Worker(self, thread)
        thread.worker = worker
        thread.tid = worker.native_id
        self.threads[thread.tid] = thread
        if not self.multi:
            self.multi = True
            # the main thread gets its worker too, now that blocking matters
            self.current.worker = Worker(self, self.current)
            signal.signal(INTERRUPT_SIGNAL, _interrupt_only)
            self.proc.signals.current_tid = self.current.tid
            self.proc.signals.waker = self._wake
        with self.cond:
            self.ready.append(thread)
        return thread

    def exit_thread(self, thread: GuestThread) -> None:
        thread.state = "exited"
        if thread.worker is not None:
            thread.worker.stop()

    def forget_others(self) -> None:
        """After fork: only the calling thread exists in the child."""
        self.threads = {self.current.tid: self.current}
        self.ready.clear()
        self.waiters.clear()
        self.multi = False
        self.current.worker = None
        self.main_tid = self.current.tid
        signals = self.proc.signals
        signals.current_tid = 0
        signals.waker = None
        with signals.lock:  # a child starts with no signal pending for another thread
            signals.pending = [p for p in signals.pending if p.thread == 0]
            for p in signals.pending:
                p.target = 0

    # ---- blocking ----------------------------------------------------------------------------

    def offload(self, nr: int, raw: tuple[int, ...]) -> None:
        """Run a blocking call of the current thread on its worker; switch away."""
        thread = self.current
        thread.state = "blocked"
        assert thread.worker is not None
        thread.worker.jobs.put((nr, raw))

    def on_worker(self) -> bool:
        """Whether this host thread is a worker (the engine runs on the main one)."""
        return self.local.thread is not None

    def note_interrupted(self, sysdef: SyscallDef, raw: tuple[int, ...]) -> None:
        """A signal ended a worker's host call: decide EINTR or restart when its thread runs
        again (the registers to rewind are then that thread's)."""
        self.local.thread.interrupted = (sysdef, raw)

    def finish_blocking(self, thread: GuestThread, result: int | None) -> None:
        with self.cond:
            if thread.worker is not None:
                thread.worker.in_call = False
            thread.result = result
            if thread.state == "blocked":
                thread.state = "runnable"
                if thread not in self.ready:
                    self.ready.append(thread)
            self.cond.notify_all()

    def suspend(self) -> None:
        """rt_sigsuspend of the current thread: it sleeps until route_signals gives it a signal
        (its temporary mask is already set), then returns EINTR."""
        thread = self.current
        thread.state = "blocked"
        thread.suspended = True
        thread.result = -errno.EINTR

    # ---- futexes -----------------------------------------------------------------------------

    def futex_wait(self, address: int, bitset: int, deadline: float | None) -> None:
        """Queue the current thread on a futex (the caller has checked the word)."""
        thread = self.current
        thread.state = "blocked"
        thread.futex_address = address
        thread.futex_bitset = bitset
        thread.deadline = deadline
        thread.result = 0
        self.waiters.setdefault(address, []).append(thread)

    def futex_wake(self, address: int, count: int, bitset: int = 0xFFFF_FFFF) -> int:
        woken = 0
        queue_ = self.waiters.get(address, [])
        for thread in list(queue_):
            if woken >= count:
                break
            if thread.futex_bitset & bitset:
                queue_.remove(thread)
                self._make_ready(thread, 0)
                woken += 1
        if not queue_:
            self.waiters.pop(address, None)
        return woken

    def futex_requeue(self, address: int, wake: int, requeue: int, target: int) -> int:
        woken = self.futex_wake(address, wake)
        moved = 0
        queue_ = self.waiters.get(address, [])
        while queue_ and moved < requeue:
            thread = queue_.pop(0)
            thread.futex_address = target
            self.waiters.setdefault(target, []).append(thread)
            moved += 1
        if not queue_:
            self.waiters.pop(address, None)
        return woken + moved

    def _make_ready(self, thread: GuestThread, result: int) -> None:
        with self.cond:
            thread.result = result
            thread.deadline = None
            thread.state = "runnable"
            if thread not in self.ready:
                self.ready.append(thread)
            self.cond.notify_all()

    def _expire_timeouts(self) -> float | None:
        """Wake futex waiters whose time is up; the next deadline, if any."""
        now = time.monotonic()
        nearest = None
        for address, queue_ in list(self.waiters.items()):
            for thread in list(queue_):
                if thread.deadline is None:
                    continue
                if thread.deadline <= now:
                    queue_.remove(thread)
                    self._make_ready(thread, -errno.ETIMEDOUT)
                elif nearest is None or thread.deadline < nearest:
                    nearest = thread.deadline
            if not queue_:
                self.waiters.pop(address, None)
        return nearest

    # ---- signals -------------------------------------------------------------------------

    def _wake(self) -> None:
        """A signal became pending: the engine's host thread, if it waits, looks at it now."""
        with self.cond:
            self.cond.notify_all()

    def mask_of(self, thread: GuestThread) -> int:
        return self.proc.signals.mask if thread is self.current else thread.sigmask

    def _takes(self, thread: GuestThread | None, signo: int) -> bool:
        return (
            thread is not None
            and thread.state != "exited"
            and not self.mask_of(thread) & bit(signo)
        )

    def _choose_target(self, signo: int) -> GuestThread | None:
        """Linux's complete_signal: the main thread unless it blocks the signal, else the
        first thread that does not."""
        main = self.threads.get(self.main_tid)
        if self._takes(main, signo):
            return main
        for thread in self.threads.values():
            if self._takes(thread, signo):
                return thread
        return None

    def route_signals(self) -> None:
        """Give each pending signal a thread to take it, and wake that thread if it sleeps."""
        proc = self.proc
        signals = proc.signals
        to_wake: list[GuestThread] = []
        with signals.lock:
            for p in list(signals.pending):
                if p.thread:
                    target = self.threads.get(p.thread)
                    if target is None or target.state == "exited":
                        signals.pending.remove(p)  # its thread is gone, and the signal too
                        continue
                    if self.mask_of(target) & bit(p.signo):
                        continue
                else:
                    target = self.threads.get(p.target) if p.target else None
                    if not self._takes(target, p.signo):
                        target = self._choose_target(p.signo)
                        p.target = target.tid if target is not None else 0
                    if target is None:
                        continue
                if self._ignored(p):
                    continue
                if target.state == "blocked" and target not in to_wake:
                    to_wake.append(target)
        for thread in to_wake:
            self._interrupt(thread)

    def _ignored(self, pending: PendingSignal) -> bool:
        """A signal that does nothing when taken: Linux does not wake a thread for it."""
        handler = self.proc.signals.action(pending.signo).handler
        return handler == SIG_IGN or (handler == SIG_DFL and pending.signo in DEFAULT_IGNORE)

    def _interrupt(self, thread: GuestThread) -> None:
        """End a sleeping thread's wait: sigsuspend, a futex wait, or its worker's host call."""
        if thread.suspended:
            thread.suspended = False
            with self.cond:
                thread.state = "runnable"
                if thread not in self.ready:
                    self.ready.append(thread)
            return
        queue_ = self.waiters.get(thread.futex_address)
        if queue_ and thread in queue_:
            queue_.remove(thread)
            if not queue_:
                self.waiters.pop(thread.futex_address, None)
            thread.interrupted = (None, (int(thread.deadline is not None),))
            with self.cond:
                thread.deadline = None
                thread.result = None
                thread.state = "runnable"
                if thread not in self.ready:
                    self.ready.append(thread)
            return
        worker = thread.worker
        if worker is None:
            return
        with self.cond:
            now = time.monotonic()
            if worker.in_call and (
                worker.kicked_at is None or now - worker.kicked_at >= KICK_INTERVAL
            ):
                worker.kicked_at = now
                signal.pthread_kill(worker.host.ident or 0, INTERRUPT_SIGNAL)

    def _finish_interrupted(self, thread: GuestThread) -> None:
        """On the CPU again after a signal ended its call: EINTR, or back to the trap
        instruction to make the call again (SA_RESTART, or no handler runs)."""
        assert thread.interrupted is not None
        sysdef, raw = thread.interrupted
        thread.interrupted = None
        proc = self.proc
        if sysdef is not None:
            result = proc.interrupted(sysdef, raw)
            if result is not None:
                proc.write_result(result)
            return
        # futex wait (kernel/futex/waitwake.c, futex_wait): -ERESTARTSYS without a timeout,
        # restarted under SA_RESTART or when no handler runs; with one, a restart block, which
        # a handler always turns into EINTR.
        timed = bool(raw[0])
        taken = proc.signals.next_for(thread.tid, proc.signals.mask)
        action = proc.signals.action(taken.signo) if taken is not None else None
        handled = action is not None and action.handler not in (SIG_DFL, SIG_IGN)
        if handled and (timed or not action.flags & SA_RESTART):
            proc.write_result(-errno.EINTR)
            return
        # the wait wrote no register: x0/a0 still holds the futex address
        pc = proc.uc.reg_read(proc.spec.pc)
        proc.uc.reg_write(proc.spec.pc, pc - proc.spec.syscall.insn_size)

    # ---- switching ---------------------------------------------------------------------------

    def switch(self) -> bool:
        """Give the CPU to the next ready thread (or keep it). False when none is left."""
        proc = self.proc
        uc = proc.uc
        current = self.current
        if proc.signals.pending:
            self.route_signals()
        with self.cond:
            if current.state == "runnable" and not self.ready:
                return True
        if current.state != "exited":
            spare, current.spare_context = current.spare_context, None
            if spare is None:
                current.context = uc.context_save()
            else:
                uc.context_update(spare)
                current.context = spare
            current.sigmask = proc.signals.mask
            current.alt_stack = proc.signals.alt_stack
            current.restore_mask = proc.restore_mask_after_handler
            if current.state == "runnable":
                with self.cond:
                    if current not in self.ready:
                        self.ready.append(current)
        while True:
            nearest = self._expire_timeouts()
            with self.cond:
                if self.ready:
                    chosen = self.ready.popleft()
                    break
                if self.live_threads() == 0:
                    return False
                timeout = None if nearest is None else max(nearest - time.monotonic(), 0)
                self.cond.wait(0.05 if timeout is None else min(timeout, 0.05))
            if proc.signals.pending:
                self.route_signals()
        self.current = chosen
        if chosen is not current:
            uc.context_restore(chosen.context)
            proc.linux.context_restored()
        chosen.spare_context, chosen.context = chosen.context, None
        proc.signals.mask = chosen.sigmask
        proc.signals.current_tid = chosen.tid
        proc.signals.alt_stack = chosen.alt_stack
        proc.restore_mask_after_handler, chosen.restore_mask = chosen.restore_mask, None
        if chosen.result is not None:
            proc.write_result(chosen.result)
            chosen.result = None
        if chosen.interrupted is not None:
            self._finish_interrupted(chosen)
        if proc.signals.pending:
            self.route_signals()  # signals for the chosen thread may now have other takers
        return True
