"""A guest process's signal state: dispositions, mask, pending queue, alternate stack, the
constants of the signal calls. Delivery (frames, the host-signal bridge) is the runtime's
(qemuser.user.signals).

How host signals reach the guest: while the guest handles or blocks a signal, the host
disposition is a Python handler that queues it. Python runs that handler only between
bytecodes, so while such a handler exists the engine is stopped every few milliseconds
(qemuser.user.preempt) and the run loop delivers what is pending before it starts the engine again.
A host signal that arrives during a blocking host call makes the kernel end it with EINTR
(Python's handlers have no SA_RESTART), which becomes the guest's EINTR or a restart under
SA_RESTART (qemuser.host.libc). While the guest leaves a signal at SIG_DFL or SIG_IGN, the host
disposition is the same, so the kernel itself does what it would do to a native program (and
SIG_IGN survives execve).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from qemuser.syscalls.abi.sigaction import SIGACTION
from qemuser.syscalls.abi.siginfo import (
    SI_TIMER,
    SIGINFO_CHLD,
    SIGNALFD_SIGINFO,
    SiginfoFault,
    SiginfoKill,
    SiginfoRt,
    pack_siginfo,
)

SIG_DFL = 0
SIG_IGN = 1

SA_NOCLDSTOP = 0x00000001
SA_NOCLDWAIT = 0x00000002
SA_SIGINFO = 0x00000004
SA_RESTORER = 0x04000000
SA_ONSTACK = 0x08000000
SA_RESTART = 0x10000000
SA_NODEFER = 0x40000000
SA_RESETHAND = 0x80000000

SS_ONSTACK = 1
SS_DISABLE = 2
SS_AUTODISARM = 1 << 31

NSIG = 64
SIGKILL = 9
SIGSTOP = 19
UNBLOCKABLE = (1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1))

SI_USER = 0
SI_TKILL = -6
SI_QUEUE = -1
SI_KERNEL = 0x80

# man 7 signal: the default actions.
DEFAULT_IGNORE = frozenset({signal.SIGCHLD, signal.SIGURG, signal.SIGWINCH, signal.SIGCONT})
DEFAULT_STOP = frozenset({signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})
DEFAULT_CORE = frozenset(
    {
        signal.SIGQUIT,
        signal.SIGILL,
        signal.SIGTRAP,
        signal.SIGABRT,
        signal.SIGBUS,
        signal.SIGFPE,
        signal.SIGSEGV,
        signal.SIGXCPU,
        signal.SIGXFSZ,
        signal.SIGSYS,
    }
)


def bit(signo: int) -> int:
    return 1 << (signo - 1)


@dataclass
class SigAction:
    """A guest's struct sigaction (abi/sigaction.py: riscv64's has no sa_restorer)."""

    handler: int = SIG_DFL
    flags: int = 0
    restorer: int = 0
    mask: int = 0

    @staticmethod
    def size(arch: str) -> int:
        return SIGACTION[arch].size

    def pack(self, arch: str) -> bytes:
        layout = SIGACTION[arch]
        values = {"sa_handler": self.handler, "sa_flags": self.flags, "sa_mask": self.mask}
        if "sa_restorer" in layout.offsets:  # riscv64's struct has none
            values["sa_restorer"] = self.restorer
        return layout.pack(**values)

    @classmethod
    def unpack(cls, data: bytes, arch: str) -> SigAction:
        given = SIGACTION[arch].unpack(data)
        restorer = getattr(given, "sa_restorer", 0)
        return cls(given.sa_handler, given.sa_flags & 0xFFFF_FFFF, restorer, given.sa_mask)


@dataclass
class PendingSignal:
    signo: int
    siginfo: bytes  # 128 bytes, as the handler will see it
    fault_address: int = 0
    # tgkill's thread (0: sent to the process, any thread not blocking it may take it)
    thread: int = 0
    # for a signal sent to the process: the thread chosen to take it (0: not chosen yet),
    # as Linux's complete_signal picks one (qemuser.user.threads: Scheduler.route_signals)
    target: int = 0

    def for_thread(self, tid: int) -> bool:
        """Whether thread `tid` may take it (with one guest thread, every signal is its)."""
        return self.thread in (0, tid) and self.target in (0, tid)


# eq=False: compared by identity only; every start would compile the generated __eq__.
@dataclass(eq=False)
class SignalFd:
    """A guest signalfd: the pipe end that wakes its readers, and the signals it takes."""

    write_end: int
    mask: int


@dataclass
class SignalState:
    actions: dict[int, SigAction] = field(default_factory=dict)
    mask: int = 0
    pending: list[PendingSignal] = field(default_factory=list)
    alt_stack: tuple[int, int, int] = (0, SS_DISABLE, 0)  # ss_sp, ss_flags, ss_size
    # re-entrant: the Python signal handler that queues may run while this thread holds it
    lock: threading.RLock = field(default_factory=threading.RLock)
    router: Callable[[PendingSignal], bool] | None = None  # signalfd delivery
    # The guest thread whose mask `mask` is (the one on the CPU; 0 with a single thread), and
    # what to call when a signal becomes pending (the scheduler's wake-up, once there are
    # threads). Set by qemuser.user.threads.
    current_tid: int = 0
    waker: Callable[[], None] | None = None
    # POSIX timers (syscalls/timers.py) whose signal was sent and not yet taken: as in Linux,
    # their expirations meanwhile send nothing and count as the next signal's overrun. And
    # each timer's overrun as of its signal taken last: what timer_getoverrun says.
    timers_in_flight: set[int] = field(default_factory=set)
    timer_overruns: dict[int, int] = field(default_factory=dict)

    def note_taken(self, pending: PendingSignal) -> None:
        """A signal left the queue for its handler or a sigwait: a timer's is now taken."""
        info = pending.siginfo
        if len(info) >= 24 and int.from_bytes(info[8:12], "little", signed=True) == SI_TIMER:
            timer_id = int.from_bytes(info[16:20], "little", signed=True)
            self.timers_in_flight.discard(timer_id)
            self.timer_overruns[timer_id] = int.from_bytes(info[20:24], "little", signed=True)

    def action(self, signo: int) -> SigAction:
        return self.actions.get(signo) or SigAction()

    def for_thread(self, tid: int) -> list[PendingSignal]:
        """The pending signals thread `tid` may take, blocked or not."""
        with self.lock:
            return [p for p in self.pending if p.for_thread(tid)]

    def next_for(self, tid: int, mask: int) -> PendingSignal | None:
        """The signal thread `tid` (with `mask`) takes next: its own ones first, then the
        process's, lowest number first in each (Linux's dequeue_signal)."""
        candidates = [p for p in self.for_thread(tid) if not mask & bit(p.signo)]
        if not candidates:
            return None
        return min(candidates, key=lambda p: (p.thread == 0, p.signo))

    def take(self) -> PendingSignal | None:
        """The signal the running thread takes now, if any (see next_for)."""
        with self.lock:
            chosen = self.next_for(self.current_tid, self.mask)
            if chosen is not None:
                self.pending.remove(chosen)
                self.note_taken(chosen)
            return chosen

    def queue(self, pending: PendingSignal) -> None:
        if self.router is not None and self.router(pending):
            return  # taken by a signalfd
        with self.lock:
            # standard signals do not queue: one pending instance each (per thread, and
            # for the process)
            if pending.signo < 32 and any(
                p.signo == pending.signo and p.thread == pending.thread for p in self.pending
            ):
                return
            self.pending.append(pending)
        if self.waker is not None:
            self.waker()

    def pending_mask(self) -> int:
        """rt_sigpending's set: the running thread's own signals and the process's."""
        with self.lock:
            mask = 0
            for p in self.pending:
                if p.thread in (0, self.current_tid):  # whichever thread was chosen
                    mask |= bit(p.signo)
            return mask


def pack_kill_info(signo: int, code: int, pid: int, uid: int, value: int | None = None) -> bytes:
    """The siginfo of a signal a process sent: _kill, or _rt when it carries a value."""
    if value is None:
        return pack_siginfo(SiginfoKill(signo, 0, code, pid, uid))
    return pack_siginfo(SiginfoRt(signo, 0, code, pid, uid, value))


def pack_fault_info(signo: int, code: int, address: int) -> bytes:
    return pack_siginfo(SiginfoFault(signo, 0, code, address))


def signalfd_record(pending: PendingSignal) -> bytes:
    # the sender and status words read as _sigchld has them, whichever member was sent
    info = SIGINFO_CHLD.unpack(pending.siginfo)
    return SIGNALFD_SIGINFO.pack(
        ssi_signo=info.si_signo,
        ssi_errno=info.si_errno,
        ssi_code=info.si_code,
        ssi_pid=info.si_pid & 0xFFFF_FFFF,
        ssi_uid=info.si_uid,
        ssi_status=info.si_status,
        ssi_addr=pending.fault_address,
    )
