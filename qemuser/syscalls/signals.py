"""Signal system calls: sigaction, masks, sigreturn, alternate stacks, kill and friends.

The state lives in sigstate.py, delivery (frames, host signal bridge) in qemuser.user; this
module is the guest's interface to them.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import signal as host_signal
import time
from typing import TYPE_CHECKING

from qemuser.host.libc import host_syscall
from qemuser.host.sysnums import (
    HOST_SYS_PIDFD_GETFD,
    HOST_SYS_PIDFD_OPEN,
    HOST_SYS_PIDFD_SEND_SIGNAL,
    HOST_SYS_RT_SIGQUEUEINFO,
    HOST_SYS_RT_TGSIGQUEUEINFO,
)
from qemuser.syscalls.abi import sigaction as abi_sig
from qemuser.syscalls.abi.scalars import INT as C_INT
from qemuser.syscalls.abi.sigaction import SIGSET_SIZE, STACK_T, StackT
from qemuser.syscalls.abi.siginfo import SIGINFO_HEAD, SIGINFO_SIZE
from qemuser.syscalls.abi.timespec import ITIMERVAL, TIMESPEC, Itimerval
from qemuser.syscalls.argkinds import FD, INT, PTR, ULONG, ArgKind, Enum, Flags, Ret, StructIn
from qemuser.syscalls.registry import syscall
from qemuser.syscalls.signames import signal_name
from qemuser.syscalls.sigstate import (
    DEFAULT_IGNORE,
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

if TYPE_CHECKING:
    from qemuser.syscalls.context import GuestProcess

MINSIGSTKSZ = {"aarch64": 5120, "riscv64": 2048}


class SignalNumber(ArgKind):
    def decode(self, proc: GuestProcess, raw: int) -> int:
        value = raw & 0xFFFF_FFFF
        return value - (1 << 32) if value & 0x8000_0000 else value

    def format(self, proc: GuestProcess, raw: int, args: tuple[int, ...], result: int) -> str:
        return signal_name(raw & 0xFFFF_FFFF)


SIGNO = SignalNumber()


def _show_sigaction(proc: GuestProcess, addr: int) -> str:
    arch = proc.spec.name
    action = SigAction.unpack(proc.mem.read(addr, SigAction.size(arch)), arch)
    handler = {SIG_DFL: "SIG_DFL", SIG_IGN: "SIG_IGN"}.get(action.handler, f"{action.handler:#x}")
    return f"{{{handler},{action.flags:#x},mask={action.mask:#x}}}"


def _show_sigset(proc: GuestProcess, addr: int) -> str:
    mask = _read_sigset(proc, addr)
    names = [signal_name(s) for s in range(1, NSIG + 1) if mask & bit(s)]
    return "[" + " ".join(n.removeprefix("SIG") for n in names) + "]"


def _read_sigset(proc: GuestProcess, addr: int) -> int:
    return abi_sig.SIGSET.unpack(proc.mem.read(addr, SIGSET_SIZE)).sig


SIGACTION = StructIn(_show_sigaction)
SIGSET = StructIn(_show_sigset)
HOW = Enum({0: "SIG_BLOCK", 1: "SIG_UNBLOCK", 2: "SIG_SETMASK"})


def _valid(signo: int) -> bool:
    return 1 <= signo <= NSIG


@syscall("rt_sigaction", SIGNO, SIGACTION, PTR, ULONG)
def rt_sigaction(proc: GuestProcess, signo: int, act: int, oldact: int, sigsetsize: int) -> int:
    if sigsetsize != SIGSET_SIZE or not _valid(signo):
        return -errno.EINVAL
    if act and signo in (SIGKILL, SIGSTOP):
        return -errno.EINVAL
    old = proc.signals.action(signo)
    arch = proc.spec.name
    new = SigAction.unpack(proc.mem.read(act, SigAction.size(arch)), arch) if act else None
    if oldact:
        proc.mem.write(oldact, old.pack(arch))
    if new is not None:
        new.mask &= ~UNBLOCKABLE
        proc.set_action(signo, new)
        if new.handler == SIG_IGN:
            # setting SIG_IGN discards a pending instance (POSIX)
            with proc.signals.lock:
                proc.signals.pending = [p for p in proc.signals.pending if p.signo != signo]
    return 0


@syscall("rt_sigprocmask", HOW, SIGSET, PTR, ULONG)
def rt_sigprocmask(
    proc: GuestProcess, how: int, new_ptr: int, old_ptr: int, sigsetsize: int
) -> int:
    if sigsetsize != SIGSET_SIZE:
        return -errno.EINVAL
    current = proc.signals.mask
    if new_ptr:
        value = _read_sigset(proc, new_ptr)
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
        proc.mem.write(old_ptr, abi_sig.SIGSET.pack(sig=current))
    proc.set_mask(mask)
    return 0


@syscall("rt_sigpending", PTR, ULONG)
def rt_sigpending(proc: GuestProcess, set_ptr: int, sigsetsize: int) -> int:
    if sigsetsize > SIGSET_SIZE:
        return -errno.EINVAL
    pending = proc.signals.pending_mask() & proc.signals.mask
    proc.mem.write(set_ptr, abi_sig.SIGSET.pack(sig=pending)[:sigsetsize])
    return 0


@syscall("rt_sigreturn", ret=Ret.HEX)
def rt_sigreturn(proc: GuestProcess) -> int | None:
    proc.sigreturn()
    return None  # the registers are the restored context, x0/a0 included


def _interrupts(proc: GuestProcess, signo: int) -> bool:
    """Whether an unblocked pending `signo` ends a wait: not when it is ignored, explicitly or
    by default, for Linux discards such a signal without waking anyone."""
    handler = proc.signals.action(signo).handler
    return handler != SIG_IGN and not (handler == SIG_DFL and signo in DEFAULT_IGNORE)


def _wait_for_signal(
    proc: GuestProcess, deadline: float | None, wanted: int | None
) -> PendingSignal | None:
    """Sleep until a signal the process can take is pending (or the deadline passes)."""
    proc.ensure_signal_bridge()  # host signals must reach the pending queue
    sched = proc.sched
    thread = sched.running()  # on a worker, its own thread, whose mask was saved
    while True:
        mask = sched.mask_of(thread)
        with proc.signals.lock:
            candidates = proc.signals.for_thread(thread.tid)
            # a signal waited for first, wherever it sits in the queue (Linux dequeues from
            # the set before it sleeps, and again on each wake-up): the thread's own before
            # the process's, the lowest number first, each number's oldest first
            waited = [p for p in candidates if wanted is not None and wanted & bit(p.signo)]
            if waited:
                p = min(waited, key=lambda p: (p.thread == 0, p.signo))
                proc.signals.pending.remove(p)
                proc.signals.note_taken(p)
                return p
            # any other signal it would take interrupts the wait (left queued, to be
            # delivered); one that would be discarded does not wake it, as in Linux
            for p in candidates:
                if not mask & bit(p.signo) and _interrupts(proc, p.signo):
                    return p
        timeout = None if deadline is None else deadline - time.monotonic()
        if timeout is not None and timeout <= 0:
            return None
        # a short nap: the Python handler that queues a host signal runs in between
        time.sleep(0.01 if timeout is None else min(timeout, 0.01))


@syscall("rt_sigsuspend", SIGSET, ULONG, restart=False)
def rt_sigsuspend(proc: GuestProcess, mask_ptr: int, sigsetsize: int) -> int:
    if sigsetsize != SIGSET_SIZE:
        return -errno.EINVAL
    mask = _read_sigset(proc, mask_ptr) & ~UNBLOCKABLE
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


@syscall("rt_sigtimedwait", SIGSET, PTR, PTR, ULONG, blocks=True, restart=False)
def rt_sigtimedwait(
    proc: GuestProcess, set_ptr: int, info_ptr: int, timeout_ptr: int, sigsetsize: int
) -> int:
    if sigsetsize != SIGSET_SIZE:
        return -errno.EINVAL
    wanted = _read_sigset(proc, set_ptr) & ~UNBLOCKABLE
    deadline = None
    if timeout_ptr:
        sec, nsec = TIMESPEC.unpack(proc.mem.read(timeout_ptr, TIMESPEC.size))
        if sec < 0 or not 0 <= nsec < 1_000_000_000:
            return -errno.EINVAL
        deadline = time.monotonic() + sec + nsec / 1e9
    got = _wait_for_signal(proc, deadline, wanted)
    if got is None:
        return -errno.EAGAIN
    if not wanted & bit(got.signo):
        return -errno.EINTR  # another signal came: its handler runs on the way out
    if info_ptr:
        proc.mem.write(info_ptr, got.siginfo)
    return got.signo


def _show_stack(proc: GuestProcess, addr: int) -> str:
    ss_sp, ss_flags, ss_size = STACK_T.unpack(proc.mem.read(addr, STACK_T.size))
    return f"{{ss_sp={ss_sp:#x},ss_flags={ss_flags},ss_size={ss_size}}}"


@syscall("sigaltstack", StructIn(_show_stack), PTR)
def sigaltstack(proc: GuestProcess, new_ptr: int, old_ptr: int) -> int:
    ss_sp, ss_flags, ss_size = proc.signals.alt_stack
    sp = proc.uc.reg_read(proc.spec.sp)
    on_stack = not ss_flags & SS_DISABLE and ss_sp < sp <= ss_sp + ss_size
    if new_ptr:
        new_sp, new_flags, new_size = STACK_T.unpack(proc.mem.read(new_ptr, STACK_T.size))
    if old_ptr:
        shown_flags = SS_ONSTACK if on_stack else ss_flags
        proc.mem.write(old_ptr, STACK_T.pack(StackT(ss_sp, shown_flags, ss_size)))
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


def _send_to_self(proc: GuestProcess, signo: int, info: bytes, thread: int = 0) -> int:
    """Queue a signal for this process, or for one of its threads (`thread`, a tid)."""
    if signo == 0:
        return 0
    if signo in (SIGKILL, SIGSTOP):
        os.kill(os.getpid(), signo)  # nothing can catch these: the host does it to us
        return 0
    if signo >= 32 and C_INT.unpack(info[8:12]).value < 0 and _over_sigpending_limit(proc):
        # a queued real-time signal with a forged or tkill code is refused past
        # RLIMIT_SIGPENDING (Linux's __sigqueue_alloc; kill()'s SI_USER is always queued)
        return -errno.EAGAIN
    # with a single thread, its signals and the process's are the same queue
    proc.signals.queue(PendingSignal(signo, info, thread=thread if proc.sched.multi else 0))
    return 0


def _over_sigpending_limit(proc: GuestProcess) -> bool:
    """Whether one more queued signal passes RLIMIT_SIGPENDING. Linux counts the user's
    signals in every process; this counts the ones this process holds."""
    limit = resource.getrlimit(resource.RLIMIT_SIGPENDING)[0]
    if limit == resource.RLIM_INFINITY:
        return False
    with proc.signals.lock:
        return len(proc.signals.pending) + 1 > limit


@syscall("kill", INT, SIGNO)
def kill(proc: GuestProcess, pid: int, signo: int) -> int:
    if not 0 <= signo <= NSIG:
        return -errno.EINVAL
    if pid == os.getpid():
        return _send_to_self(proc, signo, pack_kill_info(signo, SI_USER, os.getpid(), os.getuid()))
    # Other processes, or a group that may include us: the host delivers it, and our own
    # host disposition mirrors the guest's, so we get it as the guest should.
    os.kill(pid, signo)
    return 0


@syscall("tgkill", INT, INT, SIGNO)
def tgkill(proc: GuestProcess, tgid: int, tid: int, signo: int) -> int:
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
def tkill(proc: GuestProcess, tid: int, signo: int) -> int:
    return tgkill(proc, os.getpid() if tid in proc.sched.threads else tid, tid, signo)


@syscall("rt_sigqueueinfo", INT, SIGNO, PTR)
def rt_sigqueueinfo(proc: GuestProcess, pid: int, signo: int, info_ptr: int) -> int:
    if not 1 <= signo <= NSIG:
        return -errno.EINVAL
    info = proc.mem.read(info_ptr, SIGINFO_SIZE)
    code = SIGINFO_HEAD.unpack(info).si_code
    if code >= 0 or code == SI_TKILL:
        return -errno.EPERM  # only negative (user) codes may be forged, as Linux
    # the guest's siginfo as given, but for si_signo (its first int): the signal sent
    info = C_INT.pack(value=signo) + info[C_INT.size :]
    if pid == os.getpid():
        return _send_to_self(proc, signo, info)
    # another process: the host's own call, value included. Never kill(): its pid -1 is every
    # process there is, 0 the caller's group, where rt_sigqueueinfo says ESRCH (rt_sigqueueinfo02
    # under a kill() here took down every process of the host's user).
    return host_syscall(HOST_SYS_RT_SIGQUEUEINFO, pid, signo, ctypes.create_string_buffer(info))


@syscall("rt_tgsigqueueinfo", INT, INT, SIGNO, PTR)
def rt_tgsigqueueinfo(proc: GuestProcess, tgid: int, tid: int, signo: int, info_ptr: int) -> int:
    if tgid != os.getpid():
        if not 1 <= signo <= NSIG:
            return -errno.EINVAL
        info = proc.mem.read(info_ptr, SIGINFO_SIZE)
        info = C_INT.pack(value=signo) + info[C_INT.size :]
        return host_syscall(
            HOST_SYS_RT_TGSIGQUEUEINFO, tgid, tid, signo, ctypes.create_string_buffer(info)
        )
    return rt_sigqueueinfo(proc, tgid, signo, info_ptr)


# ---- process file descriptors --------------------------------------------------------------
# A pidfd is the host's: the guest's pids are the host's. A signal sent through one to this
# very process goes through our own queue, as kill() to ourselves does.
PIDFD_FLAGS = Flags({0o4000: "PIDFD_NONBLOCK", 0o200: "PIDFD_THREAD"})  # O_NONBLOCK, O_EXCL
PIDFD_SIGNAL_FLAGS = Flags(
    {1: "PIDFD_SIGNAL_THREAD", 2: "PIDFD_SIGNAL_THREAD_GROUP", 4: "PIDFD_SIGNAL_PROCESS_GROUP"}
)


def _pidfd_target(fd: int) -> int | None:
    """The pid a host pidfd names (its fdinfo's Pid line; -1 once it has exited), or None."""
    try:
        with open(f"/proc/self/fdinfo/{fd}", "rb") as info:
            for line in info:
                if line.startswith(b"Pid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


@syscall("pidfd_open", INT, PIDFD_FLAGS)
def pidfd_open(proc: GuestProcess, pid: int, flags: int) -> int:
    return host_syscall(HOST_SYS_PIDFD_OPEN, pid, flags)


@syscall("pidfd_send_signal", FD, SIGNO, PTR, PIDFD_SIGNAL_FLAGS)
def pidfd_send_signal(proc: GuestProcess, pidfd: int, signo: int, info_ptr: int, flags: int) -> int:
    info = None
    if info_ptr:
        info = proc.mem.read(info_ptr, SIGINFO_SIZE)
    if _pidfd_target(pidfd) == os.getpid() and signo != 0:
        if flags & ~7 or not 1 <= signo <= NSIG:
            return -errno.EINVAL
        if info is None:
            info = pack_kill_info(signo, SI_USER, os.getpid(), os.getuid())
        elif SIGINFO_HEAD.unpack(info).si_signo != signo:
            return -errno.EINVAL
        # to itself a process may send any siginfo (Linux refuses forged codes to others)
        return _send_to_self(proc, signo, info)
    # another process (the host checks it all: the fd, the signal, the flags), or signal 0
    host_info = None if info is None else ctypes.create_string_buffer(info, SIGINFO_SIZE)
    return host_syscall(HOST_SYS_PIDFD_SEND_SIGNAL, pidfd, signo, host_info, flags)


@syscall("pidfd_getfd", FD, INT, INT)
def pidfd_getfd(proc: GuestProcess, pidfd: int, target_fd: int, flags: int) -> int:
    if target_fd in proc.host_fd_reserved and _pidfd_target(pidfd) == os.getpid():
        return -errno.EBADF  # one of the emulator's own: no fd of this guest
    return host_syscall(HOST_SYS_PIDFD_GETFD, pidfd, target_fd, flags)


# ---- interval timers -------------------------------------------------------------------------
# struct itimerval (abi/timespec.py: __kernel_old_itimerval): it_interval, it_value.
ITIMERS = {0: host_signal.ITIMER_REAL, 1: host_signal.ITIMER_VIRTUAL, 2: host_signal.ITIMER_PROF}
ITIMER_WHICH = Enum({0: "ITIMER_REAL", 1: "ITIMER_VIRTUAL", 2: "ITIMER_PROF"})


def _pack_itimerval(interval: float, value: float) -> bytes:
    def timeval(seconds: float) -> tuple[int, int]:
        whole = int(seconds)
        return whole, int(round((seconds - whole) * 1_000_000))

    return ITIMERVAL.pack(Itimerval(*timeval(interval), *timeval(value)))


@syscall("setitimer", ITIMER_WHICH, PTR, PTR)
def setitimer(proc: GuestProcess, which: int, new_ptr: int, old_ptr: int) -> int:
    # The host's timers deliver the host's signal, which reaches the guest through the bridge
    # (or, at SIG_DFL, ends the process as Linux would).
    if which not in ITIMERS:
        return -errno.EINVAL
    if new_ptr:
        i_sec, i_usec, v_sec, v_usec = ITIMERVAL.unpack(proc.mem.read(new_ptr, ITIMERVAL.size))
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
def getitimer(proc: GuestProcess, which: int, value_ptr: int) -> int:
    if which not in ITIMERS:
        return -errno.EINVAL
    value, interval = host_signal.getitimer(ITIMERS[which])
    proc.mem.write(value_ptr, _pack_itimerval(interval, value))
    return 0
