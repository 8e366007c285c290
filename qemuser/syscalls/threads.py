"""Guest threads on one CPU engine, and futexes.

Guest threads share one unicorn engine and take turns on it (shared/UNICORN-NOTES.md: guest code
must not run in parallel, or the guest's atomics would not be atomic): the engine's registers are
saved and restored with unicorn contexts at each switch. Switches happen when a thread blocks,
exits, or when its slice of instructions ends while another thread is ready. A thread whose
system call may block hands it to its own host thread (whose native id is the guest tid), so
a read on a pipe or an accept never stops the other guest threads.
Futex waits are queued here, checked and queued between guest instructions, so that a wake
cannot slip between the value check and the sleep.

A program that never calls clone() pays nothing: no slicing, no worker, no switch.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qemuser.syscalls.process import Process

# Instructions a thread runs before the scheduler looks again (~2 ms), once there are threads.
# Slices are counted by the engine itself: stopping it from another host thread (uc_emu_stop,
# as unicorn's own timeout does) was seen to corrupt the next thread's start now and then.
SLICE_INSTRUCTIONS = 200_000

# Calls that may sleep in the host: run on the calling guest thread's own host thread.
OFFLOADED = frozenset(
    {
        "read",
        "readv",
        "write",
        "writev",
        "pread64",
        "pwrite64",
        "preadv",
        "pwritev",
        "wait4",
        "waitid",
        "nanosleep",
        "clock_nanosleep",
        "ppoll",
        "pselect6",
        "epoll_pwait",
        "epoll_pwait2",
        "accept",
        "accept4",
        "connect",
        "recvfrom",
        "recvmsg",
        "sendto",
        "sendmsg",
        "flock",
        "openat",
        "fsync",
        "fdatasync",
        "sendfile",
        "copy_file_range",
        "splice",
        "msgrcv",
        "semop",
        "semtimedop",
        "rt_sigtimedwait",
        "getrandom",
    }
)


@dataclass
class GuestThread:
    tid: int
    context: Any = None  # unicorn context while not on the CPU
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


class Worker:
    """A host thread that runs one guest thread's blocking system calls."""

    def __init__(self, scheduler: Scheduler, thread: GuestThread | None) -> None:
        import queue  # here: a program that never blocks in a thread does not pay its import

        self.scheduler = scheduler
        self.thread = thread
        self.jobs: queue.Queue[tuple[int, tuple[int, ...]] | None] = queue.Queue()
        self.native_id = 0
        started = threading.Event()
        self.host = threading.Thread(
            target=self._loop, args=(started,), daemon=True, name="qemuser-guest-thread"
        )
        self.host.start()
        started.wait()

    def _loop(self, started: threading.Event) -> None:
        from qemuser.syscalls.sigstate import keep_signals_for_the_main_thread

        keep_signals_for_the_main_thread()
        self.native_id = threading.get_native_id()
        started.set()
        proc = self.scheduler.proc
        while True:
            job = self.jobs.get()
            if job is None:
                return
            nr, raw = job
            thread = self.thread
            assert thread is not None
            self.scheduler.local.thread = thread
            result = proc.dispatch(nr, raw)
            self.scheduler.finish_blocking(thread, result)

    def stop(self) -> None:
        self.jobs.put(None)


class Scheduler:
    def __init__(self, proc: Process, main_tid: int) -> None:
        self.proc = proc
        self.current = GuestThread(tid=main_tid)
        self.threads: dict[int, GuestThread] = {main_tid: self.current}
        self.ready: deque[GuestThread] = deque()
        self.cond = threading.Condition()
        self.local = threading.local()
        self.multi = False
        self.waiters: dict[int, list[GuestThread]] = {}

    # ---- who is running ----------------------------------------------------------------------

    def running(self) -> GuestThread:
        """The guest thread a handler acts for (a worker's own thread, else the current one)."""
        return getattr(self.local, "thread", None) or self.current

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

    # ---- blocking ----------------------------------------------------------------------------

    def offload(self, nr: int, raw: tuple[int, ...]) -> None:
        """Run a blocking call of the current thread on its worker; switch away."""
        thread = self.current
        thread.state = "blocked"
        assert thread.worker is not None
        thread.worker.jobs.put((nr, raw))

    def finish_blocking(self, thread: GuestThread, result: int | None) -> None:
        with self.cond:
            thread.result = result
            if thread.state == "blocked":
                thread.state = "runnable"
                if thread not in self.ready:
                    self.ready.append(thread)
            self.cond.notify_all()

    # ---- futexes -----------------------------------------------------------------------------

    def futex_wait(self, address: int, bitset: int, deadline: float | None) -> None:
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
        import errno

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

    def interrupt_futex_waiters(self) -> bool:
        """A signal arrived while every thread sleeps: a futex sleeper takes it (EINTR)."""
        import errno

        for address, queue_ in list(self.waiters.items()):
            if queue_:
                thread = queue_.pop(0)
                if not queue_:
                    self.waiters.pop(address, None)
                self._make_ready(thread, -errno.EINTR)
                return True
        return False

    # ---- switching ---------------------------------------------------------------------------

    def switch(self) -> bool:
        """Give the CPU to the next ready thread (or keep it). False when none is left."""
        proc = self.proc
        uc = proc.uc
        current = self.current
        with self.cond:
            if current.state == "runnable" and not self.ready:
                return True
        if current.state != "exited":
            current.context = uc.context_save()
            current.sigmask = proc.signals.mask
            current.alt_stack = proc.signals.alt_stack
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
            if proc.signals.pending and not self.ready:
                self.interrupt_futex_waiters()
        self.current = chosen
        if chosen is not current:
            uc.context_restore(chosen.context)
        chosen.context = None
        proc.signals.mask = chosen.sigmask
        proc.signals.alt_stack = chosen.alt_stack
        if chosen.result is not None:
            proc.write_result(chosen.result)
            chosen.result = None
        return True
