"""A guest process's signals: dispositions, mask, pending queue, alternate stack, delivery.

How host signals reach the guest: while the guest handles or blocks a signal, the host
disposition is a Python handler that queues it. Python runs that handler only between
bytecodes, so while such a handler exists the engine is stopped every few milliseconds
(preempt.py) and the run loop delivers what is pending before it starts the engine again.
A host signal that arrives during a blocking host call makes the kernel end it with EINTR
(Python's handlers have no SA_RESTART), which becomes the guest's EINTR or a restart under
SA_RESTART (hostio.py). While the guest leaves a signal at SIG_DFL or SIG_IGN, the host
disposition is the same, so the kernel itself does what it would do to a native program (and
SIG_IGN survives execve).
"""

from __future__ import annotations

import signal
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qemuser.syscalls.process import Process

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
# Signals the emulator itself must keep: faults of the host process are bugs of ours, and
# SIGKILL/SIGSTOP cannot be caught.
HOST_RESERVED = frozenset(
    {
        signal.SIGSEGV,
        signal.SIGBUS,
        signal.SIGILL,
        signal.SIGFPE,
        signal.SIGKILL,
        signal.SIGSTOP,
        signal.SIGRTMAX,  # INTERRUPT_SIGNAL below
    }
)

# The host signal that ends the blocking host call of one guest thread's worker (threads.py),
# sent with pthread_kill to that worker only. Reserved: the guest's own SIGRTMAX still works
# between its threads (kill/tgkill queue it here), but one sent from outside is not seen.
INTERRUPT_SIGNAL = signal.SIGRTMAX


def keep_signals_for_the_main_thread() -> None:
    """Called first in every host thread we start: the kernel then delivers process-directed
    signals to the main thread, the one that runs the guest (and, with a single guest thread,
    its blocking calls, which they then interrupt as on Linux). A guest thread's worker then
    unblocks INTERRUPT_SIGNAL alone, by which the scheduler ends its calls (threads.py)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())


def bit(signo: int) -> int:
    return 1 << (signo - 1)


@dataclass
class SigAction:
    """struct sigaction as the asm-generic kernel ABI has it (include/uapi/asm-generic/
    signal.h, with SA_RESTORER): handler, flags, restorer, mask."""

    handler: int = SIG_DFL
    flags: int = 0
    restorer: int = 0
    mask: int = 0

    LAYOUT = struct.Struct("<QQQQ")  # sa_handler, sa_flags, sa_restorer, sa_mask

    def pack(self) -> bytes:
        return self.LAYOUT.pack(self.handler, self.flags, self.restorer, self.mask)

    @classmethod
    def unpack(cls, data: bytes) -> SigAction:
        handler, flags, restorer, mask = cls.LAYOUT.unpack(data[: cls.LAYOUT.size])
        return cls(handler, flags & 0xFFFF_FFFF, restorer, mask)


@dataclass
class PendingSignal:
    signo: int
    siginfo: bytes  # 128 bytes, as the handler will see it
    fault_address: int = 0
    # tgkill's thread (0: sent to the process, any thread not blocking it may take it)
    thread: int = 0
    # for a signal sent to the process: the thread chosen to take it (0: not chosen yet),
    # as Linux's complete_signal picks one (threads.py: Scheduler.route_signals)
    target: int = 0

    def for_thread(self, tid: int) -> bool:
        """Whether thread `tid` may take it (with one guest thread, every signal is its)."""
        return self.thread in (0, tid) and self.target in (0, tid)


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
    # threads). Set by threads.py.
    current_tid: int = 0
    waker: Callable[[], None] | None = None

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


class HostSignalBridge:
    """Routes host signals the guest handles into the guest's pending queue."""

    def __init__(self, proc: Process) -> None:
        self.proc = proc
        self._overrides: dict[int, bytes] = {}  # siginfo for signals we raise ourselves
        self._overrides_lock = threading.RLock()

    def send_to_self(self, signo: int, siginfo: bytes) -> None:
        """Raise `signo` in this process as a host signal whose guest siginfo is `siginfo`."""
        with self._overrides_lock:
            self._overrides[signo] = siginfo
        signal.pthread_kill(threading.main_thread().ident or 0, signo)

    def on_host_signal(self, signo: int, _frame: object) -> None:
        with self._overrides_lock:
            info = self._overrides.pop(signo, None)
        if info is None:
            # Python does not tell who sent it; the kernel's own interval timers send as
            # SI_KERNEL, anything else we take for a kill() from another process
            code = SI_KERNEL if signo in self.proc.kernel_timer_signals else SI_USER
            info = pack_kill_info(signo, code, 0, 0)
        self.proc.signals.queue(PendingSignal(signo, info))


def pack_kill_info(signo: int, code: int, pid: int, uid: int, value: int | None = None) -> bytes:
    from qemuser.syscalls.abi.sigframe import pack_siginfo

    fields = struct.pack("<iI", pid, uid)
    if value is not None:
        fields += struct.pack("<Q", value)
    return pack_siginfo(signo, code, fields)


def pack_fault_info(signo: int, code: int, address: int) -> bytes:
    from qemuser.syscalls.abi.sigframe import pack_siginfo

    return pack_siginfo(signo, code, struct.pack("<Q", address))


# struct signalfd_siginfo (include/uapi/linux/signalfd.h): 128 bytes.
SIGNALFD_SIGINFO = struct.Struct("<IiiIIiIIIIiiQQQQH")


def signalfd_record(pending: PendingSignal) -> bytes:
    signo, errno_value, code = struct.unpack_from("<iii", pending.siginfo, 0)
    pid, uid, status = struct.unpack_from("<iIi", pending.siginfo, 16)
    record = SIGNALFD_SIGINFO.pack(
        signo,
        errno_value,
        code,
        pid & 0xFFFF_FFFF,
        uid,
        0,
        0,
        0,
        0,
        0,
        status,
        0,
        0,
        0,
        0,
        pending.fault_address,
        0,
    )
    return record + bytes(128 - len(record))
