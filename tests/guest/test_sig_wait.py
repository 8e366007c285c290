"""sigwaitinfo/sigtimedwait (tests/fixtures/sig_wait.c; LTP's sigwaitinfo01, sigtimedwait01,
rt_sigtimedwait01): a handled signal outside the set interrupts the wait with EINTR and its
handler runs; an ignored one does not wake it, but one that is ignored and blocked is queued
for it to take, and real-time signals come lowest number first (rt_sigtimedwait01's special
cases). qemuser waited for the set only, so a wait on
an empty set never ended."""

from __future__ import annotations

import pytest

from tests.conftest import all_builds, run_like_native


@pytest.mark.parametrize(("arch", "flavour"), all_builds("sig_wait"))
def test_a_signal_outside_the_set_interrupts(arch: str, flavour: str) -> None:
    result = run_like_native(arch, "sig_wait", flavour, status=0, timeout=60)
    assert result.stdout == (
        b"empty set: -1 EINTR, handler ran for 10\n"
        b"ignored signal: -1 EAGAIN\n"
        b"after SIGCHLD: -1 EAGAIN\n"
        b"set of one: 14 (SIGALRM 14), si_code 0, SIGUSR1 still pending 1\n"
        b"then: 10 (SIGUSR1 10), handler ran for 0\n"
        b"ignored and blocked: 12 (SIGUSR2 12), from the child 1\n"
        b"real-time order: SIGRTMIN+1, then SIGRTMIN+2\n"
    )
