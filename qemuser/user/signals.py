"""Signal delivery in the user-mode runtime: dispositions mirrored on the host, signal frames
pushed and popped (the frame layouts are qemuser.syscalls.abi's), faults forced on the guest,
and the bridge that routes host signals into the guest's pending queue.

`SignalDelivery` is a part of qemuser.user.process.Process (a mixin: it uses the process's
state through `self`); the handlers reach it through GuestProcess's set_action, set_mask,
add_signalfd, ensure_signal_bridge and sigreturn.
"""

from __future__ import annotations

import os
import signal
import threading
from types import ModuleType
from typing import TYPE_CHECKING

from qemuser.host import sigcapture
from qemuser.host.signals import HOST_RESERVED
from qemuser.loader.memory import GuestFault
from qemuser.syscalls.abi.sigaction import StackT
from qemuser.syscalls.sigstate import (
    DEFAULT_CORE,
    DEFAULT_IGNORE,
    DEFAULT_STOP,
    SA_NOCLDSTOP,
    SA_NODEFER,
    SA_ONSTACK,
    SA_RESETHAND,
    SA_RESTORER,
    SI_KERNEL,
    SI_TKILL,
    SI_USER,
    SIG_DFL,
    SIG_IGN,
    SS_AUTODISARM,
    SS_DISABLE,
    SS_ONSTACK,
    UNBLOCKABLE,
    PendingSignal,
    SigAction,
    SignalFd,
    bit,
    pack_fault_info,
    pack_kill_info,
)
from qemuser.user.runtime import FatalSignal

if TYPE_CHECKING:
    from qemuser.user.runtime import RuntimeProcess


# host signals that are the emulator's own faults as well as signals for the guest
FAULT_SIGNALS = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE})


def _strace() -> ModuleType:
    """qemuser.syscalls.strace, imported with the first line -strace prints: a run without
    -strace never needs it (nor its start-up cost)."""
    from qemuser.syscalls import strace

    return strace


class SignalDelivery:
    """The signal half of a Process (see the module's doc)."""

    def set_action(self, signo: int, action: SigAction) -> None:
        self.signals.actions[signo] = action
        self.sync_host_disposition(signo)

    def sync_host_disposition(self, signo: int) -> None:
        """The host's disposition of `signo`, from the guest's: ignored stays ignored (and so
        survives a native execve), a signal the guest handles, blocks or reads from a
        signalfd is caught and queued, and a default one is left to the host kernel, which
        then does to us what Linux would do to the guest."""
        action = self.signals.action(signo)
        if signo in FAULT_SIGNALS:
            # also the emulator's own faults: caught only when the guest handles or ignores
            # them, through the guarded entry, which lets a fault of the emulator's kill it
            # as before and sends a signal some process sent on to the guest (pause01,
            # kill12); at SIG_DFL the host's default does to us what Linux does to it
            try:
                if action.handler == SIG_DFL:
                    signal.signal(signo, signal.SIG_DFL)
                else:
                    bridge = self.ensure_signal_bridge()
                    sigcapture.handle(signo, bridge.on_host_signal, guarded=True)
            except (OSError, ValueError):
                pass
            return
        if signo in HOST_RESERVED:
            return
        caught = (
            action.handler not in (SIG_DFL, SIG_IGN)
            or (
                action.handler == SIG_DFL
                and signo not in DEFAULT_IGNORE
                and (
                    self.signals.mask & bit(signo)
                    or any(sfd.mask & bit(signo) for sfd in self.signalfds.values())
                )
            )
            # blocked, an ignored signal is still queued (Linux's sig_ignored() is false for
            # it), for sigwaitinfo to take; unblocked, delivery then drops it
            or (action.handler == SIG_IGN and bool(self.signals.mask & bit(signo)))
        )
        try:
            if caught:
                bridge = self.ensure_signal_bridge()
                # with the sender's siginfo, which Python's own handler drops
                sigcapture.handle(signo, bridge.on_host_signal)
            elif action.handler == SIG_IGN:
                signal.signal(signo, signal.SIG_IGN)
            else:
                signal.signal(signo, signal.SIG_DFL)
        except (OSError, ValueError):
            pass

    def set_mask(self, mask: int) -> None:
        """The calling thread's signal mask (SIGKILL and SIGSTOP cannot be blocked)."""
        old = self.signals.mask
        self.signals.mask = mask & ~UNBLOCKABLE
        for signo in range(1, 65):
            if (old ^ self.signals.mask) & bit(signo):
                self.sync_host_disposition(signo)

    def add_signalfd(self, read_end: int, write_end: int, mask: int) -> None:
        self.signalfds[read_end] = SignalFd(write_end, mask)
        for signo in range(1, 65):
            if mask & bit(signo):
                self.sync_host_disposition(signo)

    def _route_to_signalfd(self, pending: PendingSignal) -> bool:
        from qemuser.syscalls.sigstate import signalfd_record

        if not self.signals.mask & bit(pending.signo):
            return False
        for read_end, sfd in list(self.signalfds.items()):
            if sfd.mask & bit(pending.signo):
                try:
                    os.fstat(read_end)
                    os.write(sfd.write_end, signalfd_record(pending))
                except OSError:
                    self.signalfds.pop(read_end, None)
                    continue
                return True
        return False

    def ensure_signal_bridge(self) -> HostSignalBridge:
        if self.signal_bridge is None:
            self.signal_bridge = HostSignalBridge(self)
        return self.signal_bridge

    def force_signal(self, fatal: FatalSignal) -> None:
        """A synchronous fault: delivered to the handler, else fatal (Linux's force_sig)."""
        code = fatal.code
        info = pack_fault_info(fatal.signo, code, fatal.address)
        action = self.signals.action(fatal.signo)
        if self.signals.mask & bit(fatal.signo) or action.handler in (SIG_DFL, SIG_IGN):
            if self.config.strace:
                self.log_line(_strace().format_taken_signal(info))
            self.die(fatal)
            return
        self.push_signal_frame(PendingSignal(fatal.signo, info, fatal.address), action)

    def deliver_signals(self) -> None:
        while self.exit.status is None and self.exit.signal is None:
            pending = self.signals.take()
            if pending is None:
                return
            if self.debugger is not None:  # GDB sees the signal first and may drop it
                pending = self.debugger.on_delivery(self, pending)
                if pending is None:
                    continue
            action = self.signals.action(pending.signo)
            if action.handler == SIG_IGN:
                continue
            if action.handler == SIG_DFL:
                if self.config.strace and pending.signo not in DEFAULT_IGNORE:
                    self.log_line(_strace().format_taken_signal(pending.siginfo))
                self.default_action(pending.signo)
                continue
            self.push_signal_frame(pending, action)

    def default_action(self, signo: int) -> None:
        if signo in DEFAULT_IGNORE:
            return
        if signo in DEFAULT_STOP:
            os.kill(os.getpid(), signal.SIGSTOP)
            return
        self.exit.signal = signo
        self.exit.core = signo in DEFAULT_CORE

    def _on_alt_stack(self, sp: int) -> bool:
        ss_sp, ss_flags, ss_size = self.signals.alt_stack
        return not ss_flags & SS_DISABLE and ss_sp < sp <= ss_sp + ss_size

    def push_signal_frame(self, pending: PendingSignal, action: SigAction) -> None:
        from qemuser.syscalls.abi.sigframe import FRAMES

        if self.config.strace:
            self.log_line(_strace().format_taken_signal(pending.siginfo))
        frames = FRAMES[self.spec.name]
        sp = self.uc.reg_read(self.spec.sp)
        ss_sp, ss_flags, ss_size = self.signals.alt_stack
        on_alt = self._on_alt_stack(sp)
        saved_stack = StackT(ss_sp, SS_ONSTACK if on_alt else (ss_flags & SS_DISABLE), ss_size)
        if action.flags & SA_ONSTACK and not ss_flags & SS_DISABLE and not on_alt:
            sp = ss_sp + ss_size
            if ss_flags & SS_AUTODISARM:
                self.signals.alt_stack = (0, SS_DISABLE, 0)
        saved_mask = self.signals.mask
        if self.restore_mask_after_handler is not None:
            saved_mask, self.restore_mask_after_handler = self.restore_mask_after_handler, None
        if action.flags & SA_RESTORER and action.restorer:
            return_address = action.restorer
        else:
            return_address = self.ensure_sigreturn_trampoline()
        try:
            frames.push(
                self.uc,
                self.mem,
                sp,
                action.handler,
                return_address,
                pending.signo,
                pending.siginfo,
                saved_mask,
                saved_stack,
                pending.fault_address,
            )
        except GuestFault:
            # no room for the frame: Linux kills the process with SIGSEGV
            self.die(FatalSignal(signal.SIGSEGV, 0, sp))
            return
        new_mask = self.signals.mask | action.mask
        if not action.flags & SA_NODEFER:
            new_mask |= bit(pending.signo)
        self.signals.mask = new_mask & ~UNBLOCKABLE
        if action.flags & SA_RESETHAND:
            # only the handler goes back to SIG_DFL: sigaction() then still shows the flags
            # and the mask (Linux's get_signal(); LTP's sigaction01)
            reset = SigAction(SIG_DFL, action.flags, action.restorer, action.mask)
            self.set_action(pending.signo, reset)

    def sigreturn(self) -> None:
        """rt_sigreturn: the context the frame at sp holds becomes the CPU's again."""
        from qemuser.syscalls.abi.sigframe import FRAMES

        sp = self.uc.reg_read(self.spec.sp)
        mask, stack = FRAMES[self.spec.name].pop(self.uc, self.mem, sp)
        self.signals.mask = mask & ~UNBLOCKABLE
        ss_sp, ss_flags, ss_size = stack
        if not ss_flags & SS_ONSTACK:
            self.signals.alt_stack = (ss_sp, ss_flags & (SS_DISABLE | SS_AUTODISARM), ss_size)

    def ensure_sigreturn_trampoline(self) -> int:
        """A page holding `rt_sigreturn` for handlers without SA_RESTORER (the vDSO's job)."""
        from qemuser.syscalls.abi.sigframe import SIGRETURN_TRAMPOLINE

        if not self.sigreturn_trampoline:
            page = self.mem.find_free(self.spec.page_size)
            assert page is not None
            self.mem.map(page, self.spec.page_size, 5, "[vdso]")
            self.mem.write_init(page, SIGRETURN_TRAMPOLINE[self.spec.name])
            self.sigreturn_trampoline = page
        return self.sigreturn_trampoline

    def die(self, sig: FatalSignal) -> None:
        self.exit.signal = sig.signo
        self.exit.core = sig.signo in DEFAULT_CORE


def _sender(record: bytes) -> tuple[int, int]:
    """(si_code, si_pid) of a host siginfo record."""
    return int.from_bytes(record[8:12], "little", signed=True), int.from_bytes(
        record[16:20], "little", signed=True
    )


class HostSignalBridge:
    """Routes host signals the guest handles into the guest's pending queue."""

    def __init__(self, proc: RuntimeProcess) -> None:
        self.proc = proc
        self._overrides: dict[int, bytes] = {}  # siginfo for signals we raise ourselves
        self._overrides_lock = threading.RLock()

    def send_to_self(self, signo: int, siginfo: bytes) -> None:
        """Raise `signo` in this process as a host signal whose guest siginfo is `siginfo`."""
        with self._overrides_lock:
            self._overrides[signo] = siginfo
        signal.pthread_kill(threading.main_thread().ident or 0, signo)

    def on_host_signal(self, signo: int, _frame: object) -> None:
        records = sigcapture.take(signo)  # every one since the last run, oldest first
        with self._overrides_lock:
            info = self._overrides.pop(signo, None)
        if info is not None:
            # raised by send_to_self: its own record (SI_TKILL from this process) is the
            # override's; any other came from elsewhere
            pid = os.getpid()
            records = [r for r in records if _sender(r) != (SI_TKILL, pid)]
            self.proc.signals.queue(PendingSignal(signo, info))
            for record in records:
                self.proc.signals.queue(PendingSignal(signo, record))
            return
        if signo == signal.SIGCHLD:
            from qemuser.user.sigchld import child_event  # the first SIGCHLD loads it

            # one a process sent (kill(), sigqueue(): si_code <= 0) is no child's change
            # of state: it goes as sent (kill12's children call their parent so)
            for record in records:
                if _sender(record)[0] <= 0:
                    self.proc.signals.queue(PendingSignal(signo, record))
            action = self.proc.signals.action(signo)
            info = child_event(no_stop_notices=bool(action.flags & SA_NOCLDSTOP))
            if info is not None:
                self.proc.signals.queue(PendingSignal(signo, info))
            return
        if records:
            for record in records:  # the kernel's own: sender, code, si_value, si_fd
                self.proc.signals.queue(PendingSignal(signo, record))
            return
        if sigcapture.captured(signo):
            return  # its record went with an earlier run (it came while that one ran)
        # not captured (Python does not tell who sent it): the kernel's own interval timers
        # send as SI_KERNEL, anything else we take for a kill() from another process
        code = SI_KERNEL if signo in self.proc.kernel_timer_signals else SI_USER
        self.proc.signals.queue(PendingSignal(signo, pack_kill_info(signo, code, 0, 0)))
