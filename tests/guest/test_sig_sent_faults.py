"""Signals that are also faults, sent by another process (tests/fixtures/sig_sent_faults.c;
LTP's pause01 and kill12): SIGILL, SIGSEGV, SIGBUS and SIGFPE from kill() reach the guest's
handler or are ignored as it asks, and the default still kills; a SIGCHLD a child sends with
kill() reaches the parent's handler as SI_USER. qemuser kept the four for its own faults (the
emulator died of them) and dropped a SIGCHLD no child's change of state explained. The
emulator's own faults still kill it (qemuser/host/sigcapture.py's guarded entry)."""

from __future__ import annotations

import pytest

from tests.conftest import all_builds, run_like_native


@pytest.mark.parametrize(("arch", "flavour"), all_builds("sig_sent_faults"))
def test_sent_fault_signals_reach_the_guest(arch: str, flavour: str) -> None:
    result = run_like_native(arch, "sig_sent_faults", flavour, status=0, timeout=90)
    assert result.stdout == (
        b"ILL handled: exited 0\nILL ignored: exited 3\n"
        b"SEGV handled: exited 0\nSEGV ignored: exited 3\n"
        b"BUS handled: exited 0\nBUS ignored: exited 3\n"
        b"FPE handled: exited 0\nFPE ignored: exited 3\n"
        b"SEGV default: killed by SEGV\n"
        b"SIGCHLD sent by the child: handler saw SI_USER 1\n"
    )
