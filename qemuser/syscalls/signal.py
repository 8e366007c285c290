"""Signal system calls: sigaction, masks, sigreturn, alternate stacks, kill and friends.

The state and delivery (frames, host signal bridge) live in sigstate.py and Process; this
module is the guest's interface to them.
"""

from __future__ import annotations

import errno
import os
import signal as host_signal
import struct
import time

from qemuser.syscalls.process import Process
from qemuser.syscalls.registry import (
    INT,
    PTR,
    ULONG,
    ArgKind,
    Enum,
    Ret,
    StructIn,
    signal_name,
    syscall,
)
from qemuser.syscalls.sigstate import (
    NSIG,
    SI_TKILL,
    SI_USER,
    SIG_DFL,
    SIG_IGN,
    SIGKILL,
    SIGSTOP,
    SS_AUTODISARM,
    SS_DISABLE,
    SS_ONSTACK,
    UNBLOCKABLE,
    PendingSignal,
    SigAction,
    bit,
    pack_kill_info,
)

SIGSET_SIZE = 8  # the kernel's sigset_t on 64-bit: 64 signals
MINSIGSTKSZ = {"aarch64": 5120, "riscv64": 2048}


class SignalNumber(ArgKind):
    def decode(self, proc: Process, raw: int) -> int:
        value = raw & 0xFFFF_FFFF
        return value - (1 << 32) if value & 0x8000_0000 else value

    def format(self, proc: Process, raw: int, args: tuple[int, ...], result: int) -> str:
        return signal_name(raw & 0xFFFF_FFFF)


SIGNO = SignalNumber()


def _show_sigaction(proc: Process, addr: int) -> str:
    action = SigAction.unpack(proc.mem.read(addr, SigAction.LAYOUT.size))
    handler = {SIG_DFL: "SIG_DFL", SIG_IGN: "SIG_IGN"}.get(action.handler, f"{action.handler:#x}")
    return f"{{{handler},{action.flags:#x},mask={action.mask:#x}}}"


def _show_sigset(proc: Process, addr: int) -> str:
    mask = struct.unpack("<Q", proc.mem.read(addr, 8))[0]
    names = [signal_name(s) for s in range(1, NSIG + 1) if mask & bit(s)]
    return "[" + " ".join(n.removeprefix("SIG") for n in names) + "]"


SIGACTION = StructIn(_show_sigaction)
SIGSET = StructIn(_show_sigset)
HOW = Enum({0: "SIG_BLOCK", 1: "SIG_UNBLOCK", 2: "SIG_SETMASK"})


def _valid(signo: int) -> bool:
    return 1 <= signo <= NSIG


@syscall("rt_sigaction", SIGNO, SIGACTION, PTR, ULONG)
def rt_sigaction(proc: Process, signo: int, act: int, oldact: int, sigsetsize: int) -> int:
    if sigsetsize != SIGSET_SIZE or not _valid(signo):
        return -errno.EINVAL
    if act and signo in (SIGKILL, SIGSTOP):
        return -errno.EINVAL
    old = proc.signals.action(signo)
    new = SigAction.unpack(proc.mem.read(act, SigAction.LAYOUT.size)) if act else None
    if oldact:
        proc.mem.write(oldact, old.pack())
    if new is not None:
        new.mask &= ~UNBLOCKABLE
        proc.set_action(signo, new)
        if new.handler == SIG_IGN:
            # setting SIG_IGN discards a pending instance (POSIX)
            with proc.signals.lock:
                proc.signals.pending = [p for p in proc.signals.pending if p.signo != signo]
    return 0


@syscall("rt_sigprocmask", HOW, SIGSET, PTR, ULONG)
def rt_sigprocmask(proc: Process, how: int, new_ptr: int, old_ptr: int, sigsetsize: int) -> int:
    if sigsetsize != SIGSET_SIZE:
        return -errno.EINVAL
    current = proc.signals.mask
    if new_ptr:
        value = struct.unpack("<Q", proc.mem.read(new_ptr, 8))[0]
        if how == 0:
            mask = current | value
        elif how == 1:
            mask = current & ~value
        elif how == 2:
            mask = value
        else:
            return -errno.EINVAL
    else:
        mask = current
    if old_ptr:
        proc.mem.write(old_ptr, struct.pack("<Q", current))
    proc.set_mask(mask)
    return 0


@syscall("rt_sigpending", PTR, ULONG)
def rt_sigpending(proc: Process, set_ptr: int, sigsetsize: int) -> int:
    if sigsetsize > SIGSET_SIZE:
        return -errno.EINVAL
    pending = proc.signals.pending_mask() & proc.signals.mask
    proc.mem.write(set_ptr, struct.pack("<Q", pending)[:sigsetsize])
    return 0


@syscall("rt_sigreturn", ret=Ret.HEX)
def rt_sigreturn(proc: Process) -> int | None:
    proc.sigreturn()
    return None  # the registers are the restored context, x0/a0 included


def _wait_for_signal(
    proc: Process, deadline: float | None, wanted: int | None
) -> PendingSignal | None:
    """Sleep until a signal the process can take is pending (or the deadline passes)."""
    proc.ensure_signal_bridge()  # host signals must reach the pending queue
    sched = proc.sched
    thread = sched.running()  # on a worker, its own thread, whose mask was saved
    while True:
        mask = sched.mask_of(thread)
        with proc.signals.lock:
            for p in proc.signals.for_thread(thread.tid):
                if wanted is not None and wanted & bit(p.signo):
                    proc.signals.pending.remove(p)
                    return p
                if wanted is None and not mask & bit(p.signo):
                    return p
        timeout = None if deadline is None else deadline - time.monotonic()
        if timeout is not None and timeout <= 0:
            return None
        # a short nap: the Python handler that queues a host signal runs in between
        time.sleep(0.01 if timeout is None else min(timeout, 0.01))


@syscall("rt_sigsuspend", SIGSET, ULONG)
def rt_sigsuspend(proc: Process, mask_ptr: int, sigsetsize: int) -> int:
    if sigsetsize != SIGSET_SIZE:
        return -errno.EINVAL
    mask = struct.unpack("<Q", proc.mem.read(mask_ptr, 8))[0] & ~UNBLOCKABLE
    old = proc.signals.mask
    proc.signals.mask = mask
    # the handler runs with the temporary mask; sigreturn then restores the old one
    proc.restore_mask_after_handler = old
    sched = proc.sched
    if sched.multi and not sched.on_worker():
        # the other threads run meanwhile: the scheduler wakes this one for a signal
        proc.ensure_signal_bridge()  # host signals must reach the pending queue
        sched.suspend()
        proc.uc.emu_stop()
        return None  # EINTR is written when the thread runs again
    _wait_for_signal(proc, None, None)
    return -errno.EINTR


@syscall("rt_sigtimedwait", SIGSET, PTR, PTR, ULONG)
def rt_sigtimedwait(
    proc: Process, set_ptr: int, info_ptr: int, timeout_ptr: int, sigsetsize: int
) -> int:
    if sigsetsize != SIGSET_SIZE:
        return -errno.EINVAL
    wanted = struct.unpack("<Q", proc.mem.read(set_ptr, 8))[0] & ~UNBLOCKABLE
    deadline = None
    if timeout_ptr:
        sec, nsec = struct.unpack("<qq", proc.mem.read(timeout_ptr, 16))
        if sec < 0 or not 0 <= nsec < 1_000_000_000:
            return -errno.EINVAL
        deadline = time.monotonic() + sec + nsec / 1e9
    got = _wait_for_signal(proc, deadline, wanted)
    if got is None:
        return -errno.EAGAIN
    if info_ptr:
        proc.mem.write(info_ptr, got.siginfo)
    return got.signo


def _show_stack(proc: Process, addr: int) -> str:
    ss_sp, ss_flags, _pad, ss_size = struct.unpack("<QiiQ", proc.mem.read(addr, 24))
    return f"{{ss_sp={ss_sp:#x},ss_flags={ss_flags},ss_size={ss_size}}}"


@syscall("sigaltstack", StructIn(_show_stack), PTR)
def sigaltstack(proc: Process, new_ptr: int, old_ptr: int) -> int:
    # stack_t (include/uapi/asm-generic/signal.h): void *ss_sp; int ss_flags; size_t ss_size
    ss_sp, ss_flags, ss_size = proc.signals.alt_stack
    sp = proc.uc.reg_read(proc.spec.sp)
    on_stack = not ss_flags & SS_DISABLE and ss_sp < sp <= ss_sp + ss_size
    if new_ptr:
        new_sp, new_flags, _pad, new_size = struct.unpack("<QiiQ", proc.mem.read(new_ptr, 24))
    if old_ptr:
        shown_flags = SS_ONSTACK if on_stack else ss_flags
        proc.mem.write(old_ptr, struct.pack("<QiiQ", ss_sp, shown_flags, 0, ss_size))
    if new_ptr:
        if on_stack:
            return -errno.EPERM
        mode = new_flags & ~SS_AUTODISARM
        if mode not in (0, SS_DISABLE, SS_ONSTACK):
            return -errno.EINVAL
        if mode == SS_DISABLE:
            proc.signals.alt_stack = (0, SS_DISABLE, 0)
        else:
            if new_size < MINSIGSTKSZ[proc.spec.name]:
                return -errno.ENOMEM
            proc.signals.alt_stack = (new_sp, new_flags & SS_AUTODISARM, new_size)
    return 0


# ---- sending ---------------------------------------------------------------------------------


def _send_to_self(proc: Process, signo: int, info: bytes, thread: int = 0) -> int:
    """Queue a signal for this process, or for one of its threads (`thread`, a tid)."""
    if signo == 0:
        return 0
    if signo in (SIGKILL, SIGSTOP):
        os.kill(os.getpid(), signo)  # nothing can catch these: the host does it to us
        return 0
    # with a single thread, its signals and the process's are the same queue
    proc.signals.queue(PendingSignal(signo, info, thread=thread if proc.sched.multi else 0))
    return 0


@syscall("kill", INT, SIGNO)
def kill(proc: Process, pid: int, signo: int) -> int:
    if not 0 <= signo <= NSIG:
        return -errno.EINVAL
    if pid == os.getpid():
        return _send_to_self(proc, signo, pack_kill_info(signo, SI_USER, os.getpid(), os.getuid()))
    # Other processes, or a group that may include us: the host delivers it, and our own
    # host disposition mirrors the guest's, so we get it as the guest should.
    os.kill(pid, signo)
    return 0


@syscall("tgkill", INT, INT, SIGNO)
def tgkill(proc: Process, tgid: int, tid: int, signo: int) -> int:
    if not 0 <= signo <= NSIG or tgid <= 0 or tid <= 0:
        return -errno.EINVAL
    if tgid == os.getpid():
        thread = proc.sched.threads.get(tid)
        if thread is None or thread.state == "exited":
            return -errno.ESRCH
        info = pack_kill_info(signo, SI_TKILL, os.getpid(), os.getuid())
        return _send_to_self(proc, signo, info, thread=tid)
    os.kill(tid, signo) if tid == tgid else os.kill(tgid, signo)
    return 0


@syscall("tkill", INT, SIGNO)
def tkill(proc: Process, tid: int, signo: int) -> int:
    return tgkill(proc, os.getpid() if tid in proc.sched.threads else tid, tid, signo)


@syscall("rt_sigqueueinfo", INT, SIGNO, PTR)
def rt_sigqueueinfo(proc: Process, pid: int, signo: int, info_ptr: int) -> int:
    if not 1 <= signo <= NSIG:
        return -errno.EINVAL
    info = bytearray(proc.mem.read(info_ptr, 128))
    code = struct.unpack_from("<i", info, 8)[0]
    if code >= 0 or code == SI_TKILL:
        return -errno.EPERM  # only negative (user) codes may be forged, as Linux
    struct.pack_into("<i", info, 0, signo)
    if pid == os.getpid():
        return _send_to_self(proc, signo, bytes(info))
    # Python has no sigqueue(): another process gets the signal without its value.
    os.kill(pid, signo)
    return 0


@syscall("rt_tgsigqueueinfo", INT, INT, SIGNO, PTR)
def rt_tgsigqueueinfo(proc: Process, tgid: int, tid: int, signo: int, info_ptr: int) -> int:
    return rt_sigqueueinfo(proc, tgid, signo, info_ptr)


# ---- interval timers -------------------------------------------------------------------------
# struct itimerval (include/uapi/linux/time.h): two struct timeval {long tv_sec; long tv_usec}.
ITIMERS = {0: host_signal.ITIMER_REAL, 1: host_signal.ITIMER_VIRTUAL, 2: host_signal.ITIMER_PROF}
ITIMER_WHICH = Enum({0: "ITIMER_REAL", 1: "ITIMER_VIRTUAL", 2: "ITIMER_PROF"})


def _pack_itimerval(interval: float, value: float) -> bytes:
    def timeval(seconds: float) -> tuple[int, int]:
        whole = int(seconds)
        return whole, int(round((seconds - whole) * 1_000_000))

    return struct.pack("<qqqq", *timeval(interval), *timeval(value))


@syscall("setitimer", ITIMER_WHICH, PTR, PTR)
def setitimer(proc: Process, which: int, new_ptr: int, old_ptr: int) -> int:
    # The host's timers deliver the host's signal, which reaches the guest through the bridge
    # (or, at SIG_DFL, ends the process as Linux would).
    if which not in ITIMERS:
        return -errno.EINVAL
    if new_ptr:
        i_sec, i_usec, v_sec, v_usec = struct.unpack("<qqqq", proc.mem.read(new_ptr, 32))
        if not (0 <= i_usec < 1_000_000 and 0 <= v_usec < 1_000_000):
            return -errno.EINVAL
        old_value, old_interval = host_signal.setitimer(
            ITIMERS[which], v_sec + v_usec / 1e6, i_sec + i_usec / 1e6
        )
        timer_signal = (host_signal.SIGALRM, host_signal.SIGVTALRM, host_signal.SIGPROF)[which]
        if v_sec or v_usec:
            proc.kernel_timer_signals.add(timer_signal)
        else:
            proc.kernel_timer_signals.discard(timer_signal)
    else:
        old_value, old_interval = host_signal.getitimer(ITIMERS[which])
    if old_ptr:
        proc.mem.write(old_ptr, _pack_itimerval(old_interval, old_value))
    return 0


@syscall("getitimer", ITIMER_WHICH, PTR)
def getitimer(proc: Process, which: int, value_ptr: int) -> int:
    if which not in ITIMERS:
        return -errno.EINVAL
    value, interval = host_signal.getitimer(ITIMERS[which])
    proc.mem.write(value_ptr, _pack_itimerval(interval, value))
    return 0
