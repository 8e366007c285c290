"""siginfo_t and its union, struct sigevent (include/uapi/asm-generic/siginfo.h) and struct
signalfd_siginfo (include/uapi/linux/signalfd.h), for 64-bit aarch64 and riscv64.

siginfo_t is 128 bytes (SI_MAX_SIZE): si_signo, si_errno, si_code, then the union _sifields at
offset 16 (__ARCH_SI_PREAMBLE_SIZE: four ints, the fourth being the padding that aligns the
union's pointers). Which union member is meant follows from the signal and si_code, as in the
kernel's siginfo_layout() (kernel/signal.c): SI_USER and SI_TKILL carry _kill, SI_TIMER _timer,
SI_QUEUE and the other negative codes _rt, SIGCHLD's CLD_* codes _sigchld, the fault signals'
codes _sigfault, SIGPOLL's POLL_* codes _sigpoll. Each member is one layout here, a whole
128-byte siginfo_t view with the head fields, so packing one gives the bytes a handler sees.
"""

from __future__ import annotations

from typing import NamedTuple

from qemuser.syscalls.abi.layout import Layout

SIGINFO_SIZE = 128
SI_USER = 0
SI_KERNEL = 0x80
SI_QUEUE = -1
SI_TIMER = -2
SI_TKILL = -6

_HEAD = [("si_signo", "i"), ("si_errno", "i"), ("si_code", "i"), ("__pad", "4x")]


class SiginfoHead(NamedTuple):
    si_signo: int
    si_errno: int
    si_code: int


SIGINFO_HEAD = Layout("siginfo_t", SiginfoHead, _HEAD, size=SIGINFO_SIZE)


class SiginfoKill(NamedTuple):
    """_kill: kill(), tkill(), tgkill() and the kernel's own SI_USER/SI_KERNEL signals."""

    si_signo: int
    si_errno: int
    si_code: int
    si_pid: int
    si_uid: int


SIGINFO_KILL = Layout(
    "siginfo_t._kill", SiginfoKill, _HEAD + [("si_pid", "i"), ("si_uid", "I")], size=SIGINFO_SIZE
)


class SiginfoTimer(NamedTuple):
    """_timer: POSIX timers (timer_create); si_value is the sigevent's sigev_value."""

    si_signo: int
    si_errno: int
    si_code: int
    si_timerid: int
    si_overrun: int
    si_value: int


SIGINFO_TIMER = Layout(
    "siginfo_t._timer",
    SiginfoTimer,
    _HEAD + [("si_timerid", "i"), ("si_overrun", "i"), ("si_value", "Q")],
    size=SIGINFO_SIZE,
)


class SiginfoRt(NamedTuple):
    """_rt: sigqueue() and the other negative codes: the sender and a union sigval."""

    si_signo: int
    si_errno: int
    si_code: int
    si_pid: int
    si_uid: int
    si_value: int


SIGINFO_RT = Layout(
    "siginfo_t._rt",
    SiginfoRt,
    _HEAD + [("si_pid", "i"), ("si_uid", "I"), ("si_value", "Q")],
    size=SIGINFO_SIZE,
)


class SiginfoChld(NamedTuple):
    """_sigchld: a child's exit, stop or continue (si_utime/si_stime are clock ticks)."""

    si_signo: int
    si_errno: int
    si_code: int
    si_pid: int
    si_uid: int
    si_status: int
    si_utime: int
    si_stime: int


SIGINFO_CHLD = Layout(
    "siginfo_t._sigchld",
    SiginfoChld,
    _HEAD
    + [("si_pid", "i"), ("si_uid", "I"), ("si_status", "i"), ("si_utime", "q"), ("si_stime", "q")],
    size=SIGINFO_SIZE,
)


class SiginfoFault(NamedTuple):
    """_sigfault: SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP. The inner union after si_addr
    (si_addr_lsb, _addr_bnd, _addr_pkey, _perf) is zero for the faults an emulator raises."""

    si_signo: int
    si_errno: int
    si_code: int
    si_addr: int


SIGINFO_FAULT = Layout(
    "siginfo_t._sigfault", SiginfoFault, _HEAD + [("si_addr", "Q")], size=SIGINFO_SIZE
)


class SiginfoPoll(NamedTuple):
    """_sigpoll: SIGIO/SIGPOLL from a file descriptor (F_SETSIG, O_ASYNC)."""

    si_signo: int
    si_errno: int
    si_code: int
    si_band: int
    si_fd: int


SIGINFO_POLL = Layout(
    "siginfo_t._sigpoll",
    SiginfoPoll,
    _HEAD + [("si_band", "q"), ("si_fd", "i")],
    size=SIGINFO_SIZE,
)


class SiginfoSys(NamedTuple):
    """_sigsys: SIGSYS from seccomp or syscall user dispatch."""

    si_signo: int
    si_errno: int
    si_code: int
    si_call_addr: int
    si_syscall: int
    si_arch: int


SIGINFO_SYS = Layout(
    "siginfo_t._sigsys",
    SiginfoSys,
    _HEAD + [("si_call_addr", "Q"), ("si_syscall", "i"), ("si_arch", "I")],
    size=SIGINFO_SIZE,
)

SiginfoRecord = (
    SiginfoKill | SiginfoTimer | SiginfoRt | SiginfoChld | SiginfoFault | SiginfoPoll | SiginfoSys
)
_LAYOUTS: dict[type, Layout] = {  # type: ignore[type-arg]
    layout.record: layout
    for layout in (
        SIGINFO_KILL,
        SIGINFO_TIMER,
        SIGINFO_RT,
        SIGINFO_CHLD,
        SIGINFO_FAULT,
        SIGINFO_POLL,
        SIGINFO_SYS,
    )
}


def pack_siginfo(info: SiginfoRecord) -> bytes:
    """The 128 bytes of a siginfo_t holding `info` in its union member."""
    return _LAYOUTS[type(info)].pack(info)


class Sigevent(NamedTuple):
    """sigev_value, sigev_signo, sigev_notify, and the _tid of SIGEV_THREAD_ID."""

    sigev_value: int
    sigev_signo: int
    sigev_notify: int
    sigev_tid: int


SIGEV_MAX_SIZE = 64
SIGEVENT = Layout(
    "sigevent",
    Sigevent,
    [("sigev_value", "Q"), ("sigev_signo", "i"), ("sigev_notify", "i"), ("sigev_tid", "i")],
    size=SIGEV_MAX_SIZE,
)


class SignalfdSiginfo(NamedTuple):
    ssi_signo: int
    ssi_errno: int
    ssi_code: int
    ssi_pid: int
    ssi_uid: int
    ssi_fd: int
    ssi_tid: int
    ssi_band: int
    ssi_overrun: int
    ssi_trapno: int
    ssi_status: int
    ssi_int: int
    ssi_ptr: int
    ssi_utime: int
    ssi_stime: int
    ssi_addr: int
    ssi_addr_lsb: int
    ssi_syscall: int
    ssi_call_addr: int
    ssi_arch: int


SIGNALFD_SIGINFO = Layout(
    "signalfd_siginfo",
    SignalfdSiginfo,
    [
        ("ssi_signo", "I"),
        ("ssi_errno", "i"),
        ("ssi_code", "i"),
        ("ssi_pid", "I"),
        ("ssi_uid", "I"),
        ("ssi_fd", "i"),
        ("ssi_tid", "I"),
        ("ssi_band", "I"),
        ("ssi_overrun", "I"),
        ("ssi_trapno", "I"),
        ("ssi_status", "i"),
        ("ssi_int", "i"),
        ("ssi_ptr", "Q"),
        ("ssi_utime", "Q"),
        ("ssi_stime", "Q"),
        ("ssi_addr", "Q"),
        ("ssi_addr_lsb", "H"),
        ("__pad2", "2x"),
        ("ssi_syscall", "i"),
        ("ssi_call_addr", "Q"),
        ("ssi_arch", "I"),
        ("__pad", "28x"),
    ],
)
