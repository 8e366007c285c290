"""Host signals the emulator keeps for itself, and the mask of the host threads it starts."""

from __future__ import annotations

import signal

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

# The host signal that ends the blocking host call of one guest thread's worker
# (qemuser.user.threads), sent with pthread_kill to that worker only. Reserved: the guest's own
# SIGRTMAX still works between its threads (kill/tgkill queue it here), but one sent from
# outside is not seen.
INTERRUPT_SIGNAL = signal.SIGRTMAX


def keep_signals_for_the_main_thread() -> None:
    """Called first in every host thread we start: the kernel then delivers process-directed
    signals to the main thread, the one that runs the guest (and, with a single guest thread,
    its blocking calls, which they then interrupt as on Linux). A guest thread's worker then
    unblocks INTERRUPT_SIGNAL alone, by which the scheduler ends its calls
    (qemuser.user.threads)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
