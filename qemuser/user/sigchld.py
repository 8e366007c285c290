"""The siginfo of a SIGCHLD from the host: which child changed state, and how.

Every child of a guest is a host process (a guest child is another qemuser, a native program
is itself), so the host kernel sends SIGCHLD with the very siginfo Linux gives the guest; but
Python's signal handlers are not told the siginfo. The event is found again by asking the
kernel which child is waitable, with WNOWAIT, so that the guest's own wait still reaps it
(kernel/exit.c reports the same si_code, si_pid, si_uid and si_status for it as the signal
carried). Differences that remain: when several children changed state before the handler ran,
the kernel's signal named the first of them and this one the first child the kernel lists;
and a guest child that dies of a core-dumping signal is CLD_KILLED, not CLD_DUMPED, since the
emulator never dumps its own core (as with qemu-user).
"""

from __future__ import annotations

import os
import signal

from qemuser.syscalls.abi.siginfo import SiginfoChld, pack_siginfo

CLD_STOPPED = 5
CLD_CONTINUED = 6
_WAITABLE = os.WEXITED | os.WSTOPPED | os.WCONTINUED | os.WNOHANG | os.WNOWAIT


def _clock_ticks(pid: int) -> tuple[int, int]:
    """si_utime, si_stime: the child's user and system time in clock ticks (what
    /proc/PID/stat says, zombies included); zeros when it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return 0, 0
    # after the command: state is field 3, utime 14, stime 15
    return int(fields[11]), int(fields[12])


def child_event(*, no_stop_notices: bool) -> bytes | None:
    """The SIGCHLD siginfo of the child whose change of state the signal announced; None when
    the guest gets no SIGCHLD: a stop or continue under SA_NOCLDSTOP (the host's handler,
    installed by Python, cannot carry the flag), or no child left waitable (the guest's wait
    consumed the event first; a SIGCHLD another process sent with kill() is lost too)."""
    try:
        result = os.waitid(os.P_ALL, 0, _WAITABLE)
    except ChildProcessError:
        return None
    if result is None:
        return None
    if no_stop_notices and result.si_code in (CLD_STOPPED, CLD_CONTINUED):
        return None
    utime, stime = _clock_ticks(result.si_pid)
    return pack_siginfo(
        SiginfoChld(
            signal.SIGCHLD,
            0,
            result.si_code,
            result.si_pid,
            result.si_uid,
            result.si_status,
            utime,
            stime,
        )
    )
