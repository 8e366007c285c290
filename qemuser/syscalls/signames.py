"""Signal names and si_code names as Linux tools print them (strace, the fatal-signal line)."""

from __future__ import annotations

import signal as host_signal

# si_code values (include/uapi/asm-generic/siginfo.h): the generic ones, then per signal
SI_CODE_NAMES = {
    0: "SI_USER",
    0x80: "SI_KERNEL",
    -1: "SI_QUEUE",
    -2: "SI_TIMER",
    -3: "SI_MESGQ",
    -4: "SI_ASYNCIO",
    -5: "SI_SIGIO",
    -6: "SI_TKILL",
}
FAULT_CODE_NAMES = {
    4: {
        1: "ILL_ILLOPC",
        2: "ILL_ILLOPN",
        3: "ILL_ILLADR",
        4: "ILL_ILLTRP",
        5: "ILL_PRVOPC",
        6: "ILL_PRVREG",
        7: "ILL_COPROC",
        8: "ILL_BADSTK",
    },
    5: {1: "TRAP_BRKPT", 2: "TRAP_TRACE", 3: "TRAP_BRANCH", 4: "TRAP_HWBKPT"},
    7: {1: "BUS_ADRALN", 2: "BUS_ADRERR", 3: "BUS_OBJERR"},
    8: {
        1: "FPE_INTDIV",
        2: "FPE_INTOVF",
        3: "FPE_FLTDIV",
        4: "FPE_FLTOVF",
        5: "FPE_FLTUND",
        6: "FPE_FLTRES",
        7: "FPE_FLTINV",
        8: "FPE_FLTSUB",
    },
    11: {1: "SEGV_MAPERR", 2: "SEGV_ACCERR", 3: "SEGV_BNDERR", 4: "SEGV_PKUERR"},
}
SIGRTMIN = 32  # the kernel's (glibc keeps 32 and 33 for itself)


def signal_name(signo: int) -> str:
    """SIGSEGV, SIGRT_2...: asm-generic numbers 1-31 are the x86-64 host's too."""
    if SIGRTMIN <= signo <= 64:
        return f"SIGRT_{signo - SIGRTMIN}"
    try:
        return host_signal.Signals(signo).name
    except ValueError:
        return str(signo)
