"""Signal-handling structs of include/uapi/asm-generic/signal.h and
include/uapi/asm-generic/signal-defs.h, as aarch64 and riscv64 use them (64-bit).

- sigset_t: the kernel's, one unsigned long: 64 signals, 8 bytes (glibc's 1024-bit sigset_t is
  only a userspace type: rt_sigprocmask and friends take sigsetsize 8);
- struct sigaction: sa_handler, sa_flags, then sa_restorer only where the arch defines
  SA_RESTORER (aarch64 does, in arch/arm64/include/uapi/asm/signal.h, for AArch32; riscv64 does
  not: its struct is 24 bytes), then sa_mask (the kernel's struct, not glibc's, which puts
  sa_mask second; glibc's rt_sigaction wrapper passes the kernel's);
- stack_t: ss_sp, ss_flags, ss_size (sigaltstack, and ucontext's uc_stack).
"""

from __future__ import annotations

from typing import NamedTuple

from qemuser.syscalls.abi.layout import Layout

SIGSET_SIZE = 8


class Sigset(NamedTuple):
    sig: int  # bit n-1 is signal n


SIGSET = Layout("sigset_t", Sigset, [("sig", "Q")])


class Sigaction(NamedTuple):
    sa_handler: int
    sa_flags: int
    sa_restorer: int
    sa_mask: int


class SigactionNoRestorer(NamedTuple):
    sa_handler: int
    sa_flags: int
    sa_mask: int


SIGACTION: dict[str, Layout[Sigaction] | Layout[SigactionNoRestorer]] = {
    "aarch64": Layout(
        "sigaction",
        Sigaction,
        [("sa_handler", "Q"), ("sa_flags", "Q"), ("sa_restorer", "Q"), ("sa_mask", "Q")],
    ),
    "riscv64": Layout(
        "sigaction", SigactionNoRestorer, [("sa_handler", "Q"), ("sa_flags", "Q"), ("sa_mask", "Q")]
    ),
}


class StackT(NamedTuple):
    ss_sp: int
    ss_flags: int
    ss_size: int


STACK_T = Layout(
    "stack_t", StackT, [("ss_sp", "Q"), ("ss_flags", "i"), ("__pad", "4x"), ("ss_size", "Q")]
)
